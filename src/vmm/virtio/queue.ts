/**
 * The split virtqueue of virtio 1.x, seen from the device side.
 *
 * Every value read from guest memory here (table and ring addresses, ring
 * indices, descriptor addresses, lengths, flags, next pointers) is hostile.
 * Anything that does not add up raises a VirtqueueError; the transport turns
 * that into a broken device (DEVICE_NEEDS_RESET), so nothing escapes to the
 * MMIO bus. Descriptor buffers are handed to devices as live views of guest
 * memory that GuestMemory.slice has already bounds-checked.
 */
import { HangarError } from '../../common/errors.js';
import { GuestMemoryError, type GuestMemory } from '../devices/device.js';

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;

/** Feature bits that concern the ring itself (the transport offers them for every device). */
export const VIRTIO_F_INDIRECT_DESC = 28n;
export const VIRTIO_F_EVENT_IDX = 29n;
export const VIRTIO_F_VERSION_1 = 32n;

const DESC_SIZE = 16;
const EMPTY = new Uint8Array(0);
/** An indirect table may hold more entries than the ring, but not without limit. */
export const MAX_INDIRECT_ENTRIES = 1024;

/** A guest broke the virtqueue rules; `details.reason` names which one. */
export class VirtqueueError extends HangarError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('INVALID_ARGUMENT', message, details);
    this.name = 'VirtqueueError';
  }
}

/**
 * A full memory barrier between our store to one ring field and our load of
 * another that the driver writes (used idx → used_event, avail_event → avail
 * idx): x86 lets a load pass an earlier store to another address, and then
 * driver and device can each miss the other's update (a lost interrupt or a
 * lost kick). A locked read-modify-write on shared memory is such a barrier.
 */
const BARRIER = new Int32Array(new SharedArrayBuffer(4));
function fullBarrier(): void {
  Atomics.add(BARRIER, 0, 0);
}

function hex(v: number | bigint): string {
  return `0x${v.toString(16)}`;
}

/**
 * One request as the driver posted it: device-readable buffers first, then
 * device-writable ones, each a bounds-checked live view of guest memory.
 * Devices read and write it as two byte streams without caring how the
 * driver split them into descriptors.
 */
export class DescriptorChain {
  readonly readableLength: number;
  readonly writableLength: number;

  constructor(
    readonly head: number,
    readonly readable: readonly Uint8Array[],
    readonly writable: readonly Uint8Array[],
  ) {
    this.readableLength = readable.reduce((n, b) => n + b.length, 0);
    this.writableLength = writable.reduce((n, b) => n + b.length, 0);
  }

  /** Views covering bytes [offset, offset+len) of the readable stream (fewer bytes if it is shorter). */
  readableRange(offset: number, len: number): Uint8Array[] {
    return range(this.readable, offset, len);
  }

  /** Views covering bytes [offset, offset+len) of the writable stream (fewer bytes if it is shorter). */
  writableRange(offset: number, len: number): Uint8Array[] {
    return range(this.writable, offset, len);
  }

  /** Copies readable bytes starting at `offset` into `dst`; returns how many were copied. */
  read(offset: number, dst: Uint8Array): number {
    let n = 0;
    for (const v of this.readableRange(offset, dst.length)) {
      dst.set(v, n);
      n += v.length;
    }
    return n;
  }

  /** Copies `src` into the writable stream starting at `offset`; returns how many bytes fit. */
  write(offset: number, src: Uint8Array): number {
    let n = 0;
    for (const v of this.writableRange(offset, src.length)) {
      v.set(src.subarray(n, n + v.length));
      n += v.length;
    }
    return n;
  }
}

function range(bufs: readonly Uint8Array[], offset: number, len: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let skip = offset;
  let want = len;
  for (const b of bufs) {
    if (want <= 0) break;
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    const take = Math.min(b.length - skip, want);
    out.push(b.subarray(skip, skip + take));
    want -= take;
    skip = 0;
  }
  return out;
}

export interface VirtqueuePosition {
  lastAvail: number;
  usedIdx: number;
  signalledUsed: number;
}

/** What the driver programmed into the transport's queue registers. */
export interface QueueConfig {
  size: number;
  descAddr: bigint;
  driverAddr: bigint;
  deviceAddr: bigint;
}

/**
 * Words of a queue's state (Int32Array). The state lives in a SharedArrayBuffer
 * so that a second Virtqueue over the same words, on a vCPU thread, can serve
 * the queue where the guest's notify exits (blk-fast.ts); both sides then see
 * one ring position. Whoever touches it holds the device's fast-path lock.
 */
export const VQS = {
  READY: 0, SIZE: 1, DESC_LO: 2, DESC_HI: 3, DRIVER_LO: 4, DRIVER_HI: 5, DEVICE_LO: 6, DEVICE_HI: 7,
  EVENT_IDX: 8, INDIRECT: 9, LAST_AVAIL: 10, USED_IDX: 11, SIGNALLED_USED: 12,
} as const;
export const VQS_WORDS = 16;

export function createQueueState(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(VQS_WORDS * 4));
}

/**
 * Device side of one split virtqueue. `configure` checks the layout once;
 * `pop` walks the next available chain; `pushUsed` returns it; and
 * `needsInterrupt` applies the driver's event suppression.
 */
export class Virtqueue {
  /** Layout and ring position, see VQS (shared with a vCPU thread's fast path when there is one). */
  readonly shared: Int32Array;
  /**
   * With EVENT_IDX: ask for a kick only when the queue ran dry (armNotify), not at every pop.
   * For a receive queue, whose device is driven by its backend while buffers last: the
   * driver's refills then cost no exit. Set by the device model; not ring state.
   */
  notifyWhenEmptyOnly = false;

  constructor(
    readonly index: number,
    readonly maxSize: number,
    private readonly memory: GuestMemory,
    shared?: Int32Array,
  ) {
    if (shared && shared.length < VQS_WORDS) throw new HangarError('INTERNAL', `queue ${index}: shared state needs ${VQS_WORDS} words`);
    this.shared = shared ?? new Int32Array(VQS_WORDS);
  }

  get size(): number {
    return this.shared[VQS.READY] ? this.shared[VQS.SIZE]! : 0;
  }

  get ready(): boolean {
    return this.shared[VQS.READY] === 1;
  }

  private get lastAvail(): number { return this.shared[VQS.LAST_AVAIL]!; }
  private set lastAvail(v: number) { this.shared[VQS.LAST_AVAIL] = v; }
  private get usedIdx(): number { return this.shared[VQS.USED_IDX]!; }
  private set usedIdx(v: number) { this.shared[VQS.USED_IDX] = v; }
  private get signalledUsed(): number { return this.shared[VQS.SIGNALLED_USED]!; }
  private set signalledUsed(v: number) { this.shared[VQS.SIGNALLED_USED] = v; }
  private get eventIdx(): boolean { return this.shared[VQS.EVENT_IDX] === 1; }
  private get indirect(): boolean { return this.shared[VQS.INDIRECT] === 1; }

  /** The ring layout in force (numbers: configure() has checked every table lies inside RAM). */
  private get cfg(): { size: number; descAddr: number; driverAddr: number; deviceAddr: number } | null {
    const w = this.shared;
    if (w[VQS.READY] !== 1) return null;
    return {
      size: w[VQS.SIZE]!,
      descAddr: (w[VQS.DESC_HI]! >>> 0) * 2 ** 32 + (w[VQS.DESC_LO]! >>> 0),
      driverAddr: (w[VQS.DRIVER_HI]! >>> 0) * 2 ** 32 + (w[VQS.DRIVER_LO]! >>> 0),
      deviceAddr: (w[VQS.DEVICE_HI]! >>> 0) * 2 ** 32 + (w[VQS.DEVICE_LO]! >>> 0),
    };
  }

  /** Where the device stands in the rings (with the ring addresses, all a snapshot needs). */
  state(): VirtqueuePosition {
    return { lastAvail: this.lastAvail, usedIdx: this.usedIdx, signalledUsed: this.signalledUsed };
  }

  /** Puts a configured queue back where a snapshot left it. */
  restorePosition(p: VirtqueuePosition): void {
    this.requireConfig();
    for (const v of [p.lastAvail, p.usedIdx, p.signalledUsed]) {
      if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new VirtqueueError(`queue ${this.index}: ring position ${v} is not a 16-bit index`, { reason: 'bad-snapshot', queue: this.index });
    }
    this.lastAvail = p.lastAvail;
    this.usedIdx = p.usedIdx;
    this.signalledUsed = p.signalledUsed;
  }

  /**
   * Checks the ring layout against guest memory and the rules of the split
   * ring (power-of-two size within the maximum, alignment, every table
   * inside RAM), then makes the queue usable.
   */
  configure(cfg: QueueConfig, features: { eventIdx: boolean; indirect: boolean }): void {
    const { size, descAddr, driverAddr, deviceAddr } = cfg;
    const where = { queue: this.index, size, desc: hex(descAddr), driver: hex(driverAddr), device: hex(deviceAddr) };
    if (size < 1 || size > this.maxSize || (size & (size - 1)) !== 0) {
      throw new VirtqueueError(`queue ${this.index}: size ${size} is not a power of two between 1 and ${this.maxSize}`, { reason: 'queue-size', ...where });
    }
    if (descAddr % 16n !== 0n || driverAddr % 2n !== 0n || deviceAddr % 4n !== 0n) {
      throw new VirtqueueError(`queue ${this.index}: ring addresses are misaligned`, { reason: 'ring-alignment', ...where });
    }
    const extra = features.eventIdx ? 2 : 0;
    this.guard(() => {
      this.memory.slice(descAddr, DESC_SIZE * size);
      this.memory.slice(driverAddr, 4 + 2 * size + extra);
      this.memory.slice(deviceAddr, 4 + 8 * size + extra);
    }, 'ring-outside-memory', where);
    const w = this.shared;
    w[VQS.READY] = 0;
    w[VQS.SIZE] = size;
    const split = (v: bigint, lo: number, hi: number) => { w[lo] = Number(v & 0xffffffffn) | 0; w[hi] = Number(v >> 32n) | 0; };
    split(descAddr, VQS.DESC_LO, VQS.DESC_HI);
    split(driverAddr, VQS.DRIVER_LO, VQS.DRIVER_HI);
    split(deviceAddr, VQS.DEVICE_LO, VQS.DEVICE_HI);
    w[VQS.EVENT_IDX] = features.eventIdx ? 1 : 0;
    w[VQS.INDIRECT] = features.indirect ? 1 : 0;
    this.lastAvail = 0;
    this.usedIdx = 0;
    this.signalledUsed = 0;
    w[VQS.READY] = 1;
  }

  reset(): void {
    this.shared.fill(0);
  }

  /** An out-of-RAM access as a VirtqueueError (anything else is passed on as it is). */
  private outside(e: unknown, reason: string, details: Record<string, unknown>): unknown {
    if (e instanceof GuestMemoryError) return new VirtqueueError(`queue ${this.index}: ${e.message}`, { reason, gpa: hex(e.gpa), len: e.len, ...details });
    return e;
  }

  /** Runs a guest-memory access and reports an out-of-RAM address as a VirtqueueError. */
  private guard<T>(fn: () => T, reason: string, details: Record<string, unknown>): T {
    try {
      return fn();
    } catch (e) {
      if (e instanceof GuestMemoryError) {
        throw new VirtqueueError(`queue ${this.index}: ${e.message}`, { reason, gpa: hex(e.gpa), len: e.len, ...details });
      }
      throw e;
    }
  }

  private requireConfig(): { size: number; descAddr: number; driverAddr: number; deviceAddr: number } {
    const cfg = this.cfg;
    if (!cfg) throw new VirtqueueError(`queue ${this.index} is not ready`, { reason: 'queue-not-ready', queue: this.index });
    return cfg;
  }

  /** How many chains the driver has made available that we have not taken yet. */
  pending(): number {
    const cfg = this.cfg;
    if (!cfg) return 0;
    return this.pendingIn(cfg);
  }

  private pendingIn(cfg: { size: number; driverAddr: number }): number {
    const availIdx = this.memory.readU16(cfg.driverAddr + 2);
    const n = (availIdx - this.lastAvail) & 0xffff;
    if (n > cfg.size) {
      throw new VirtqueueError(`queue ${this.index}: available index ${availIdx} runs ${n} entries ahead of ${this.lastAvail}, more than the queue size ${cfg.size}`, {
        reason: 'avail-index', queue: this.index, availIdx, lastAvail: this.lastAvail, size: cfg.size,
      });
    }
    return n;
  }

  /** Takes the next available chain, or null when the driver has posted none. */
  pop(): DescriptorChain | null {
    const cfg = this.cfg;
    if (!cfg || this.pendingIn(cfg) === 0) return null;
    const slot = this.lastAvail % cfg.size;
    const head = this.memory.readU16(cfg.driverAddr + 4 + 2 * slot);
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    if (this.eventIdx && !this.notifyWhenEmptyOnly) {
      // avail_event: ask the driver to notify us when it posts past what we have taken.
      this.memory.writeU16(cfg.deviceAddr + 4 + 8 * cfg.size, this.lastAvail);
    }
    return this.walk(cfg, head);
  }

  /**
   * Asks the driver to kick when it makes a chain available past the ones we
   * took (avail_event, with EVENT_IDX; without it the driver always kicks),
   * then looks again: chains it posted meanwhile are counted, not missed.
   * Returns pending().
   */
  armNotify(): number {
    const cfg = this.cfg;
    if (!cfg) return 0;
    if (this.eventIdx) {
      this.memory.writeU16(cfg.deviceAddr + 4 + 8 * cfg.size, this.lastAvail);
      fullBarrier();
    }
    return this.pendingIn(cfg);
  }

  /** Follows a chain from `head`, checking every descriptor. */
  private walk(cfg: { size: number; descAddr: number }, head: number): DescriptorChain {
    if (head >= cfg.size) {
      throw new VirtqueueError(`queue ${this.index}: available ring names descriptor ${head}, beyond the queue size ${cfg.size}`, { reason: 'head-index', queue: this.index, head });
    }
    const mem = this.memory;
    const readable: Uint8Array[] = [];
    const writable: Uint8Array[] = [];
    let table = cfg.descAddr;
    let tableSize = cfg.size;
    let inIndirect = false;
    let idx = head;
    let seen = 0;
    for (;;) {
      if (++seen > tableSize) {
        throw new VirtqueueError(`queue ${this.index}: chain from descriptor ${head} is longer than its table (${tableSize} entries): a loop`, {
          reason: 'chain-loop', queue: this.index, head, indirect: inIndirect,
        });
      }
      const at = table + DESC_SIZE * idx;
      // Error details are built only when there is an error: this loop runs for every descriptor.
      const where = (extra: Record<string, unknown> = {}) => ({ ...extra, queue: this.index, head, desc: idx, indirect: inIndirect });
      // The buffer address as a number: exact up to 2^53, far beyond any RAM; a larger one
      // fails the bounds check below like any other address outside RAM.
      let addr: number, len: number, flags: number, next: number;
      try {
        addr = mem.readU32(at) + mem.readU32(at + 4) * 2 ** 32;
        len = mem.readU32(at + 8);
        flags = mem.readU16(at + 12);
        next = mem.readU16(at + 14);
      } catch (e) {
        throw this.outside(e, 'descriptor-outside-memory', where());
      }

      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirect) throw new VirtqueueError(`queue ${this.index}: indirect descriptor without VIRTIO_F_INDIRECT_DESC`, { reason: 'indirect-not-negotiated', ...where() });
        if (inIndirect) throw new VirtqueueError(`queue ${this.index}: indirect descriptor inside an indirect table`, { reason: 'indirect-nested', ...where() });
        if (flags & VIRTQ_DESC_F_NEXT) throw new VirtqueueError(`queue ${this.index}: indirect descriptor also has NEXT`, { reason: 'indirect-next', ...where() });
        if (len === 0 || len % DESC_SIZE !== 0 || len / DESC_SIZE > MAX_INDIRECT_ENTRIES) {
          throw new VirtqueueError(`queue ${this.index}: indirect table length ${len} is not 16..${MAX_INDIRECT_ENTRIES * DESC_SIZE} in steps of 16`, { reason: 'indirect-length', len, ...where() });
        }
        if (addr % 16 !== 0) throw new VirtqueueError(`queue ${this.index}: indirect table at ${hex(addr)} is misaligned`, { reason: 'indirect-alignment', ...where() });
        try {
          mem.slice(addr, len);
        } catch (e) {
          throw this.outside(e, 'indirect-outside-memory', where({ addr: hex(addr), len }));
        }
        table = addr;
        tableSize = len / DESC_SIZE;
        inIndirect = true;
        idx = 0;
        seen = 0;
        continue;
      }

      let view: Uint8Array;
      try {
        view = len === 0 ? EMPTY : mem.slice(addr, len);
      } catch (e) {
        throw this.outside(e, 'buffer-outside-memory', where({ addr: hex(addr), len }));
      }
      if (flags & VIRTQ_DESC_F_WRITE) {
        writable.push(view);
      } else {
        if (writable.length > 0) {
          throw new VirtqueueError(`queue ${this.index}: device-readable descriptor after a device-writable one`, { reason: 'readable-after-writable', ...where() });
        }
        readable.push(view);
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      if (next >= tableSize) {
        throw new VirtqueueError(`queue ${this.index}: descriptor ${idx} points to ${next}, beyond its table of ${tableSize}`, { reason: 'next-index', next, ...where() });
      }
      idx = next;
    }
    return new DescriptorChain(head, readable, writable);
  }

  /** Returns a chain to the driver, saying how many bytes the device wrote into it. */
  pushUsed(head: number, written: number): void {
    const cfg = this.requireConfig();
    const slot = this.usedIdx % cfg.size;
    const elem = cfg.deviceAddr + 4 + 8 * slot;
    this.memory.writeU32(elem, head);
    this.memory.writeU32(elem + 4, written >>> 0);
    // The element must be in place before the index that publishes it; our
    // stores land in program order, and x86 keeps that order for the guest.
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    this.memory.writeU16(cfg.deviceAddr + 2, this.usedIdx);
  }

  /**
   * Whether the driver wants an interrupt for the chains used since the last
   * time this was asked: the NO_INTERRUPT flag, or used_event with EVENT_IDX.
   */
  needsInterrupt(): boolean {
    const cfg = this.cfg;
    if (!cfg) return false;
    const old = this.signalledUsed;
    const now = this.usedIdx;
    if (old === now) return false;
    this.signalledUsed = now;
    // The used idx we published must be visible before we read what the driver asked for.
    fullBarrier();
    if (this.eventIdx) {
      const usedEvent = this.memory.readU16(cfg.driverAddr + 4 + 2 * cfg.size);
      // Interrupt when used_event lies in (old, now]: the driver asked to hear about that entry.
      return ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
    }
    return (this.memory.readU16(cfg.driverAddr) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }
}
