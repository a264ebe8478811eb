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
/** An indirect table may hold more entries than the ring, but not without limit. */
export const MAX_INDIRECT_ENTRIES = 1024;

/** A guest broke the virtqueue rules; `details.reason` names which one. */
export class VirtqueueError extends HangarError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('INVALID_ARGUMENT', message, details);
    this.name = 'VirtqueueError';
  }
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
 * Device side of one split virtqueue. `configure` checks the layout once;
 * `pop` walks the next available chain; `pushUsed` returns it; and
 * `needsInterrupt` applies the driver's event suppression.
 */
export class Virtqueue {
  private cfg: QueueConfig | null = null;
  private lastAvail = 0;
  private usedIdx = 0;
  /** Used index at the moment we last decided whether to interrupt (event-idx). */
  private signalledUsed = 0;
  private eventIdx = false;
  private indirect = false;

  constructor(
    readonly index: number,
    readonly maxSize: number,
    private readonly memory: GuestMemory,
  ) {}

  get size(): number {
    return this.cfg?.size ?? 0;
  }

  get ready(): boolean {
    return this.cfg !== null;
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
    this.cfg = { ...cfg };
    this.eventIdx = features.eventIdx;
    this.indirect = features.indirect;
    this.lastAvail = 0;
    this.usedIdx = 0;
    this.signalledUsed = 0;
  }

  reset(): void {
    this.cfg = null;
    this.lastAvail = 0;
    this.usedIdx = 0;
    this.signalledUsed = 0;
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

  private requireConfig(): QueueConfig {
    if (!this.cfg) throw new VirtqueueError(`queue ${this.index} is not ready`, { reason: 'queue-not-ready', queue: this.index });
    return this.cfg;
  }

  /** How many chains the driver has made available that we have not taken yet. */
  pending(): number {
    const cfg = this.cfg;
    if (!cfg) return 0;
    const availIdx = this.memory.readU16(cfg.driverAddr + 2n);
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
    if (this.pending() === 0) return null;
    const cfg = this.requireConfig();
    const slot = this.lastAvail % cfg.size;
    const head = this.memory.readU16(cfg.driverAddr + 4n + BigInt(2 * slot));
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    if (this.eventIdx) {
      // avail_event: ask the driver to notify us when it posts past what we have taken.
      this.memory.writeU16(cfg.deviceAddr + 4n + BigInt(8 * cfg.size), this.lastAvail);
    }
    return this.walk(cfg, head);
  }

  /** Follows a chain from `head`, checking every descriptor. */
  private walk(cfg: QueueConfig, head: number): DescriptorChain {
    if (head >= cfg.size) {
      throw new VirtqueueError(`queue ${this.index}: available ring names descriptor ${head}, beyond the queue size ${cfg.size}`, { reason: 'head-index', queue: this.index, head });
    }
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
      const at = table + BigInt(DESC_SIZE * idx);
      const details = { queue: this.index, head, desc: idx, indirect: inIndirect };
      const [addr, len, flags, next] = this.guard(() => [
        this.memory.readU64(at),
        this.memory.readU32(at + 8n),
        this.memory.readU16(at + 12n),
        this.memory.readU16(at + 14n),
      ] as const, 'descriptor-outside-memory', details);

      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirect) throw new VirtqueueError(`queue ${this.index}: indirect descriptor without VIRTIO_F_INDIRECT_DESC`, { reason: 'indirect-not-negotiated', ...details });
        if (inIndirect) throw new VirtqueueError(`queue ${this.index}: indirect descriptor inside an indirect table`, { reason: 'indirect-nested', ...details });
        if (flags & VIRTQ_DESC_F_NEXT) throw new VirtqueueError(`queue ${this.index}: indirect descriptor also has NEXT`, { reason: 'indirect-next', ...details });
        if (len === 0 || len % DESC_SIZE !== 0 || len / DESC_SIZE > MAX_INDIRECT_ENTRIES) {
          throw new VirtqueueError(`queue ${this.index}: indirect table length ${len} is not 16..${MAX_INDIRECT_ENTRIES * DESC_SIZE} in steps of 16`, { reason: 'indirect-length', len, ...details });
        }
        if (addr % 16n !== 0n) throw new VirtqueueError(`queue ${this.index}: indirect table at ${hex(addr)} is misaligned`, { reason: 'indirect-alignment', ...details });
        this.guard(() => this.memory.slice(addr, len), 'indirect-outside-memory', { addr: hex(addr), len, ...details });
        table = addr;
        tableSize = len / DESC_SIZE;
        inIndirect = true;
        idx = 0;
        seen = 0;
        continue;
      }

      const view = len === 0 ? new Uint8Array(0) : this.guard(() => this.memory.slice(addr, len), 'buffer-outside-memory', { addr: hex(addr), len, ...details });
      if (flags & VIRTQ_DESC_F_WRITE) {
        writable.push(view);
      } else {
        if (writable.length > 0) {
          throw new VirtqueueError(`queue ${this.index}: device-readable descriptor after a device-writable one`, { reason: 'readable-after-writable', ...details });
        }
        readable.push(view);
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      if (next >= tableSize) {
        throw new VirtqueueError(`queue ${this.index}: descriptor ${idx} points to ${next}, beyond its table of ${tableSize}`, { reason: 'next-index', next, ...details });
      }
      idx = next;
    }
    return new DescriptorChain(head, readable, writable);
  }

  /** Returns a chain to the driver, saying how many bytes the device wrote into it. */
  pushUsed(head: number, written: number): void {
    const cfg = this.requireConfig();
    const slot = this.usedIdx % cfg.size;
    const elem = cfg.deviceAddr + 4n + BigInt(8 * slot);
    this.memory.writeU32(elem, head);
    this.memory.writeU32(elem + 4n, written >>> 0);
    // The element must be in place before the index that publishes it; our
    // stores land in program order, and x86 keeps that order for the guest.
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    this.memory.writeU16(cfg.deviceAddr + 2n, this.usedIdx);
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
    if (this.eventIdx) {
      const usedEvent = this.memory.readU16(cfg.driverAddr + 4n + BigInt(2 * cfg.size));
      // Interrupt when used_event lies in (old, now]: the driver asked to hear about that entry.
      return ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
    }
    return (this.memory.readU16(cfg.driverAddr) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }
}
