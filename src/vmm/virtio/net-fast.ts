/**
 * virtio-net's transmit queue served on the vCPU thread whose guest kicked
 * it, as virtio-blk's request queue is (blk-fast.ts, whose rules about the
 * shared queue state, the lock and the ON flag apply here unchanged — they
 * live in queue-fast-path.ts). The TAP fd is the process's, so the vCPU
 * thread writes the frames itself, gathered straight from guest memory, with
 * the same transmitQueue() code the device thread runs.
 *
 * Two users of the same client:
 * - a vCPU thread (HANGAR_VIRTIO_NET_IOTHREAD=0): only a kick of the transmit
 *   queue (1) is served there; a kick of the receive queue (new buffers) goes
 *   to the device thread, which watches the TAP;
 * - the NIC's I/O thread (net-io-worker.ts, the default): serve() transmits
 *   and receives in one pass, under the same lock, and the device thread
 *   leaves the TAP alone.
 * The interrupt for returned chains goes up from the serving thread through
 * the transport's shared interrupt state when the driver wants one (one
 * interrupt for both queues); a hostile ring clears ON and is reported to
 * the device thread, which marks the device broken.
 */
import type { GuestMemory } from '../devices/device.js';
import { EAGAIN, errno, errnoName, libc } from '../../kvm/libc.js';
import { MAX_FRAME, NET_QUEUE_SIZE, RXQ, TX, TXQ, VIRTIO_NET_HDR_BYTES, tapSend, transmitQueue } from './net-transmit.js';
import { RX, receiveQueue } from './net-receive.js';
import { BF_LOCK, BF_NOTIFIES, BF_ON, BF_SUPPRESSED, QueueFastPath, interruptIfWanted, type FastNotifyResult, type QueueFastShare } from './queue-fast-path.js';
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
  /** The receive queue's shared state (for the NIC's I/O thread). */
  rxQueue?: SharedArrayBuffer;
  /** Receive counters (net-receive.ts RX indexes), shared with the device model. */
  rxCounters: SharedArrayBuffer;
  /** The device model's receive-queue kick policy (Virtqueue.notifyWhenEmptyOnly). */
  rxNotifyWhenEmptyOnly: boolean;
}

/** Frames received per pass of the NIC's I/O thread before it looks at its other fds. */
const RX_IO_THREAD_BATCH = 256;
/** Control word: set while the machine is paused, so an I/O thread leaves the queues alone (net-io-thread.ts). */
export const BF_HOLD = 4;
/** Control words the I/O thread counts in: its wake-ups, and those a transmit kick caused. */
export const BF_IO_PASSES = 5;
export const BF_IO_TX_KICKS = 6;

/** What one pass of a NIC's I/O thread did. */
export type IoPassResult = FastNotifyResult & { outOfBuffers?: boolean };

/** The device-thread side of one NIC's fast path. */
export class NetFastPath extends QueueFastPath {
  private rxQueue?: Int32Array;

  /** The receive queue's shared state: vCPU threads then receive after transmitting. */
  bindRxQueue(state: Int32Array): void {
    this.rxQueue = state;
  }

  /** The I/O thread's wake-ups and transmit kicks (net-io-worker.ts). */
  ioThreadCounts(): { passes: number; txKicks: number } {
    return { passes: Atomics.load(this.control, BF_IO_PASSES), txKicks: Atomics.load(this.control, BF_IO_TX_KICKS) };
  }

  share(notifyAddr: number, nic: Omit<NetFastShare, keyof QueueFastShare | 'rxQueue'>): NetFastShare {
    return { ...this.controlShare(notifyAddr), ...nic, ...(this.rxQueue ? { rxQueue: this.rxQueue.buffer as SharedArrayBuffer } : {}) };
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
  private readonly rxQueue?: Virtqueue;
  private readonly rxCounters: Float64Array;
  private readonly recv: (buf: Uint8Array) => number | null;
  /** The bounce buffer for received frames (header + the largest frame); made on first use. */
  private frame?: Uint8Array;
  /** The last receive pass found the driver out of buffers (a kick is armed). */
  private rxOutOfBuffers = false;

  constructor(share: NetFastShare, memory: GuestMemory) {
    this.notifyAddr = share.notifyAddr;
    this.ctl = new Int32Array(share.control);
    this.queue = new Virtqueue(TXQ, NET_QUEUE_SIZE, memory, new Int32Array(share.queue));
    this.counters = new Float64Array(share.counters);
    const fd = share.fd;
    this.send = (bufs) => tapSend(fd, bufs);
    this.withHeader = share.vnetHdr;
    this.rxCounters = new Float64Array(share.rxCounters);
    if (share.rxQueue) {
      this.rxQueue = new Virtqueue(RXQ, NET_QUEUE_SIZE, memory, new Int32Array(share.rxQueue));
      this.rxQueue.notifyWhenEmptyOnly = share.rxNotifyWhenEmptyOnly;
    }
    // "Nothing waits" ends the pass; any other failure breaks the device, as on the device thread.
    this.recv = (buf) => {
      const n = libc.read(fd, buf as Buffer, buf.length);
      if (n >= 0) return n;
      const e = errno();
      if (e === EAGAIN) return null;
      throw new VirtqueueError(`reading TAP of ${share.id} failed: ${errnoName(e)}`, { reason: 'tap-read', errno: errnoName(e) });
    };
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
    return this.underLock(false, () => {
      Atomics.add(this.ctl, BF_NOTIFIES, 1);
      return this.serveLocked(raise, 0);
    });
  }

  /**
   * One pass of a NIC's I/O thread (net-io-worker.ts), woken by a transmit kick, a receive
   * kick or the TAP: sends what the driver made available, receives what waits. Forwards
   * (does nothing) while the device is off or the machine paused.
   */
  serve(raise: () => void): IoPassResult {
    return this.underLock(true, () => ({ ...this.serveLocked(raise, RX_IO_THREAD_BATCH), outOfBuffers: this.rxOutOfBuffers }));
  }

  /**
   * Runs `pass` holding the lock while the device is on (and, with `heldToo`, while the machine
   * is not held); otherwise forwards. A throw (a hostile ring, a failing TAP) clears ON at once,
   * so no thread serves the queues again, and is reported; the device thread marks the device broken.
   */
  private underLock(heldToo: boolean, pass: () => IoPassResult): IoPassResult {
    const ctl = this.ctl;
    lockWord(ctl, BF_LOCK);
    try {
      if (Atomics.load(ctl, BF_ON) !== 1 || (heldToo && Atomics.load(ctl, BF_HOLD) === 1)) return { kind: 'forward' };
      return pass();
    } catch (e) {
      Atomics.store(ctl, BF_ON, 0);
      const details = e instanceof VirtqueueError ? { ...(e.details ?? {}) } : { internal: true };
      return { kind: 'failed', message: e instanceof Error ? e.message : String(e), details };
    } finally {
      unlockWord(ctl, BF_LOCK);
    }
  }

  /** Under the lock: transmit, then receive up to `rxBatch` frames; one interrupt for both queues if the driver wants one. */
  private serveLocked(raise: (() => void) | undefined, rxBatch: number): FastNotifyResult {
    const ctl = this.ctl;
    const sent = transmitQueue(this.queue, this.send, this.counters, this.withHeader);
    const received = rxBatch > 0 ? this.receiveWaiting(rxBatch) : 0;
    if (received === 0) return sent === 0 ? { kind: 'served', interrupt: false } : interruptIfWanted(this.queue, ctl, raise);
    // Each queue's event index is consulted (and recorded) separately.
    const txWants = sent > 0 && this.queue.needsInterrupt();
    const rxWants = this.rxQueue!.needsInterrupt();
    if (!txWants && !rxWants) { Atomics.add(ctl, BF_SUPPRESSED, 1); return { kind: 'served', interrupt: false }; }
    if (!raise) return { kind: 'served', interrupt: true };
    raise();
    return { kind: 'served', interrupt: false };
  }

  /** Under the lock: frames waiting on the TAP into the receive queue's buffers; how many chains were used. */
  private receiveWaiting(batch: number): number {
    const q = this.rxQueue;
    // A queue the driver has not set up has no buffers either (an I/O thread then stops watching the TAP).
    if (!q?.ready) { this.rxOutOfBuffers = true; return 0; }
    this.frame ??= new Uint8Array(VIRTIO_NET_HDR_BYTES + MAX_FRAME);
    const before = this.rxCounters[RX.FRAMES]!;
    const r = receiveQueue(q, this.recv, this.frame, this.withHeader, this.rxCounters, batch);
    this.rxOutOfBuffers = r.outOfBuffers;
    this.rxCounters[RX.FRAMES_OFF_DEVICE_THREAD]! += this.rxCounters[RX.FRAMES]! - before;
    return r.served;
  }

}
