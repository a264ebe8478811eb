/**
 * virtio-net served by an I/O thread of its own (net-io-worker.ts), like a
 * QEMU iothread: the guest's kicks are ioeventfds (KVM completes the
 * QUEUE_NOTIFY write in the kernel; the vCPU goes straight back to the
 * guest), and the thread that wakes on them transmits, receives from the TAP
 * and raises the interrupt, all in one wake-up. Without it, the vCPU thread
 * transmits on its notify exit and the device thread receives when the TAP
 * wakes it: two threads, each to be scheduled, per frame and per answer.
 * HANGAR_VIRTIO_NET_IOTHREAD=0 keeps that older arrangement (A/B, and hosts
 * without ioeventfds); docs/vmm.md has the measurements.
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import type { Vm } from '../../kvm/kvm.js';
import { createEventFd, signalEventFd } from '../../kvm/eventfd.js';
import { libc } from '../../kvm/libc.js';
import type { Logger } from '../../common/log.js';
import type { VirtioIrqShare } from './interrupt-state.js';
import { BF_HOLD, type NetFastShare } from './net-fast.js';
import { BF_LOCK } from './queue-fast-path.js';
import { lockWord, unlockWord } from './shared-lock.js';
import type { NetIoMessage, NetIoWorkerData } from './net-io-worker.js';
import { RXQ, TXQ } from './net-transmit.js';
import { VirtqueueError } from './queue.js';

export function netIoThreadWanted(): boolean {
  return process.env.HANGAR_VIRTIO_NET_IOTHREAD !== '0';
}

export interface NetIoThread {
  /** Tells the thread to look again: the device went on or off. */
  wake(): void;
  /** Holds the queues (a paused machine: nothing moves, snapshots see still rings) or lets go. */
  hold(held: boolean): void;
  close(): void;
}

/** Starts the I/O thread for one NIC; null where that cannot be done (then the vCPU and device threads serve it). */
export function startNetIoThread(
  vm: Vm, share: NetFastShare, irq: VirtioIrqShare, ram: { hostAddr: number; size: number }, log: Logger,
  on: { forward(queue: number): void; fail(err: VirtqueueError): void },
): NetIoThread | null {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.ts')) return null; // the worker runs from compiled code only
  const fds: number[] = [];
  const assigned: Array<[number, number]> = [];
  const release = (): void => {
    for (const [fd, q] of assigned.splice(0)) {
      try { vm.ioeventfd(fd, share.notifyAddr, 4, { datamatch: BigInt(q), deassign: true }); } catch { /* VM going away */ }
    }
    for (const fd of fds.splice(0)) libc.close(fd);
  };
  let txKickFd: number, rxKickFd: number, controlFd: number;
  try {
    txKickFd = createEventFd(); fds.push(txKickFd);
    rxKickFd = createEventFd(); fds.push(rxKickFd);
    controlFd = createEventFd(); fds.push(controlFd);
    vm.ioeventfd(txKickFd, share.notifyAddr, 4, { datamatch: BigInt(TXQ) }); assigned.push([txKickFd, TXQ]);
    vm.ioeventfd(rxKickFd, share.notifyAddr, 4, { datamatch: BigInt(RXQ) }); assigned.push([rxKickFd, RXQ]);
  } catch (e) {
    release();
    log.warn({ err: String(e), nic: share.id }, 'virtio-net: no ioeventfds for the I/O thread; the vCPU and device threads serve the NIC');
    return null;
  }
  const stop = new Int32Array(new SharedArrayBuffer(4));
  const data: NetIoWorkerData = { share, irq, ram, txKickFd, rxKickFd, controlFd, stop: stop.buffer as SharedArrayBuffer };
  const worker = new Worker(new URL('./net-io-worker.js', import.meta.url), { workerData: data });
  let closed = false;
  let exited = false;
  const ctl = new Int32Array(share.control);
  worker.on('message', (m: NetIoMessage) => {
    if (m.t === 'forward') on.forward(m.queue);
    else if (m.t === 'fail') on.fail(new VirtqueueError(m.message, m.details));
  });
  worker.once('error', (e) => log.error({ err: String(e), nic: share.id }, 'virtio-net: I/O thread failed'));
  // The fds go once the thread has ended: it may be in poll() on them until then.
  worker.once('exit', () => { exited = true; if (closed) release(); });
  return {
    wake() {
      if (!closed) signalEventFd(controlFd);
    },
    hold(held) {
      // Under the lock: once set, the thread is between passes and starts none.
      lockWord(ctl, BF_LOCK);
      Atomics.store(ctl, BF_HOLD, held ? 1 : 0);
      unlockWord(ctl, BF_LOCK);
      if (!closed) signalEventFd(controlFd);
    },
    close() {
      if (closed) return;
      closed = true;
      if (exited) { release(); return; }
      Atomics.store(stop, 0, 1);
      signalEventFd(controlFd);
      worker.unref();
    },
  };
}
