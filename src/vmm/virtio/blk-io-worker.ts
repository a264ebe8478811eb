/**
 * A virtio-blk I/O thread (blk-iothread.ts starts it): blocks on the eventfd
 * KVM signals when the guest writes 0 to the device's QUEUE_NOTIFY (an
 * ioeventfd, so the vCPU does not even leave the kernel), then serves the
 * queue with blk-fast.ts's client, under the same lock as every other path.
 * Messages to the device thread: 'used' (the driver wants an interrupt),
 * 'fail' (a broken ring), 'forward' (the fast path is off: the device thread
 * handles the notify itself), 'stopped'.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { libc } from '../../kvm/libc.js';
import { GuestRam } from '../memory.js';
import { BlkFastPathClient, type BlkFastShare } from './blk-fast.js';

export interface BlkIoWorkerData {
  share: BlkFastShare;
  ram: { hostAddr: number; size: number };
  /** Blocking eventfd bound to QUEUE_NOTIFY with datamatch 0. */
  eventFd: number;
  /** Int32 word 0: set to 1 (then the eventfd signalled) to make the thread end. */
  stop: SharedArrayBuffer;
}

export type BlkIoMessage =
  | { t: 'used' }
  | { t: 'forward' }
  | { t: 'fail'; message: string; details: Record<string, unknown> }
  | { t: 'stopped'; error?: string };

const data = workerData as BlkIoWorkerData;
const port = parentPort!;
const stop = new Int32Array(data.stop);
const client = new BlkFastPathClient(data.share, GuestRam.attach(data.ram.hostAddr, data.ram.size));
const counter = Buffer.alloc(8);
const post = (m: BlkIoMessage): void => port.postMessage(m);

let error: string | undefined;
for (;;) {
  const n = libc.read(data.eventFd, counter, 8);
  if (Atomics.load(stop, 0) === 1) break;
  if (n !== 8) { error = `eventfd read returned ${n}`; break; }
  const r = client.notify(0);
  if (r.kind === 'served') { if (r.interrupt) post({ t: 'used' }); } else if (r.kind === 'forward') post({ t: 'forward' }); else post({ t: 'fail', message: r.message, details: r.details });
}
post(error ? { t: 'stopped', error } : { t: 'stopped' });
port.close();
