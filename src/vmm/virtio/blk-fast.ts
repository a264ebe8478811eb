/**
 * virtio-blk's fast path: the request queue served on the vCPU thread whose
 * guest wrote QUEUE_NOTIFY, instead of a round trip to the device thread
 * (a message, an event-loop turn and a wake-up per notify). The disk is a
 * plain file, so the vCPU thread reads and writes it itself with positioned
 * I/O, straight into guest memory, exactly as the device thread would.
 *
 * What is shared, and who may touch it:
 * - the queue's layout and ring position (queue.ts keeps them in a
 *   SharedArrayBuffer, VQS), so both threads see one position and a snapshot
 *   taken on the device thread is right;
 * - a control block: a lock word, the ON flag and counters. Whoever touches
 *   the queue state holds the lock: the vCPU thread while it serves a notify,
 *   the device thread around every register write, reset, failure, restore and
 *   close of the device (the transport takes it, VirtioMmioDevice.locked);
 * - the request counters (VirtioBlock keeps them in a SharedArrayBuffer).
 *
 * ON is set while the driver has the device running (activate) and cleared by
 * reset, failure and close, all under the lock, so a vCPU thread never serves
 * a queue the device thread is reconfiguring or has closed. When ON is clear
 * the vCPU thread forwards the notify like any other MMIO write.
 *
 * Interrupts and failures are the device thread's: after a batch the vCPU
 * thread decides (with the driver's suppression rules) whether the driver
 * wants an interrupt and then posts one message; a broken ring clears ON and
 * posts the error, and the device thread marks the device broken. The vCPU
 * never waits for either.
 */
import { HangarError } from '../../common/errors.js';
import type { GuestMemory } from '../devices/device.js';
import { VirtioBlock, BLK_QUEUE_SIZE } from './blk.js';
import { Virtqueue, VirtqueueError } from './queue.js';

export const BF_LOCK = 0;
export const BF_ON = 1;
/** Notifies served on a vCPU thread, and batches after which the driver wanted no interrupt. */
export const BF_NOTIFIES = 2;
export const BF_SUPPRESSED = 3;
const BF_WORDS = 8;

/** What a vCPU thread needs to serve one blk device's queue (structured-clone safe). */
export interface BlkFastShare {
  /** Guest-physical address of the device's QUEUE_NOTIFY register. */
  notifyAddr: number;
  control: SharedArrayBuffer;
  queue: SharedArrayBuffer;
  counters: SharedArrayBuffer;
  /** The image's open fd (the process's, valid on every thread; the device thread owns and closes it). */
  fd: number;
  id: string;
  path: string;
  readOnly: boolean;
  serial: string;
}

/** Takes the lock word; waits (briefly, re-checking) while the other thread holds it. */
export function lockWord(a: Int32Array, i: number): void {
  while (Atomics.compareExchange(a, i, 0, 1) !== 0) Atomics.wait(a, i, 1, 1);
}

export function unlockWord(a: Int32Array, i: number): void {
  Atomics.store(a, i, 0);
  Atomics.notify(a, i, 1);
}

/** The device-thread side: owns the control block; its lock is reentrant on this thread. */
export class BlkFastPath {
  readonly control = new Int32Array(new SharedArrayBuffer(BF_WORDS * 4));
  private depth = 0;
  private queue?: Int32Array;

  acquire(): void {
    if (this.depth++ === 0) lockWord(this.control, BF_LOCK);
  }

  release(): void {
    if (this.depth === 0) throw new HangarError('INTERNAL', 'blk fast path: release without acquire');
    if (--this.depth === 0) unlockWord(this.control, BF_LOCK);
  }

  /** The transport's queue 0 state (shared with the vCPU threads). */
  bindQueue(state: Int32Array): void {
    this.queue = state;
  }

  /** Lets vCPU threads serve the queue (true) or makes them forward notifies (false). Call under the lock. */
  setOn(on: boolean): void {
    Atomics.store(this.control, BF_ON, on ? 1 : 0);
  }

  get on(): boolean {
    return Atomics.load(this.control, BF_ON) === 1;
  }

  notifications(): number {
    return Atomics.load(this.control, BF_NOTIFIES);
  }

  suppressedInterrupts(): number {
    return Atomics.load(this.control, BF_SUPPRESSED);
  }

  share(notifyAddr: number, blk: { fd: number; id: string; path: string; readOnly: boolean; serial: string; counters: SharedArrayBuffer }): BlkFastShare {
    if (!this.queue) throw new HangarError('INTERNAL', 'blk fast path: no queue bound');
    return { notifyAddr, control: this.control.buffer as SharedArrayBuffer, queue: this.queue.buffer as SharedArrayBuffer, ...blk };
  }
}

/** What one fast notify did, for the vCPU thread to pass on to the device thread. */
export type FastNotifyResult =
  | { kind: 'forward' }
  | { kind: 'served'; interrupt: boolean }
  | { kind: 'failed'; message: string; details: Record<string, unknown> };

/** The vCPU-thread side of one blk device. */
export class BlkFastPathClient {
  readonly notifyAddr: number;
  private readonly ctl: Int32Array;
  private readonly queue: Virtqueue;
  private readonly blk: VirtioBlock;

  constructor(share: BlkFastShare, memory: GuestMemory) {
    this.notifyAddr = share.notifyAddr;
    this.ctl = new Int32Array(share.control);
    this.queue = new Virtqueue(0, BLK_QUEUE_SIZE, memory, new Int32Array(share.queue));
    this.blk = new VirtioBlock({ id: share.id, path: share.path, readOnly: share.readOnly, serial: share.serial }, { fd: share.fd, counters: share.counters });
  }

  /**
   * A guest wrote `value` to this device's QUEUE_NOTIFY. Serves every request
   * the driver has made available on queue 0, unless the fast path is off (or
   * the value names another queue): then the write goes to the device thread.
   */
  notify(value: number): FastNotifyResult {
    if (value !== 0) return { kind: 'forward' };
    const ctl = this.ctl;
    lockWord(ctl, BF_LOCK);
    try {
      if (Atomics.load(ctl, BF_ON) !== 1) return { kind: 'forward' };
      Atomics.add(ctl, BF_NOTIFIES, 1);
      const served = this.blk.serveQueue(this.queue);
      if (served === 0) return { kind: 'served', interrupt: false };
      const interrupt = this.queue.needsInterrupt();
      if (!interrupt) Atomics.add(ctl, BF_SUPPRESSED, 1);
      return { kind: 'served', interrupt };
    } catch (e) {
      // A hostile ring: stop serving here at once; the device thread marks the device broken.
      Atomics.store(ctl, BF_ON, 0);
      const details = e instanceof VirtqueueError ? { ...(e.details ?? {}) } : {};
      return { kind: 'failed', message: e instanceof Error ? e.message : String(e), details: e instanceof VirtqueueError ? details : { internal: true } };
    } finally {
      unlockWord(ctl, BF_LOCK);
    }
  }
}
