/**
 * virtio-blk served by a dedicated I/O thread (HANGAR_VIRTIO_BLK_IOTHREAD=1):
 * the QUEUE_NOTIFY write becomes an ioeventfd (KVM completes it in the kernel,
 * the vCPU goes straight back to the guest) and a thread of its own
 * (blk-io-worker.ts) wakes on it and serves the queue with the fast path's
 * client. The alternative to serving on the vCPU thread (blk-fast.ts); which
 * one is faster is measured in docs/vmm.md.
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import type { Vm } from '../../kvm/kvm.js';
import { check } from '../../kvm/errors.js';
import { EFD_CLOEXEC, libc } from '../../kvm/libc.js';
import { signalEventFd } from '../../kvm/eventfd.js';
import type { Logger } from '../../common/log.js';
import type { BlkFastShare } from './blk-fast.js';
import type { BlkIoMessage, BlkIoWorkerData } from './blk-io-worker.js';
import { VirtqueueError } from './queue.js';

export function blkIoThreadWanted(): boolean {
  return process.env.HANGAR_VIRTIO_BLK_IOTHREAD === '1';
}

export interface BlkIoThread {
  close(): void;
}

/** Starts the I/O thread for one blk device; null where that cannot be done (then the vCPU threads serve it). */
export function startBlkIoThread(
  vm: Vm, share: BlkFastShare, ram: { hostAddr: number; size: number }, log: Logger,
  on: { used(): void; forward(): void; fail(err: VirtqueueError): void },
): BlkIoThread | null {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.ts')) return null; // the worker runs from compiled code only
  let fd = -1;
  try {
    fd = check('eventfd', libc.eventfd(0, EFD_CLOEXEC)); // blocking: the thread sleeps in read()
    vm.ioeventfd(fd, share.notifyAddr, 4, { datamatch: 0n });
  } catch (e) {
    if (fd >= 0) libc.close(fd);
    log.warn({ err: String(e) }, 'virtio-blk: no ioeventfd for the I/O thread; the vCPU threads serve the queue');
    return null;
  }
  const stop = new Int32Array(new SharedArrayBuffer(4));
  const data: BlkIoWorkerData = { share, ram, eventFd: fd, stop: stop.buffer as SharedArrayBuffer };
  const worker = new Worker(new URL('./blk-io-worker.js', import.meta.url), { workerData: data });
  let closed = false;
  const release = (): void => {
    try { vm.ioeventfd(fd, share.notifyAddr, 4, { datamatch: 0n, deassign: true }); } catch { /* VM going away */ }
    libc.close(fd);
  };
  worker.on('message', (m: BlkIoMessage) => {
    if (m.t === 'used') on.used();
    else if (m.t === 'forward') on.forward();
    else if (m.t === 'fail') on.fail(new VirtqueueError(m.message, m.details));
    else if (m.t === 'stopped' && m.error) log.warn({ err: m.error }, 'virtio-blk: I/O thread ended');
  });
  worker.once('error', (e) => log.error({ err: String(e) }, 'virtio-blk: I/O thread failed'));
  worker.once('exit', () => { if (closed) release(); });
  return {
    close() {
      if (closed) return;
      closed = true;
      Atomics.store(stop, 0, 1);
      signalEventFd(fd); // wakes the blocking read; the thread sees the stop word and ends
      worker.unref();
    },
  };
}
