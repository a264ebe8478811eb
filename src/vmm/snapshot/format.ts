/**
 * The container of a hangar-vmm snapshot file: a fixed header, a table of
 * named sections, then the sections' bytes. Everything after the header is
 * covered by one SHA-256 kept in the header, so a flipped bit anywhere is
 * found before any byte of it is believed.
 *
 *   offset  size  field
 *   0       8     magic "HGVMSNAP"
 *   8       4     format version (u32 LE), SNAPSHOT_FORMAT_VERSION
 *   12      4     header size (64)
 *   16      4     section count
 *   20      4     flags (0)
 *   24      8     file size in bytes (u64 LE)
 *   32      32    SHA-256 of bytes [64, file size)
 *   64      32×n  section table: name (16 bytes ASCII, NUL-padded), offset (u64), length (u64)
 *   …             section bytes, in table order, contiguous, no gaps or overlaps
 *
 * A snapshot file is hostile input (it may have been truncated, edited or
 * made by someone else): decodeSnapshotFile checks every size, count and
 * offset against the file and the limits below, and answers one clear
 * INVALID_ARGUMENT HangarError naming what is wrong.
 */
import { createHash } from 'node:crypto';
import { HangarError } from '../../common/errors.js';

export const SNAPSHOT_MAGIC = 'HGVMSNAP';
export const SNAPSHOT_FORMAT_VERSION = 1;
export const HEADER_SIZE = 64;
export const TABLE_ENTRY_SIZE = 32;
export const SECTION_NAME_MAX = 16;
/** More sections than a 32-vCPU VM with every state kind needs (~13 per vCPU). */
export const MAX_SECTIONS = 1024;
/** The state file holds no guest memory: a few hundred KiB at most; this bounds what a load reads. */
export const MAX_SNAPSHOT_FILE = 64 * 1024 * 1024;

export type Sections = Map<string, Buffer>;

function bad(msg: string): HangarError {
  return new HangarError('INVALID_ARGUMENT', `snapshot file: ${msg}`);
}

const NAME_RE = /^[a-z0-9][a-z0-9._/-]{0,15}$/;

/** Lays out `sections` (in insertion order) behind a header and table, with the checksum. */
export function encodeSnapshotFile(sections: Sections): Buffer {
  if (sections.size > MAX_SECTIONS) throw new HangarError('INTERNAL', `snapshot has ${sections.size} sections (max ${MAX_SECTIONS})`);
  const tableEnd = HEADER_SIZE + sections.size * TABLE_ENTRY_SIZE;
  let size = tableEnd;
  for (const [name, data] of sections) {
    if (!NAME_RE.test(name)) throw new HangarError('INTERNAL', `snapshot section name "${name}" is not allowed`);
    size += data.length;
  }
  const out = Buffer.alloc(size);
  out.write(SNAPSHOT_MAGIC, 0, 'ascii');
  out.writeUInt32LE(SNAPSHOT_FORMAT_VERSION, 8);
  out.writeUInt32LE(HEADER_SIZE, 12);
  out.writeUInt32LE(sections.size, 16);
  out.writeUInt32LE(0, 20);
  out.writeBigUInt64LE(BigInt(size), 24);
  let at = tableEnd;
  let i = 0;
  for (const [name, data] of sections) {
    const e = HEADER_SIZE + i * TABLE_ENTRY_SIZE;
    out.write(name, e, 'ascii');
    out.writeBigUInt64LE(BigInt(at), e + 16);
    out.writeBigUInt64LE(BigInt(data.length), e + 24);
    data.copy(out, at);
    at += data.length;
    i++;
  }
  createHash('sha256').update(out.subarray(HEADER_SIZE)).digest().copy(out, 32);
  return out;
}

/** Reads the header and table of a snapshot file and returns its sections; refuses anything malformed. */
export function decodeSnapshotFile(file: Buffer): Sections {
  if (file.length < HEADER_SIZE) throw bad(`${file.length} bytes is shorter than its ${HEADER_SIZE}-byte header (truncated?)`);
  if (file.toString('latin1', 0, 8) !== SNAPSHOT_MAGIC) throw bad('not a hangar-vmm snapshot (bad magic)');
  const version = file.readUInt32LE(8);
  if (version !== SNAPSHOT_FORMAT_VERSION) throw bad(`format version ${version} is not supported (this hangar-vmm reads version ${SNAPSHOT_FORMAT_VERSION})`);
  const headerSize = file.readUInt32LE(12);
  if (headerSize !== HEADER_SIZE) throw bad(`header size ${headerSize} is not ${HEADER_SIZE}`);
  const count = file.readUInt32LE(16);
  if (count === 0 || count > MAX_SECTIONS) throw bad(`section count ${count} is not between 1 and ${MAX_SECTIONS}`);
  if (file.readUInt32LE(20) !== 0) throw bad(`unknown flags 0x${file.readUInt32LE(20).toString(16)}`);
  const declared = file.readBigUInt64LE(24);
  if (declared !== BigInt(file.length)) throw bad(`header says ${declared} bytes, the file has ${file.length} (truncated or extended)`);
  const digest = createHash('sha256').update(file.subarray(HEADER_SIZE)).digest();
  if (!digest.equals(file.subarray(32, 64))) throw bad('checksum mismatch (the file is corrupted)');
  const tableEnd = HEADER_SIZE + count * TABLE_ENTRY_SIZE;
  if (tableEnd > file.length) throw bad(`section table of ${count} entries runs past the end of the file`);
  const sections: Sections = new Map();
  let expect = tableEnd;
  for (let i = 0; i < count; i++) {
    const e = HEADER_SIZE + i * TABLE_ENTRY_SIZE;
    const raw = file.subarray(e, e + SECTION_NAME_MAX);
    const nul = raw.indexOf(0);
    const name = raw.toString('latin1', 0, nul < 0 ? SECTION_NAME_MAX : nul);
    if (!NAME_RE.test(name) || (nul >= 0 && raw.subarray(nul).some((b) => b !== 0))) throw bad(`section ${i} has an invalid name`);
    if (sections.has(name)) throw bad(`section "${name}" appears twice`);
    const off = file.readBigUInt64LE(e + 16);
    const len = file.readBigUInt64LE(e + 24);
    if (off !== BigInt(expect)) throw bad(`section "${name}" starts at ${off}, expected ${expect} (sections must follow each other)`);
    if (len > BigInt(file.length - expect)) throw bad(`section "${name}" (${len} bytes at ${off}) runs past the end of the file`);
    const n = Number(len);
    sections.set(name, file.subarray(expect, expect + n));
    expect += n;
  }
  if (expect !== file.length) throw bad(`${file.length - expect} bytes after the last section`);
  return sections;
}

/** One section, required, of exactly `size` bytes when given. */
export function section(sections: Sections, name: string, size?: number): Buffer {
  const b = sections.get(name);
  if (!b) throw bad(`section "${name}" is missing`);
  if (size !== undefined && b.length !== size) throw bad(`section "${name}" is ${b.length} bytes, expected ${size}`);
  return b;
}
