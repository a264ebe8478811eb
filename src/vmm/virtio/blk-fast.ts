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
 * After a batch the vCPU thread decides (with the driver's suppression
 * rules) whether the driver wants an interrupt, and raises it itself through
 * the transport's shared interrupt state (interrupt-state.ts; where that is
 * off, HANGAR_VIRTIO_IRQ_FAST=0, it hands the interrupt to the device thread
 * and waits). Failures are the device thread's: a broken ring clears ON and
 * posts the error, and the device thread marks the device broken.
 */
import type { GuestMemory } from '../devices/device.js';
import { VirtioBlock, BLK_QUEUE_SIZE } from './blk.js';
import { BF_LOCK, BF_NOTIFIES, BF_ON, BF_SUPPRESSED, QueueFastPath, interruptIfWanted, type FastNotifyResult, type QueueFastShare } from './queue-fast-path.js';
import { Virtqueue, VirtqueueError } from './queue.js';
import { lockWord, unlockWord } from './shared-lock.js';

export { BF_LOCK, BF_NOTIFIES, BF_ON, BF_SUPPRESSED, lockWord, unlockWord, type FastNotifyResult };

/** What a vCPU thread needs to serve one blk device's queue (structured-clone safe). */
export interface BlkFastShare extends QueueFastShare {
  counters: SharedArrayBuffer;
  /** The image's open fd (the process's, valid on every thread; the device thread owns and closes it). */
  fd: number;
  id: string;
  path: string;
  readOnly: boolean;
  serial: string;
}

/** The device-thread side of one blk device's fast path (the control block is QueueFastPath's). */
export class BlkFastPath extends QueueFastPath {
  share(notifyAddr: number, blk: { fd: number; id: string; path: string; readOnly: boolean; serial: string; counters: SharedArrayBuffer }): BlkFastShare {
    return { ...this.controlShare(notifyAddr), ...blk };
  }
}

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
  notify(value: number, raise?: () => void): FastNotifyResult {
    if (value !== 0) return { kind: 'forward' };
    const ctl = this.ctl;
    lockWord(ctl, BF_LOCK);
    try {
      if (Atomics.load(ctl, BF_ON) !== 1) return { kind: 'forward' };
      Atomics.add(ctl, BF_NOTIFIES, 1);
      const served = this.blk.serveQueue(this.queue);
      if (served === 0) return { kind: 'served', interrupt: false };
      return interruptIfWanted(this.queue, ctl, raise);
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
