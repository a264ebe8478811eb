/**
 * Guest RAM: one mapping registered with KVM as memory slot 0 at
 * guest-physical 0 — anonymous for a booted VM, a private (copy-on-write)
 * mapping of a snapshot's memory file for a restored one, so restoring
 * reads nothing up front: pages come from the file as the guest touches
 * them — and a bounds-checked GuestMemory view of it for device models and
 * loaders. Every access checks [gpa, gpa+len) against the size,
 * because addresses come from the guest and are hostile.
 */
import { GuestMemoryError, type GuestMemory } from './devices/device.js';
import { libc, mapResult, MAP_ANONYMOUS, MAP_NORESERVE, MAP_PRIVATE, PROT_READ, PROT_WRITE, viewOf, errno } from '../kvm/libc.js';
import { KvmError } from '../kvm/errors.js';

export class GuestRam implements GuestMemory {
  readonly bytes: Uint8Array;
  private readonly dv: DataView;
  private readonly sizeBig: bigint;

  /**
   * 'anonymous': a page never touched is zero. 'file': a page never touched holds the file's
   * bytes (a restored VM), so only reading it tells what is in it.
   */
  private constructor(readonly hostAddr: number, readonly size: number, readonly backing: 'anonymous' | 'file' = 'anonymous') {
    this.bytes = new Uint8Array(viewOf(hostAddr, size));
    this.dv = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
    this.sizeBig = BigInt(size);
  }

  /**
   * A second view of RAM another thread of this process has mapped (a vCPU thread serving a
   * virtio queue, virtio/blk-fast.ts): same bounds checks, never unmapped from here.
   */
  static attach(hostAddr: number, size: number): GuestRam {
    return new GuestRam(hostAddr, size);
  }

  /** Maps `size` bytes of zeroed anonymous memory (pages are allocated on first touch). */
  static allocate(size: number): GuestRam {
    const addr = mapResult(libc.mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (addr === null) throw new KvmError(`mmap guest RAM (${size} bytes)`, errno(), 'RESOURCE_EXHAUSTED');
    return new GuestRam(addr, size);
  }

  /**
   * Maps `size` bytes of the open file `fd` from `offset` (page aligned) privately: reads come
   * from the file as pages are first touched, writes stay in this process (copy on write), the
   * file never changes. The caller may close `fd` afterwards.
   */
  static mapPrivateFile(fd: number, offset: number, size: number): GuestRam {
    const addr = mapResult(libc.mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, offset));
    if (addr === null) throw new KvmError(`mmap guest memory file (${size} bytes)`, errno(), 'RESOURCE_EXHAUSTED');
    return new GuestRam(addr, size, 'file');
  }

  /**
   * Checks [gpa, gpa+len) and returns gpa as a number. This runs for every
   * descriptor and ring access of every virtqueue, so the in-range cases avoid
   * BigInt arithmetic: a bigint address is compared once against the size and
   * then handled as a number (RAM is far below 2^53).
   */
  private at(gpa: number | bigint, len: number): number {
    if (Number.isInteger(len) && len >= 0) {
      if (typeof gpa === 'number') {
        if (Number.isSafeInteger(gpa) && gpa >= 0 && gpa + len <= this.size) return gpa;
      } else if (gpa >= 0n && gpa <= this.sizeBig) {
        const g = Number(gpa);
        if (g + len <= this.size) return g;
      }
    }
    const g = typeof gpa === 'bigint' ? gpa : Number.isFinite(gpa) ? BigInt(Math.trunc(gpa)) : 0n;
    throw new GuestMemoryError(g < 0n ? 0n : g, len);
  }

  contains(gpa: number | bigint, len: number): boolean {
    try { this.at(gpa, len); return true; } catch { return false; }
  }

  slice(gpa: number | bigint, len: number): Uint8Array {
    const o = this.at(gpa, len);
    return this.bytes.subarray(o, o + len);
  }
  readU8(gpa: number | bigint): number { return this.bytes[this.at(gpa, 1)]!; }
  readU16(gpa: number | bigint): number { return this.dv.getUint16(this.at(gpa, 2), true); }
  readU32(gpa: number | bigint): number { return this.dv.getUint32(this.at(gpa, 4), true); }
  readU64(gpa: number | bigint): bigint { return this.dv.getBigUint64(this.at(gpa, 8), true); }
  writeU8(gpa: number | bigint, v: number): void { this.bytes[this.at(gpa, 1)] = v; }
  writeU16(gpa: number | bigint, v: number): void { this.dv.setUint16(this.at(gpa, 2), v, true); }
  writeU32(gpa: number | bigint, v: number): void { this.dv.setUint32(this.at(gpa, 4), v >>> 0, true); }
  writeU64(gpa: number | bigint, v: bigint): void { this.dv.setBigUint64(this.at(gpa, 8), BigInt.asUintN(64, v), true); }
  /** Copies `data` into guest memory at `gpa`. */
  write(gpa: number | bigint, data: Uint8Array): void { this.bytes.set(data, this.at(gpa, data.length)); }

  /** Bytes of guest RAM currently backed by host memory (pages the guest or a loader touched). */
  residentBytes(): number {
    const pages = Math.ceil(this.size / 4096);
    const vec = Buffer.alloc(pages);
    if (libc.mincore(this.hostAddr, this.size, vec) !== 0) return NaN;
    let n = 0;
    for (let i = 0; i < pages; i++) n += vec[i]! & 1;
    return n * 4096;
  }

  free(): void {
    libc.munmap(this.hostAddr, this.size);
  }
}
