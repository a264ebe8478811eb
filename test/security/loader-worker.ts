/**
 * Runs the kernel loader on hostile images inside a worker thread, so the
 * test thread can end it when the loader stops making progress (a loader
 * stuck in a loop cannot be interrupted on its own thread). Guest RAM here
 * is a plain buffer whose accessors record any access outside it instead of
 * clamping, so "never writes outside guest RAM" is checked, not assumed.
 *
 * Messages: {t:'progress', seed}, then {t:'done', loaded, refused} or {t:'fail', seed, message}.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { HangarError } from '../../src/common/errors.js';
import { loadLinux } from '../../src/vmm/boot/loader.js';
import type { GuestRam } from '../../src/vmm/memory.js';
import { Rng } from '../helpers/fuzz.js';

export interface LoaderJob {
  /** One image to load once, or a fuzz run over mutations of the seed images. */
  kind: 'one' | 'fuzz';
  kernel?: string;
  elf?: string;
  bz?: string;
  dir: string;
  base?: number;
  iterations?: number;
  memBytes: number;
}

/** Guest RAM as the loader uses it, over a Buffer; anything out of range is a test failure, not a clamp. */
class CheckedRam {
  readonly bytes: Buffer;
  outside: string | null = null;
  constructor(readonly size: number) { this.bytes = Buffer.alloc(size); }
  private at(gpa: number | bigint, len: number): number {
    const g = Number(gpa);
    if (!Number.isSafeInteger(g) || g < 0 || !Number.isInteger(len) || len < 0 || g + len > this.size) {
      this.outside = `access at 0x${g.toString(16)}+${len} outside guest RAM of ${this.size} bytes`;
      throw new Error(this.outside);
    }
    return g;
  }
  slice(gpa: number | bigint, len: number): Uint8Array { const o = this.at(gpa, len); return this.bytes.subarray(o, o + len); }
  write(gpa: number | bigint, data: Uint8Array): void { this.bytes.set(data, this.at(gpa, data.length)); }
  writeU64(gpa: number | bigint, v: bigint): void { this.bytes.writeBigUInt64LE(BigInt.asUintN(64, v), this.at(gpa, 8)); }
  readU8(gpa: number | bigint): number { return this.bytes[this.at(gpa, 1)]!; }
}

const u64 = (r: Rng): bigint => (BigInt(r.edgyU32()) << 32n) | BigInt(r.edgyU32());

/** A mutation of a valid ELF that goes for the fields the loader trusts: headers, program headers, notes. */
function mutateElf(r: Rng, elf: Buffer): Buffer {
  const img = Buffer.from(elf);
  const phoff = Number(img.readBigUInt64LE(32));
  const phnum = img.readUInt16LE(56);
  const rounds = 1 + r.int(4);
  for (let k = 0; k < rounds; k++) {
    const ph = phoff + 56 * r.int(Math.max(1, phnum));
    switch (r.int(14)) {
      case 0: img.writeBigUInt64LE(u64(r), 32); break; // e_phoff
      case 1: img.writeUInt16LE(r.edgyU32() & 0xffff, 54); break; // e_phentsize
      case 2: img.writeUInt16LE(r.edgyU32() & 0xffff, 56); break; // e_phnum
      case 3: img.writeBigUInt64LE(u64(r), 24); break; // e_entry
      case 4: if (ph + 48 <= img.length) img.writeUInt32LE(r.pick([1, 4, r.edgyU32()]), ph); break; // p_type
      case 5: if (ph + 48 <= img.length) img.writeBigUInt64LE(u64(r), ph + 8 + 8 * r.int(5)); break; // offset/vaddr/paddr/filesz/memsz
      case 6: case 12: case 13: { // a PT_NOTE's note header: namesz, descsz, type
        for (let i = 0; i < phnum; i++) {
          const o = phoff + 56 * i;
          if (o + 56 > img.length || img.readUInt32LE(o) !== 4) continue;
          const n = Number(img.readBigUInt64LE(o + 8));
          if (n + 12 > img.length) continue;
          img.writeUInt32LE(r.edgyU32(), n);
          if (r.bool()) img.writeUInt32LE(r.edgyU32(), n + 4);
          if (r.bool()) img.writeUInt32LE(r.edgyU32(), n + 8);
        }
        break;
      }
      case 7: return img.subarray(0, r.int(img.length)); // truncated
      case 8: img[r.int(4)] = r.u32() & 0xff; break; // magic
      default: img[r.int(img.length)] = r.u32() & 0xff; break; // any byte
    }
  }
  return img;
}

/** A mutation of a valid bzImage: setup sectors, protocol version, flags, sizes the loader sizes memory by. */
function mutateBz(r: Rng, bz: Buffer): Buffer {
  const img = Buffer.from(bz);
  const rounds = 1 + r.int(4);
  for (let k = 0; k < rounds; k++) {
    switch (r.int(10)) {
      case 0: img[0x1f1] = r.u32() & 0xff; break; // setup_sects
      case 1: img.writeUInt16LE(r.edgyU32() & 0xffff, 0x206); break; // version
      case 2: img.writeUInt16LE(r.edgyU32() & 0xffff, 0x236); break; // xloadflags
      case 3: img.writeUInt32LE(r.edgyU32(), 0x260); break; // init_size
      case 4: img.writeUInt32LE(r.edgyU32(), 0x238); break; // cmdline_size
      case 5: img.writeUInt32LE(r.edgyU32(), 0x22c); break; // initrd_addr_max
      case 6: img[0x201] = r.u32() & 0xff; break; // header length
      case 7: return img.subarray(0, r.int(img.length)); // truncated
      default: img[0x1f0 + r.int(0x80)] = r.u32() & 0xff; break; // anywhere in the header
    }
  }
  return img;
}

function loadOnce(job: LoaderJob, kernel: string, initrd: string | undefined, cmdline: string): 'loaded' | 'refused' {
  const mem = new CheckedRam(job.memBytes);
  try {
    const k = loadLinux(mem as unknown as GuestRam, { kernelPath: kernel, ...(initrd ? { initrdPath: initrd } : {}), cmdline });
    if (!(k.entry >= k.start && k.entry < k.end && k.end <= mem.size)) throw new Error(`loaded kernel with entry 0x${k.entry.toString(16)} outside [0x${k.start.toString(16)}, 0x${k.end.toString(16)})`);
    if (k.initrd && (k.initrd.addr < k.end || k.initrd.addr + k.initrd.size > mem.size)) throw new Error('initrd placed over the kernel or past RAM');
    return 'loaded';
  } catch (e) {
    if (mem.outside) throw new Error(mem.outside);
    if (e instanceof HangarError) return 'refused';
    throw new Error(`loader threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)} instead of a HangarError`);
  }
}

function main(): void {
  const job = workerData as LoaderJob;
  const port = parentPort!;
  if (job.kind === 'one') {
    try {
      port.postMessage({ t: 'done', result: loadOnce(job, job.kernel!, undefined, 'console=ttyS0') });
    } catch (e) {
      port.postMessage({ t: 'fail', seed: -1, message: (e as Error).message });
    }
    return;
  }
  const elf = fs.readFileSync(job.elf!);
  const bz = fs.readFileSync(job.bz!);
  const kernel = path.join(job.dir, 'kernel');
  const initrd = path.join(job.dir, 'initrd');
  const counts = { loaded: 0, refused: 0 };
  for (let i = 0; i < job.iterations!; i++) {
    const seed = (job.base! + i * 0x9e3779b1) >>> 0;
    port.postMessage({ t: 'progress', seed });
    const r = new Rng(seed);
    const img = r.int(8) === 0 ? r.bytes(r.int(4096)) : r.bool() ? mutateElf(r, elf) : mutateBz(r, bz);
    fs.writeFileSync(kernel, img);
    const withInitrd = r.int(3) === 0;
    if (withInitrd) fs.writeFileSync(initrd, r.bytes(r.pick([0, 1, 4096, 100_000])));
    const cmdline = 'x'.repeat(r.pick([0, 10, 255, 2047, 4095, 5000]));
    try {
      counts[loadOnce(job, kernel, withInitrd ? initrd : undefined, cmdline)]++;
    } catch (e) {
      port.postMessage({ t: 'fail', seed, message: (e as Error).message });
      return;
    }
  }
  port.postMessage({ t: 'done', ...counts });
}

main();
