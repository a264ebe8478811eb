/**
 * The device-thread side of a virtqueue that vCPU threads may serve
 * themselves (blk-fast.ts, net-fast.ts): a control block in shared memory
 * with a lock word, the ON flag and counters, plus the queue's shared state.
 *
 * Whoever touches the queue state holds the lock: a vCPU thread while it
 * serves a notify, the device thread around every register write, reset,
 * failure, restore and close of the device (the transport takes it through
 * VirtioDevice.queueLock; reentrant on the device thread). ON is set while the
 * driver has the device running and cleared under the lock by reset, failure
 * and close, so a vCPU thread never serves a queue the device thread is
 * reconfiguring or has closed; while it is clear, vCPU threads forward the
 * notify like any other MMIO write.
 */
import { HangarError } from '../../common/errors.js';
import type { Virtqueue } from './queue.js';
import { lockWord, unlockWord } from './shared-lock.js';

export const BF_LOCK = 0;
export const BF_ON = 1;
/** Notifies served on a vCPU thread, and batches after which the driver wanted no interrupt. */
export const BF_NOTIFIES = 2;
export const BF_SUPPRESSED = 3;
const BF_WORDS = 8;

/** What one fast notify did, for the vCPU thread to act on. */
export type FastNotifyResult =
  | { kind: 'forward' }
  | { kind: 'served'; interrupt: boolean }
  | { kind: 'failed'; message: string; details: Record<string, unknown> };

/** The part of a fast path's share every device has (structured-clone safe). */
export interface QueueFastShare {
  /** Guest-physical address of the device's QUEUE_NOTIFY register. */
  notifyAddr: number;
  control: SharedArrayBuffer;
  queue: SharedArrayBuffer;
}

export class QueueFastPath {
  readonly control = new Int32Array(new SharedArrayBuffer(BF_WORDS * 4));
  private depth = 0;
  private queue?: Int32Array;

  acquire(): void {
    if (this.depth++ === 0) lockWord(this.control, BF_LOCK);
  }

  release(): void {
    if (this.depth === 0) throw new HangarError('INTERNAL', 'queue fast path: release without acquire');
    if (--this.depth === 0) unlockWord(this.control, BF_LOCK);
  }

  /** The shared state of the transport's queue that vCPU threads serve. */
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

  protected controlShare(notifyAddr: number): QueueFastShare {
    if (!this.queue) throw new HangarError('INTERNAL', 'queue fast path: no queue bound');
    return { notifyAddr, control: this.control.buffer as SharedArrayBuffer, queue: this.queue.buffer as SharedArrayBuffer };
  }
}

/**
 * After a batch a vCPU thread served, under the lock: does the driver want an interrupt?
 * `raise` (the transport's shared interrupt state) raises it right here, still under the
 * lock, so it cannot land after a reset the device thread does next; without it the result
 * asks the caller to have the device thread raise it.
 */
export function interruptIfWanted(queue: Virtqueue, ctl: Int32Array, raise: (() => void) | undefined): FastNotifyResult {
  if (!queue.needsInterrupt()) {
    Atomics.add(ctl, BF_SUPPRESSED, 1);
    return { kind: 'served', interrupt: false };
  }
  if (!raise) return { kind: 'served', interrupt: true };
  raise();
  return { kind: 'served', interrupt: false };
}
