/**
 * The guest-memory file of a snapshot: a 4 KiB header page, then guest RAM
 * byte for byte from guest-physical 0, so a restore can map it privately at
 * offset 4096 and let pages come in as the guest touches them.
 *
 *   0   8   magic "HGVMMEM1"
 *   8   4   version (1)
 *   12  4   header size (4096)
 *   16  8   guest memory size in bytes
 *   24  16  snapshot id: the same 16 bytes are in the snapshot file's manifest,
 *           so a snapshot is never restored over the memory of another one
 *
 * Writing skips what is zero: for anonymous RAM, pages the guest never
 * touched (neither present nor swapped, from /proc/self/pagemap) are not
 * even read; everything else is written in 64 KiB blocks unless the block
 * is all zero. Skipped ranges stay holes in a sparse file, which read as
 * zeros. The file is written under a temporary name and renamed into place
 * when complete, so a failure leaves any older file at that path intact.
 */
import fs from 'node:fs';
import { HangarError } from '../../common/errors.js';
import { GuestRam } from '../memory.js';

export const MEM_MAGIC = 'HGVMMEM1';
export const MEM_VERSION = 1;
export const MEM_HEADER_SIZE = 4096;
const PAGE = 4096;
const BLOCK = 64 * 1024;
/** Pages per pagemap read (2 MiB of guest memory). */
const PAGEMAP_BATCH = 512;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

export interface MemoryWriteResult {
  /** Guest bytes actually written (the rest are holes). */
  dataBytes: number;
  /** Bytes of guest memory skipped without reading (never-touched anonymous pages). */
  untouchedBytes: number;
}

/** A sibling temporary name, renamed over `path` once complete. */
export function tempPathFor(path: string): string {
  return `${path}.tmp-${process.pid}-${Date.now().toString(36)}`;
}

/** For each page in [addr, addr+pages*4096): true when it may hold data (present or swapped); null when pagemap cannot be read. */
class PageMap {
  private readonly fd: number | null;
  private readonly buf = Buffer.alloc(PAGEMAP_BATCH * 8);
  constructor() {
    let fd: number | null = null;
    try { fd = fs.openSync('/proc/self/pagemap', 'r'); } catch { fd = null; }
    this.fd = fd;
  }

  /** Whether any of `pages` pages from host address `addr` is present or swapped out; true when unknown. */
  anyPopulated(addr: number, pages: number): boolean {
    if (this.fd === null) return true;
    for (let done = 0; done < pages; done += PAGEMAP_BATCH) {
      const n = Math.min(PAGEMAP_BATCH, pages - done);
      let got: number;
      try { got = fs.readSync(this.fd, this.buf, 0, n * 8, (addr / PAGE + done) * 8); } catch { return true; }
      if (got !== n * 8) return true;
      for (let i = 0; i < n; i++) {
        // Bit 63: present; bit 62: swapped. The top byte holds both.
        if ((this.buf[i * 8 + 7]! & 0xc0) !== 0) return true;
      }
    }
    return false;
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
  }
}

function header(size: number, id: Buffer): Buffer {
  const h = Buffer.alloc(MEM_HEADER_SIZE);
  h.write(MEM_MAGIC, 0, 'ascii');
  h.writeUInt32LE(MEM_VERSION, 8);
  h.writeUInt32LE(MEM_HEADER_SIZE, 12);
  h.writeBigUInt64LE(BigInt(size), 16);
  id.copy(h, 24);
  return h;
}

/** Writes guest RAM to `tmpPath` (a new file, 0600) with its header; the caller renames it into place. */
export function writeMemoryFile(mem: GuestRam, tmpPath: string, id: Buffer): MemoryWriteResult {
  const fd = fs.openSync(tmpPath, 'wx', 0o600);
  const pm = mem.backing === 'anonymous' ? new PageMap() : null;
  let dataBytes = 0;
  let untouchedBytes = 0;
  try {
    fs.writeSync(fd, header(mem.size, id), 0, MEM_HEADER_SIZE, 0);
    const chunk = PAGEMAP_BATCH * PAGE;
    for (let at = 0; at < mem.size; at += chunk) {
      const len = Math.min(chunk, mem.size - at);
      if (pm && !pm.anyPopulated(mem.hostAddr + at, Math.ceil(len / PAGE))) { untouchedBytes += len; continue; }
      for (let b = at; b < at + len; b += BLOCK) {
        const n = Math.min(BLOCK, at + len - b);
        const view = Buffer.from(mem.bytes.buffer, mem.bytes.byteOffset + b, n);
        if (n === BLOCK ? view.equals(ZERO_BLOCK) : view.equals(ZERO_BLOCK.subarray(0, n))) continue;
        let off = 0;
        while (off < n) off += fs.writeSync(fd, view, off, n - off, MEM_HEADER_SIZE + b + off);
        dataBytes += n;
      }
    }
    fs.ftruncateSync(fd, MEM_HEADER_SIZE + mem.size);
    fs.fsyncSync(fd);
  } finally {
    pm?.close();
    fs.closeSync(fd);
  }
  return { dataBytes, untouchedBytes };
}

/**
 * Opens a memory file and maps its guest memory privately (nothing is read
 * but the header). Refuses a file whose header, size or snapshot id does not
 * match what the snapshot expects.
 */
export function mapMemoryFile(path: string, expectSize: number, expectId: Buffer): GuestRam {
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new HangarError(code === 'ENOENT' ? 'NOT_FOUND' : 'INVALID_ARGUMENT', `memory file ${path}: ${code ?? (e as Error).message}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new HangarError('INVALID_ARGUMENT', `memory file ${path} is not a regular file`);
    const h = Buffer.alloc(MEM_HEADER_SIZE);
    const got = st.size >= MEM_HEADER_SIZE ? fs.readSync(fd, h, 0, MEM_HEADER_SIZE, 0) : 0;
    const bad = (msg: string) => new HangarError('INVALID_ARGUMENT', `memory file ${path}: ${msg}`);
    if (got !== MEM_HEADER_SIZE) throw bad(`${st.size} bytes is shorter than its header`);
    if (h.toString('latin1', 0, 8) !== MEM_MAGIC) throw bad('not a hangar-vmm memory file (bad magic)');
    if (h.readUInt32LE(8) !== MEM_VERSION || h.readUInt32LE(12) !== MEM_HEADER_SIZE) throw bad(`version ${h.readUInt32LE(8)} / header size ${h.readUInt32LE(12)} not supported`);
    const size = h.readBigUInt64LE(16);
    if (size !== BigInt(expectSize)) throw bad(`holds ${size} bytes of guest memory, the snapshot has ${expectSize}`);
    if (!h.subarray(24, 40).equals(expectId)) throw bad('belongs to a different snapshot (snapshot id differs)');
    if (st.size !== MEM_HEADER_SIZE + expectSize) throw bad(`is ${st.size} bytes, expected ${MEM_HEADER_SIZE + expectSize} (truncated?)`);
    return GuestRam.mapPrivateFile(fd, MEM_HEADER_SIZE, expectSize);
  } finally {
    fs.closeSync(fd);
  }
}
