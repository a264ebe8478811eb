/**
 * The interrupt status of one virtio-mmio transport, kept in shared memory so
 * that every thread of the VMM can work with it, not only the device thread.
 *
 * Why: a Linux guest's virtio-mmio interrupt handler reads InterruptStatus
 * and writes InterruptACK for every interrupt. Forwarded to the device
 * thread, each is a message, an event-loop turn and a wake-up — about 15 µs
 * natively, milliseconds in the nested KVM lab — and a virtio-net transmit
 * completion pays two of them before the guest may send again. With the
 * status here, the vCPU thread that takes the exit answers both registers
 * itself, and a thread that finished requests for the driver (a vCPU thread
 * serving a queue) raises the interrupt itself with KVM_IRQ_LINE.
 *
 * Words: a lock, the status bits (INT_VRING, INT_CONFIG), the level the line
 * was last set to, and counters. Whoever changes the status holds the lock
 * and sets the line to match before releasing it, so the line and the status
 * never disagree when the lock is free: a raise on one thread racing an ACK
 * on another cannot leave the line low with a bit pending, nor high with none.
 * The status itself is read without the lock (one aligned word).
 */
import { lockWord, unlockWord } from './shared-lock.js';

const IS_LOCK = 0;
const IS_STATUS = 1;
const IS_LINE = 2;
/** Interrupts raised (every thread), status reads and ACKs answered on vCPU threads. */
const IS_RAISED = 3;
const IS_FAST_READS = 4;
const IS_FAST_ACKS = 5;
const IS_WORDS = 8;

/** Drives the interrupt line itself, with no caching: the shared LINE word is the one record of its level. */
export interface LineDriver {
  set(level: boolean): void;
  pulse(): void;
}

/** What another thread needs to answer one transport's interrupt registers (structured-clone safe). */
export interface VirtioIrqShare {
  /** Guest-physical base of the transport's register window. */
  base: number;
  /** The VM's fd and the line's GSI, for KVM_IRQ_LINE from that thread. */
  vmFd: number;
  gsi: number;
  edge: boolean;
  words: SharedArrayBuffer;
}

export class VirtioInterruptState {
  readonly words: Int32Array;

  constructor(private readonly line: LineDriver, readonly edge: boolean, words?: SharedArrayBuffer) {
    this.words = new Int32Array(words ?? new SharedArrayBuffer(IS_WORDS * 4));
  }

  get status(): number {
    return Atomics.load(this.words, IS_STATUS);
  }

  get raised(): number {
    return Atomics.load(this.words, IS_RAISED);
  }

  /** Status reads and ACK writes answered on vCPU threads. */
  get fastAccesses(): { reads: number; acks: number } {
    return { reads: Atomics.load(this.words, IS_FAST_READS), acks: Atomics.load(this.words, IS_FAST_ACKS) };
  }

  /** Sets `bit` and interrupts the driver: the line goes high (level) or pulses (edge). */
  raise(bit: number): void {
    const w = this.words;
    lockWord(w, IS_LOCK);
    try {
      Atomics.or(w, IS_STATUS, bit);
      Atomics.add(w, IS_RAISED, 1);
      if (this.edge) this.line.pulse();
      else this.setLineLocked(true);
    } finally {
      unlockWord(w, IS_LOCK);
    }
  }

  /** The driver acknowledged `bits`: clear them; the line drops once nothing is pending. */
  ack(bits: number): void {
    const w = this.words;
    lockWord(w, IS_LOCK);
    try {
      const left = Atomics.and(w, IS_STATUS, ~bits) & ~bits;
      if (!this.edge && left === 0) this.setLineLocked(false);
    } finally {
      unlockWord(w, IS_LOCK);
    }
  }

  /** Replaces the status (reset: 0; restore: the snapshot's) and sets the line to match. */
  assign(status: number): void {
    const w = this.words;
    lockWord(w, IS_LOCK);
    try {
      Atomics.store(w, IS_STATUS, status);
      if (this.edge) { if (status !== 0) this.line.pulse(); } else this.setLineLocked(status !== 0);
    } finally {
      unlockWord(w, IS_LOCK);
    }
  }

  /** A vCPU thread answered a status read (value from `status`) or an ACK (through ack()). */
  countFast(kind: 'read' | 'ack'): void {
    Atomics.add(this.words, kind === 'read' ? IS_FAST_READS : IS_FAST_ACKS, 1);
  }

  private setLineLocked(high: boolean): void {
    const level = high ? 1 : 0;
    if (Atomics.load(this.words, IS_LINE) === level) return;
    // Drive first, then record: if the ioctl throws, the word still says what the line is.
    this.line.set(high);
    Atomics.store(this.words, IS_LINE, level);
  }
}
