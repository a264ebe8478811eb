/**
 * What an imported file must look like, judged by its first bytes: a kernel
 * is an x86-64 ELF64 executable or a Linux bzImage; an initrd is a cpio
 * archive (newc, crc or odc) or data in one of the compressions Linux can
 * unpack an initramfs from. Anything else (a password file, a script, a
 * database) is refused before it is stored.
 */

export type KernelFormat = 'elf64' | 'bzimage';
export type InitrdFormat = 'cpio' | 'gzip' | 'xz' | 'zstd' | 'lz4' | 'bzip2';

/** Enough leading bytes for both checks. */
export const FORMAT_HEAD_BYTES = 0x210;

/**
 * Recognises a bootable kernel: an x86-64 ELF64 executable (ET_EXEC), as
 * hangar-vmm's test guests and an uncompressed vmlinux are, or a Linux
 * bzImage (boot sector signature 0xaa55 and the "HdrS" setup header magic).
 */
export function kernelFormat(head: Buffer): KernelFormat | null {
  if (head.length >= 20 && head.readUInt32BE(0) === 0x7f454c46) {
    // EI_CLASS 2 = 64-bit, EI_DATA 1 = little endian, e_type 2 = executable (a kernel is
    // linked at fixed addresses; a PIE program such as /bin/ls is not one), e_machine 62 = x86-64.
    return head[4] === 2 && head[5] === 1 && head.readUInt16LE(16) === 2 && head.readUInt16LE(18) === 62 ? 'elf64' : null;
  }
  if (head.length >= 0x206 && head.readUInt16LE(0x1fe) === 0xaa55 && head.readUInt32LE(0x202) === 0x53726448) return 'bzimage';
  return null;
}

const INITRD_MAGICS: Array<[InitrdFormat, Buffer]> = [
  // cpio "new ASCII" (newc), its checksummed variant, and the old portable ASCII format (odc).
  ['cpio', Buffer.from('070701', 'latin1')],
  ['cpio', Buffer.from('070702', 'latin1')],
  ['cpio', Buffer.from('070707', 'latin1')],
  ['gzip', Buffer.from([0x1f, 0x8b])],
  ['xz', Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])],
  ['zstd', Buffer.from([0x28, 0xb5, 0x2f, 0xfd])],
  // LZ4: the legacy frame the kernel's own build uses, and the standard frame.
  ['lz4', Buffer.from([0x02, 0x21, 0x4c, 0x18])],
  ['lz4', Buffer.from([0x04, 0x22, 0x4d, 0x18])],
  ['bzip2', Buffer.from('BZh', 'latin1')],
];

/** Recognises an initrd by its magic bytes, or null. */
export function initrdFormat(head: Buffer): InitrdFormat | null {
  for (const [format, magic] of INITRD_MAGICS) {
    if (head.length >= magic.length && head.subarray(0, magic.length).equals(magic)) {
      // bzip2's "BZh" is followed by the block size digit 1-9.
      if (format === 'bzip2' && !(head.length > 3 && head[3]! >= 0x31 && head[3]! <= 0x39)) continue;
      return format;
    }
  }
  return null;
}
