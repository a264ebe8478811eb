/**
 * virtio-net's transmit queue served on the vCPU thread whose guest kicked
 * it, as virtio-blk's request queue is (blk-fast.ts, whose rules about the
 * shared queue state, the lock and the ON flag apply here unchanged — they
 * live in queue-fast-path.ts). The TAP fd is the process's, so the vCPU
 * thread writes the frames itself, gathered straight from guest memory, with
 * the same transmitQueue() code the device thread runs.
 *
 * Only the transmit queue (1) is served here; a kick of the receive queue
 * (new buffers) still goes to the device thread, which owns receiving. The
 * interrupt for returned chains goes up from this thread through the
 * transport's shared interrupt state when the driver wants one; a hostile
 * ring clears ON and is reported to the device thread, which marks the
 * device broken.
 */
import type { GuestMemory } from '../devices/device.js';
import { NET_QUEUE_SIZE, TX, TXQ, tapSend, transmitQueue } from './net-transmit.js';
import { BF_LOCK, BF_NOTIFIES, BF_ON, QueueFastPath, interruptIfWanted, type FastNotifyResult, type QueueFastShare } from './queue-fast-path.js';
import { Virtqueue, VirtqueueError } from './queue.js';
import { lockWord, unlockWord } from './shared-lock.js';

/** What a vCPU thread needs to serve one NIC's transmit queue (structured-clone safe). */
export interface NetFastShare extends QueueFastShare {
  /** The TAP's open fd (the device thread's backend owns and closes it, under the lock). */
  fd: number;
  id: string;
  /** The TAP carries virtio-net headers: the driver's header goes with each frame. */
  vnetHdr: boolean;
  /** Transmit counters (net.ts TX indexes), shared with the device model. */
  counters: SharedArrayBuffer;
}

/** The device-thread side of one NIC's fast path. */
export class NetFastPath extends QueueFastPath {
  share(notifyAddr: number, nic: { fd: number; id: string; vnetHdr: boolean; counters: SharedArrayBuffer }): NetFastShare {
    return { ...this.controlShare(notifyAddr), ...nic };
  }
}

/** The vCPU-thread side of one NIC. */
export class NetFastPathClient {
  readonly notifyAddr: number;
  private readonly ctl: Int32Array;
  private readonly queue: Virtqueue;
  private readonly counters: Float64Array;
  private readonly send: (bufs: Uint8Array[]) => boolean;
  private readonly withHeader: boolean;

  constructor(share: NetFastShare, memory: GuestMemory) {
    this.notifyAddr = share.notifyAddr;
    this.ctl = new Int32Array(share.control);
    this.queue = new Virtqueue(TXQ, NET_QUEUE_SIZE, memory, new Int32Array(share.queue));
    this.counters = new Float64Array(share.counters);
    const fd = share.fd;
    this.send = (bufs) => tapSend(fd, bufs);
    this.withHeader = share.vnetHdr;
  }

  /** Frames sent by vCPU threads and the device thread together (for tests). */
  get framesSent(): number {
    return this.counters[TX.FRAMES]!;
  }

  /**
   * A guest wrote `value` to this NIC's QUEUE_NOTIFY. Sends every frame the
   * driver has made available on the transmit queue, unless the fast path is
   * off or the value names the receive queue: then the write goes to the
   * device thread.
   */
  notify(value: number, raise?: () => void): FastNotifyResult {
    if (value !== TXQ) return { kind: 'forward' };
    const ctl = this.ctl;
    lockWord(ctl, BF_LOCK);
    try {
      if (Atomics.load(ctl, BF_ON) !== 1) return { kind: 'forward' };
      Atomics.add(ctl, BF_NOTIFIES, 1);
      if (transmitQueue(this.queue, this.send, this.counters, this.withHeader) === 0) return { kind: 'served', interrupt: false };
      return interruptIfWanted(this.queue, ctl, raise);
    } catch (e) {
      // A hostile ring: stop serving here at once; the device thread marks the device broken.
      Atomics.store(ctl, BF_ON, 0);
      const details = e instanceof VirtqueueError ? { ...(e.details ?? {}) } : { internal: true };
      return { kind: 'failed', message: e instanceof Error ? e.message : String(e), details };
    } finally {
      unlockWord(ctl, BF_LOCK);
    }
  }

}
