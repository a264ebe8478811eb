/**
 * The UART's fast path: the two registers a guest's console output hammers,
 * served on the vCPU thread itself instead of a round trip to the device
 * thread (each round trip costs a message, an event-loop turn and a wake-up;
 * in a nested lab that is milliseconds per console byte).
 *
 * - A write to THR (transmit) is appended to a shared ring and the vCPU goes
 *   straight back into the guest; the device thread is woken (at most once
 *   per batch) and drains the ring into the console in one piece.
 * - A read of LSR (line status) is answered from a shared mirror: the
 *   transmitter is always empty (THRE, TEMT) and DR says whether received
 *   bytes wait — so a guest polling LSR before each byte never waits.
 *
 * Everything else (and THR when the divisor latch or loopback is on, or the
 * ring is full) still goes to the Serial model on the device thread, which
 * drains the ring before it handles any register, so output order and the
 * THR-empty interrupt stay exact. The device thread keeps the mirror current
 * after every register access.
 *
 * Shared layout (Int32 words, then the ring's bytes): producers (vCPU
 * threads) append under a small lock; the one consumer (device thread)
 * needs none: it reads TAIL, copies, and publishes HEAD.
 */

export const SF_FLAGS = 0;
export const SF_LOCK = 1;
export const SF_HEAD = 2;
export const SF_TAIL = 3;
/** 1 while a wake-up of the device thread is outstanding. */
export const SF_SIGNAL = 4;
export const SF_FAST_TX = 5;
export const SF_FAST_LSR = 6;
const SF_WORDS = 8;
export const SF_RING_BYTES = 4096;
const RING_MASK = SF_RING_BYTES - 1;

/** SF_FLAGS bits: the fast path may serve THR; LSR.DR (received data waits). */
export const SF_ON = 0x1;
export const SF_DATA_READY = 0x2;

const THR = 0, LSR = 5;

/** Atomics.waitAsync (Node 16+, ES2024): not in this project's ES2022 lib typings. */
type WaitAsync = (a: Int32Array, index: number, value: number) => { async: false; value: string } | { async: true; value: Promise<string> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;
const LSR_DR = 0x01, LSR_THRE = 0x20, LSR_TEMT = 0x40;

export function createSerialFastPath(): SharedArrayBuffer {
  return new SharedArrayBuffer(SF_WORDS * 4 + SF_RING_BYTES);
}

/** The vCPU-thread side. */
export class SerialFastPathClient {
  private readonly w: Int32Array;
  private readonly ring: Uint8Array;

  constructor(sab: SharedArrayBuffer, private readonly base: number) {
    this.w = new Int32Array(sab, 0, SF_WORDS);
    this.ring = new Uint8Array(sab, SF_WORDS * 4, SF_RING_BYTES);
  }

  /**
   * Serves one port-I/O exit when it is a byte-wide THR write or LSR read the fast path may
   * answer (`bytes` holds `count` bytes, in for writes, out for reads). False: forward it.
   */
  handle(port: number, write: boolean, size: number, count: number, bytes: Uint8Array): boolean {
    if (size !== 1 || count < 1) return false;
    const w = this.w;
    const flags = Atomics.load(w, SF_FLAGS);
    if (!(flags & SF_ON)) return false;
    if (write && port === this.base + THR) return this.transmit(bytes.subarray(0, count));
    if (!write && port === this.base + LSR) {
      bytes.fill(LSR_THRE | LSR_TEMT | (flags & SF_DATA_READY ? LSR_DR : 0), 0, count);
      Atomics.add(w, SF_FAST_LSR, 1);
      return true;
    }
    return false;
  }

  private transmit(data: Uint8Array): boolean {
    const w = this.w;
    while (Atomics.compareExchange(w, SF_LOCK, 0, 1) !== 0) Atomics.wait(w, SF_LOCK, 1, 1);
    try {
      const tail = Atomics.load(w, SF_TAIL);
      const used = (tail - Atomics.load(w, SF_HEAD)) | 0;
      if (used + data.length > SF_RING_BYTES) return false; // full: the device thread drains, then takes this write
      for (let i = 0; i < data.length; i++) this.ring[(tail + i) & RING_MASK] = data[i]!;
      Atomics.store(w, SF_TAIL, (tail + data.length) | 0);
    } finally {
      Atomics.store(w, SF_LOCK, 0);
      Atomics.notify(w, SF_LOCK, 1);
    }
    Atomics.add(w, SF_FAST_TX, data.length);
    if (Atomics.compareExchange(w, SF_SIGNAL, 0, 1) === 0) Atomics.notify(w, SF_SIGNAL, 1);
    return true;
  }
}

/** The device-thread side: mirror updates, draining, and the wake-up loop. */
export class SerialFastPathHost {
  readonly sab = createSerialFastPath();
  private readonly w = new Int32Array(this.sab, 0, SF_WORDS);
  private readonly ring = new Uint8Array(this.sab, SF_WORDS * 4, SF_RING_BYTES);
  private armed = false;

  /** `onBytes` gets each drained batch (device thread). */
  constructor(private readonly onBytes: (bytes: Uint8Array) => void) {}

  /** Publishes what the fast path may do now. */
  mirror(on: boolean, dataReady: boolean): void {
    Atomics.store(this.w, SF_FLAGS, (on ? SF_ON : 0) | (dataReady ? SF_DATA_READY : 0));
  }

  /** Takes every byte the vCPU threads appended so far; returns how many. */
  drain(): number {
    const w = this.w;
    const head = Atomics.load(w, SF_HEAD);
    const n = (Atomics.load(w, SF_TAIL) - head) | 0;
    if (n <= 0) return 0;
    const out = new Uint8Array(n);
    const start = head & RING_MASK;
    const first = Math.min(n, SF_RING_BYTES - start);
    out.set(this.ring.subarray(start, start + first), 0);
    if (first < n) out.set(this.ring.subarray(0, n - first), first);
    Atomics.store(w, SF_HEAD, (head + n) | 0);
    this.onBytes(out);
    return n;
  }

  /** Starts waiting (without keeping the process alive) for vCPU threads' wake-ups. */
  listen(): void {
    if (this.armed) return;
    this.armed = true;
    const loop = (): void => {
      for (;;) {
        const r = waitAsync(this.w, SF_SIGNAL, 0);
        if (r.async) { void r.value.then(() => { this.wake(); loop(); }); return; }
        this.wake(); // already signalled
      }
    };
    loop();
  }

  private wake(): void {
    // Clear first: a byte appended after this drain signals again.
    Atomics.store(this.w, SF_SIGNAL, 0);
    this.drain();
  }

  counters(): { fastTx: number; fastLsr: number } {
    return { fastTx: Atomics.load(this.w, SF_FAST_TX), fastLsr: Atomics.load(this.w, SF_FAST_LSR) };
  }
}
