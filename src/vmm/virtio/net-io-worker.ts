/**
 * A NIC's I/O thread (net-io-thread.ts starts it): the one thread that moves
 * the NIC's frames while the device runs. It sleeps in poll(2) on
 *   - the transmit kick: an ioeventfd on QUEUE_NOTIFY with value 1, so the
 *     guest's kick never leaves the kernel (the vCPU runs on at once);
 *   - the receive kick (value 0: the driver posted buffers);
 *   - the TAP, while the driver has receive buffers;
 *   - a control eventfd: the device turned on or off, the machine paused or
 *     resumed, or stop;
 * and on any of them sends what the driver made available, receives what
 * waits on the TAP and raises one interrupt when the driver wants one —
 * in one wake-up, as a host's acknowledgement of a frame we wrote is usually
 * waiting on the TAP by the time the write returns. The queues are the
 * transport's, under the fast path's lock (net-fast.ts). While the device is
 * off, kicks go to the device thread ('forward'); while the machine is held
 * (paused, snapshots) nothing is touched.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { kvmIrqLine } from '../../kvm/kvm.js';
import { errno, errnoName, libc, POLLIN } from '../../kvm/libc.js';
import { GuestRam } from '../memory.js';
import { VirtioInterruptState, type VirtioIrqShare } from './interrupt-state.js';
import { INT_VRING } from './mmio.js';
import { BF_HOLD, BF_IO_PASSES, BF_IO_TX_KICKS, NetFastPathClient, type NetFastShare } from './net-fast.js';
import { BF_ON } from './queue-fast-path.js';
import { RXQ, TXQ } from './net-transmit.js';

export interface NetIoWorkerData {
  share: NetFastShare;
  irq: VirtioIrqShare;
  ram: { hostAddr: number; size: number };
  /** Non-blocking eventfds: transmit kick, receive kick, control. */
  txKickFd: number;
  rxKickFd: number;
  controlFd: number;
  /** Int32 word 0: set to 1 (then the control eventfd signalled) to make the thread end. */
  stop: SharedArrayBuffer;
}

export type NetIoMessage =
  | { t: 'forward'; queue: number }
  | { t: 'fail'; message: string; details: Record<string, unknown> }
  | { t: 'stopped' };

const data = workerData as NetIoWorkerData;
const port = parentPort!;
const stop = new Int32Array(data.stop);
const client = new NetFastPathClient(data.share, GuestRam.attach(data.ram.hostAddr, data.ram.size));
const ctl = new Int32Array(data.share.control);
const irq = (() => {
  const { vmFd, gsi } = data.irq;
  const line = { set: (level: boolean) => kvmIrqLine(vmFd, gsi, level), pulse: () => { kvmIrqLine(vmFd, gsi, true); kvmIrqLine(vmFd, gsi, false); } };
  return new VirtioInterruptState(line, data.irq.edge, data.irq.words);
})();
const raise = (): void => irq.raise(INT_VRING);
const post = (m: NetIoMessage): void => port.postMessage(m);

/** struct pollfd × 4: control, transmit kick, receive kick, TAP (left out while it would only spin us). */
const fds = Buffer.alloc(4 * 8);
const FD_ORDER = [data.controlFd, data.txKickFd, data.rxKickFd, data.share.fd];
for (const [i, fd] of FD_ORDER.entries()) {
  fds.writeInt32LE(fd, i * 8);
  fds.writeInt16LE(POLLIN, i * 8 + 4);
}
const counter = Buffer.alloc(8);
const EINTR = 4;
/** Reads an eventfd's counter; true when it had been signalled. */
const drained = (fd: number): boolean => libc.read(fd, counter, 8) === 8;

/** The driver has receive buffers (as far as the last pass knows): the TAP is worth watching. */
let rxHasBuffers = true;
for (;;) {
  // The TAP only while the device runs, the machine is not held and buffers wait for frames.
  const watchTap = rxHasBuffers && Atomics.load(ctl, BF_ON) === 1 && Atomics.load(ctl, BF_HOLD) === 0;
  for (let i = 0; i < 4; i++) fds.writeInt16LE(0, i * 8 + 6);
  const n = libc.poll(fds, watchTap ? 4 : 3, -1);
  if (Atomics.load(stop, 0) === 1) break;
  if (n < 0) {
    if (errno() === EINTR) continue;
    // Would fail again at once: say so and stop, rather than spin.
    post({ t: 'fail', message: `virtio-net I/O thread: poll failed: ${errnoName(errno())}`, details: { reason: 'poll' } });
    break;
  }
  drained(data.controlFd);
  const txKick = drained(data.txKickFd);
  const rxKick = drained(data.rxKickFd);
  if (rxKick) rxHasBuffers = true;
  Atomics.add(ctl, BF_IO_PASSES, 1);
  if (txKick) Atomics.add(ctl, BF_IO_TX_KICKS, 1);
  const r = client.serve(raise);
  if (r.kind === 'forward') {
    // The device is off (or the machine held): kicks are the device thread's to judge.
    if (Atomics.load(ctl, BF_HOLD) === 0) {
      if (txKick) post({ t: 'forward', queue: TXQ });
      if (rxKick) post({ t: 'forward', queue: RXQ });
    }
    continue;
  }
  if (r.kind === 'failed') { post({ t: 'fail', message: r.message, details: r.details }); continue; }
  rxHasBuffers = !r.outOfBuffers;
}
post({ t: 'stopped' });
port.close();
