/**
 * What a disk image file is, read from its own bytes (never from its name
 * and never by letting qemu-img guess): the qcow2 header with its backing
 * name and header extensions, the magic numbers of image formats Hangar does
 * not take, and the signs that a raw file holds a disk (a partition table, a
 * filesystem, or a blank start) rather than something else.
 */
import fs from 'node:fs';

export const QCOW2_MAGIC = 0x514649fb;

/** Bytes read from the start of a file to tell its format (a qcow2 header and its extensions fit in one cluster). */
export const HEAD_BYTES = 64 * 1024;

const EXT_END = 0;
const EXT_BACKING_FORMAT = 0xe2792aca;
const EXT_DATA_FILE = 0x44415441;
const EXT_ENCRYPTION = 0x0537be77;

/** Incompatible feature bits this reader understands; any other set bit makes the image unreadable for us. */
export const QCOW2_INCOMPAT = { dirty: 1n << 0n, corrupt: 1n << 1n, dataFile: 1n << 2n, compressionType: 1n << 3n, extendedL2: 1n << 4n } as const;
const KNOWN_INCOMPAT = Object.values(QCOW2_INCOMPAT).reduce((a, b) => a | b, 0n);

export interface Qcow2Header {
  version: number;
  clusterBits: number;
  virtualBytes: number;
  cryptMethod: number;
  l1Entries: number;
  l1Offset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  snapshots: number;
  snapshotsOffset: number;
  incompatible: bigint;
  headerLength: number;
  /** The backing file name as stored, if any. */
  backingName?: string;
  /** The backing format from the header extension, if any. */
  backingFormat?: string;
  /** The external data file name, if any. */
  dataFileName?: string;
  /** Has a full-disk-encryption header extension. */
  encryptionExt: boolean;
  /** Problems found while reading the header (out-of-range fields); empty when sane. */
  problems: string[];
}

function u64(b: Buffer, off: number): number {
  const v = b.readBigUInt64BE(off);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

/** Reads up to `n` bytes at `pos` of an open file. */
export function readAt(fd: number, pos: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  let got = 0;
  while (got < n) {
    const r = fs.readSync(fd, b, got, n - got, pos + got);
    if (r === 0) break;
    got += r;
  }
  return b.subarray(0, got);
}

/**
 * Parses a qcow2 header from an open file of `fileBytes` bytes. Returns null
 * when the magic is not qcow2's. Range problems are collected, not thrown,
 * so the caller can name them.
 */
export function readQcow2Header(fd: number, fileBytes: number): Qcow2Header | null {
  const b = readAt(fd, 0, HEAD_BYTES);
  if (b.length < 4 || b.readUInt32BE(0) !== QCOW2_MAGIC) return null;
  const problems: string[] = [];
  if (b.length < 72) {
    return { version: 0, clusterBits: 0, virtualBytes: 0, cryptMethod: 0, l1Entries: 0, l1Offset: 0, refcountTableOffset: 0, refcountTableClusters: 0, snapshots: 0, snapshotsOffset: 0, incompatible: 0n, headerLength: 0, encryptionExt: false, problems: ['the file ends inside the qcow2 header'] };
  }
  const h: Qcow2Header = {
    version: b.readUInt32BE(4),
    clusterBits: b.readUInt32BE(20),
    virtualBytes: u64(b, 24),
    cryptMethod: b.readUInt32BE(32),
    l1Entries: b.readUInt32BE(36),
    l1Offset: u64(b, 40),
    refcountTableOffset: u64(b, 48),
    refcountTableClusters: b.readUInt32BE(56),
    snapshots: b.readUInt32BE(60),
    snapshotsOffset: u64(b, 64),
    incompatible: 0n,
    headerLength: 72,
    encryptionExt: false,
    problems,
  };
  const backingOffset = u64(b, 8);
  const backingSize = b.readUInt32BE(16);
  if (h.version !== 2 && h.version !== 3) {
    problems.push(`unknown qcow2 version ${h.version}`);
    return h;
  }
  if (h.version === 3) {
    if (b.length < 104) { problems.push('the file ends inside the qcow2 header'); return h; }
    h.incompatible = b.readBigUInt64BE(72);
    h.headerLength = b.readUInt32BE(100);
    if (h.headerLength < 104 || h.headerLength > b.length) { problems.push(`bad qcow2 header length ${h.headerLength}`); return h; }
  }
  if (h.clusterBits < 9 || h.clusterBits > 21) { problems.push(`bad cluster size 2^${h.clusterBits}`); return h; }
  const cluster = 2 ** h.clusterBits;

  // Header extensions: type, length, data padded to 8 bytes, up to an end marker, all inside the first cluster.
  let off = h.headerLength;
  const limit = Math.min(b.length, cluster);
  for (;;) {
    if (off + 8 > limit) { problems.push('qcow2 header extensions run past the first cluster'); break; }
    const type = b.readUInt32BE(off);
    const len = b.readUInt32BE(off + 4);
    if (type === EXT_END) break;
    const dataEnd = off + 8 + len;
    if (dataEnd > limit) { problems.push('a qcow2 header extension runs past the first cluster'); break; }
    const data = b.subarray(off + 8, dataEnd);
    if (type === EXT_BACKING_FORMAT) h.backingFormat = data.toString('latin1');
    else if (type === EXT_DATA_FILE) h.dataFileName = data.toString('latin1');
    else if (type === EXT_ENCRYPTION) h.encryptionExt = true;
    off = off + 8 + Math.ceil(len / 8) * 8;
  }

  if (backingOffset !== 0 || backingSize !== 0) {
    if (backingSize === 0 || backingSize > 1023 || backingOffset + backingSize > Math.min(cluster, b.length)) {
      problems.push('the backing file name lies outside the qcow2 header');
    } else {
      h.backingName = b.subarray(backingOffset, backingOffset + backingSize).toString('latin1');
    }
  }

  // Tables must lie inside the file: a cut-off image fails here before qemu-img ever reads it.
  const end = (start: number, bytes: number): number => start + bytes;
  if (h.l1Entries > 0 && end(h.l1Offset, h.l1Entries * 8) > fileBytes) problems.push('the L1 table lies beyond the end of the file (the file is truncated)');
  if (h.refcountTableClusters === 0 || end(h.refcountTableOffset, h.refcountTableClusters * cluster) > fileBytes) problems.push('the refcount table lies beyond the end of the file (the file is truncated)');
  if (h.snapshots > 0 && h.snapshotsOffset >= fileBytes) problems.push('the snapshot table lies beyond the end of the file (the file is truncated)');
  if (h.l1Offset % cluster !== 0 || h.refcountTableOffset % cluster !== 0) problems.push('qcow2 tables are not cluster-aligned');
  return h;
}

/** Incompatible feature bits set that this reader does not know. */
export function unknownIncompatibleBits(h: Qcow2Header): bigint {
  return h.incompatible & ~KNOWN_INCOMPAT;
}

/** Image formats Hangar does not take, by magic at offset 0 (qemu would read these). */
const OTHER_IMAGE_FORMATS: Array<[string, Buffer]> = [
  ['vmdk', Buffer.from('KDMV')],
  ['vmdk (descriptor)', Buffer.from('# Disk DescriptorFile')],
  ['vdi', Buffer.from('<<< ')],
  ['vhdx', Buffer.from('vhdxfile')],
  ['vpc (vhd)', Buffer.from('conectix')],
  ['qed', Buffer.from('QFI\x00', 'latin1')],
  ['parallels', Buffer.from('WithoutFreeSpace')],
  ['parallels', Buffer.from('WithouFreSpacExt')],
  ['bochs', Buffer.from('Bochs Virtual HD Image')],
  ['cloop', Buffer.from('#!/bin/sh\n#V2.0 Format')],
];

/** Files that are plainly not disks, by magic at offset 0. */
const NOT_DISKS: Array<[string, Buffer]> = [
  ['an ELF executable', Buffer.from('\x7fELF', 'latin1')],
  ['a gzip archive', Buffer.from([0x1f, 0x8b])],
  ['an xz archive', Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])],
  ['a zstd archive', Buffer.from([0x28, 0xb5, 0x2f, 0xfd])],
  ['a bzip2 archive', Buffer.from('BZh')],
  ['a zip archive', Buffer.from('PK\x03\x04', 'latin1')],
  ['a script', Buffer.from('#!')],
  ['a PNG picture', Buffer.from('\x89PNG', 'latin1')],
  ['a cpio archive', Buffer.from('070701')],
];

export type Detected =
  | { kind: 'qcow2' }
  | { kind: 'raw'; content: string }
  | { kind: 'other-image'; format: string }
  | { kind: 'not-a-disk'; what: string };

/** Why a raw file looks like a disk, or null when nothing in it says so. */
function rawContent(fd: number, head: Buffer): string | null {
  const at = (pos: number, sig: Buffer): boolean => {
    if (pos + sig.length <= head.length) return head.subarray(pos, pos + sig.length).equals(sig);
    const b = readAt(fd, pos, sig.length);
    return b.length === sig.length && b.equals(sig);
  };
  if (at(512, Buffer.from('EFI PART'))) return 'GPT partition table';
  if (head.length >= 512 && head[510] === 0x55 && head[511] === 0xaa) return 'MBR / boot sector';
  if (at(1080, Buffer.from([0x53, 0xef]))) return 'ext2/3/4 filesystem';
  if (at(0, Buffer.from('XFSB'))) return 'XFS filesystem';
  if (at(0x10040, Buffer.from('_BHRfS_M'))) return 'btrfs filesystem';
  if (at(0x8001, Buffer.from('CD001'))) return 'ISO 9660 filesystem';
  if (at(0, Buffer.from('LUKS\xba\xbe', 'latin1'))) return 'LUKS encrypted volume';
  if (at(512, Buffer.from('LABELONE'))) return 'LVM physical volume';
  if (at(0, Buffer.from('hsqs'))) return 'squashfs filesystem';
  if (at(4086, Buffer.from('SWAPSPACE2'))) return 'swap area';
  const first = head.subarray(0, Math.min(head.length, 4096));
  if (first.length > 0 && first.every((x) => x === 0)) return 'blank start';
  return null;
}

/** Tells what an open file of `fileBytes` bytes is, from its bytes. */
export function detectDiskFormat(fd: number, fileBytes: number): Detected {
  const head = readAt(fd, 0, HEAD_BYTES);
  if (head.length >= 4 && head.readUInt32BE(0) === QCOW2_MAGIC) {
    // qcow version 1 shares the magic; the version field tells them apart.
    if (head.length >= 8 && head.readUInt32BE(4) === 1) return { kind: 'other-image', format: 'qcow (version 1)' };
    return { kind: 'qcow2' };
  }
  for (const [format, sig] of OTHER_IMAGE_FORMATS) if (head.subarray(0, sig.length).equals(sig)) return { kind: 'other-image', format };
  if (head.length >= 0x44 && head.readUInt32LE(0x40) === 0xbeda107f) return { kind: 'other-image', format: 'vdi' };
  for (const [what, sig] of NOT_DISKS) if (head.subarray(0, sig.length).equals(sig)) return { kind: 'not-a-disk', what };
  if (head.length >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar') return { kind: 'not-a-disk', what: 'a tar archive' };
  if (fileBytes === 0) return { kind: 'not-a-disk', what: 'an empty file' };
  if (fileBytes % 512 !== 0) return { kind: 'not-a-disk', what: `a file of ${fileBytes} bytes (a raw disk is a whole number of 512-byte sectors)` };
  const content = rawContent(fd, head);
  if (!content) return { kind: 'not-a-disk', what: 'a file with no partition table, filesystem or blank start (random or unknown data)' };
  return { kind: 'raw', content };
}
