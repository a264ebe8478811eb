/**
 * Test doubles for the virtio unit tests: guest memory in a plain
 * Uint8Array, an interrupt line that records what it was told, and a tiny
 * virtio-mmio driver that speaks the register protocol and builds split
 * rings the way a guest would (and, on request, the way a hostile one would).
 */
import { GuestMemoryError, type GuestMemory, type IrqLine } from '../../src/vmm/devices/device.js';
import { REG, STATUS, VirtioMmioDevice } from '../../src/vmm/virtio/mmio.js';
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../src/vmm/virtio/queue.js';

export class TestMemory implements GuestMemory {
  readonly bytes: Uint8Array;
  private readonly dv: DataView;
  constructor(readonly size: number) {
    this.bytes = new Uint8Array(size);
    this.dv = new DataView(this.bytes.buffer);
  }
  private at(gpa: number | bigint, len: number): number {
    const g = BigInt(gpa);
    if (g < 0n || len < 0 || g + BigInt(len) > BigInt(this.size)) throw new GuestMemoryError(g, len);
    return Number(g);
  }
  slice(gpa: number | bigint, len: number): Uint8Array {
    const o = this.at(gpa, len);
    return this.bytes.subarray(o, o + len);
  }
  readU16(gpa: number | bigint): number { return this.dv.getUint16(this.at(gpa, 2), true); }
  readU32(gpa: number | bigint): number { return this.dv.getUint32(this.at(gpa, 4), true); }
  readU64(gpa: number | bigint): bigint { return this.dv.getBigUint64(this.at(gpa, 8), true); }
  writeU16(gpa: number | bigint, v: number): void { this.dv.setUint16(this.at(gpa, 2), v, true); }
  writeU32(gpa: number | bigint, v: number): void { this.dv.setUint32(this.at(gpa, 4), v >>> 0, true); }
  writeU64(gpa: number | bigint, v: bigint): void { this.dv.setBigUint64(this.at(gpa, 8), v, true); }
}

export class RecordingIrq implements IrqLine {
  level = false;
  raises = 0;
  pulses = 0;
  constructor(readonly gsi = 5) {}
  pulse(): void { this.pulses++; }
  set(level: boolean): void {
    if (level && !this.level) this.raises++;
    this.level = level;
  }
}

export interface Buf {
  addr: number | bigint;
  len: number;
  write?: boolean;
}

interface QueueLayout {
  size: number;
  desc: number;
  avail: number;
  used: number;
  nextDesc: number;
  availIdx: number;
  seenUsed: number;
}

/** Where the fixture driver puts each queue's rings: 16 KiB per queue from 64 KiB up. */
export const RING_BASE = 0x10000;
/** First byte of guest memory the tests use for data buffers. */
export const DATA_BASE = 0x80000;

export class TestDriver {
  readonly queues: QueueLayout[] = [];
  constructor(readonly dev: VirtioMmioDevice, readonly mem: TestMemory) {}

  read(reg: number): number {
    const d = new Uint8Array(4);
    this.dev.mmioRead(reg, d);
    return new DataView(d.buffer).getUint32(0, true);
  }
  write(reg: number, v: number): void {
    const d = new Uint8Array(4);
    new DataView(d.buffer).setUint32(0, v >>> 0, true);
    this.dev.mmioWrite(reg, d);
  }
  readConfig(offset: number, len: number): Uint8Array {
    const d = new Uint8Array(len);
    this.dev.mmioRead(REG.CONFIG + offset, d);
    return d;
  }

  deviceFeatures(): bigint {
    this.write(REG.DEVICE_FEATURES_SEL, 0);
    const lo = BigInt(this.read(REG.DEVICE_FEATURES));
    this.write(REG.DEVICE_FEATURES_SEL, 1);
    const hi = BigInt(this.read(REG.DEVICE_FEATURES));
    return (hi << 32n) | lo;
  }

  /** ACKNOWLEDGE, DRIVER, features, FEATURES_OK; returns whether the device kept FEATURES_OK. */
  negotiate(features: bigint | ((offered: bigint) => bigint) = (f) => f): boolean {
    this.write(REG.STATUS, 0);
    this.write(REG.STATUS, STATUS.ACKNOWLEDGE);
    this.write(REG.STATUS, STATUS.ACKNOWLEDGE | STATUS.DRIVER);
    const want = typeof features === 'function' ? features(this.deviceFeatures()) : features;
    this.write(REG.DRIVER_FEATURES_SEL, 0);
    this.write(REG.DRIVER_FEATURES, Number(want & 0xffffffffn));
    this.write(REG.DRIVER_FEATURES_SEL, 1);
    this.write(REG.DRIVER_FEATURES, Number(want >> 32n));
    this.write(REG.STATUS, STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK);
    return (this.read(REG.STATUS) & STATUS.FEATURES_OK) !== 0;
  }

  setupQueue(index: number, size: number, at: Partial<Pick<QueueLayout, 'desc' | 'avail' | 'used'>> = {}): void {
    const base = RING_BASE + index * 0x4000;
    const q: QueueLayout = { size, desc: at.desc ?? base, avail: at.avail ?? base + 0x1000, used: at.used ?? base + 0x2000, nextDesc: 0, availIdx: 0, seenUsed: 0 };
    this.queues[index] = q;
    this.write(REG.QUEUE_SEL, index);
    this.write(REG.QUEUE_NUM, size);
    this.write(REG.QUEUE_DESC_LOW, q.desc);
    this.write(REG.QUEUE_DESC_HIGH, 0);
    this.write(REG.QUEUE_DRIVER_LOW, q.avail);
    this.write(REG.QUEUE_DRIVER_HIGH, 0);
    this.write(REG.QUEUE_DEVICE_LOW, q.used);
    this.write(REG.QUEUE_DEVICE_HIGH, 0);
    this.write(REG.QUEUE_READY, 1);
  }

  driverOk(): void {
    this.write(REG.STATUS, this.read(REG.STATUS) | STATUS.DRIVER_OK);
  }

  /** Negotiates everything offered, sets up `queues` of `size`, DRIVER_OK. */
  start(queueCount: number, size = 16, features?: bigint | ((offered: bigint) => bigint)): void {
    if (!this.negotiate(features)) throw new Error('features refused');
    for (let i = 0; i < queueCount; i++) this.setupQueue(i, size);
    this.driverOk();
  }

  /** Writes descriptor `i` of queue `qi` directly (for hostile layouts). */
  writeDesc(qi: number, i: number, d: { addr: number | bigint; len: number; flags: number; next: number }, table?: number): void {
    const at = (table ?? this.queues[qi]!.desc) + 16 * i;
    this.mem.writeU64(at, BigInt(d.addr));
    this.mem.writeU32(at + 8, d.len);
    this.mem.writeU16(at + 12, d.flags);
    this.mem.writeU16(at + 14, d.next);
  }

  /** Publishes `head` in the available ring (no kick). */
  publish(qi: number, head: number): void {
    const q = this.queues[qi]!;
    this.mem.writeU16(q.avail + 4 + 2 * (q.availIdx % q.size), head);
    q.availIdx = (q.availIdx + 1) & 0xffff;
    this.mem.writeU16(q.avail + 2, q.availIdx);
  }

  /** Builds a well-formed chain from `bufs`, publishes it, returns its head. */
  addChain(qi: number, bufs: Buf[]): number {
    const q = this.queues[qi]!;
    const idx = bufs.map(() => {
      const i = q.nextDesc;
      q.nextDesc = (q.nextDesc + 1) % q.size;
      return i;
    });
    bufs.forEach((b, k) => {
      const last = k === bufs.length - 1;
      this.writeDesc(qi, idx[k]!, { addr: b.addr, len: b.len, flags: (b.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT), next: last ? 0 : idx[k + 1]! });
    });
    this.publish(qi, idx[0]!);
    return idx[0]!;
  }

  kick(qi: number): void {
    this.write(REG.QUEUE_NOTIFY, qi);
  }

  /** Used-ring entries the device added since the last call. */
  takeUsed(qi: number): Array<{ id: number; len: number }> {
    const q = this.queues[qi]!;
    const idx = this.mem.readU16(q.used + 2);
    const out: Array<{ id: number; len: number }> = [];
    while (q.seenUsed !== idx) {
      const e = q.used + 4 + 8 * (q.seenUsed % q.size);
      out.push({ id: this.mem.readU32(e), len: this.mem.readU32(e + 4) });
      q.seenUsed = (q.seenUsed + 1) & 0xffff;
    }
    return out;
  }

  ackInterrupts(): number {
    const s = this.read(REG.INTERRUPT_STATUS);
    this.write(REG.INTERRUPT_ACK, s);
    return s;
  }
}
