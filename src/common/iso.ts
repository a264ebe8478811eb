/**
 * Recognises ISO 9660 images (installer CDs/DVDs, what `grub-mkrescue` and
 * `xorriso` write): the first volume descriptor sits in sector 16 (byte
 * 32768, sectors of 2048 bytes) and starts with a type byte followed by the
 * standard identifier "CD001".
 */
import fs from 'node:fs';

export const ISO_SECTOR_BYTES = 2048;
const DESCRIPTOR_OFFSET = 16 * ISO_SECTOR_BYTES;
const STANDARD_ID = Buffer.from('CD001', 'ascii');

/** True when the open file `fd` holds an ISO 9660 volume descriptor where one belongs. */
export function isIso9660(fd: number): boolean {
  const b = Buffer.alloc(6);
  let got: number;
  try {
    got = fs.readSync(fd, b, 0, b.length, DESCRIPTOR_OFFSET);
  } catch {
    return false;
  }
  return got === b.length && b.subarray(1, 6).equals(STANDARD_ID);
}
