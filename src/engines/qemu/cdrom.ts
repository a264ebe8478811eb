/**
 * Opens a VM's CD-ROM image for QEMU. The daemon (root) opens it and QEMU
 * inherits the descriptor, so a confined QEMU reads the one file it was
 * given without any right on the folders around it. The daemon checked at
 * create where the ISO comes from; this checks again what is there now: a
 * regular file (a symlink is refused, not followed) holding an ISO 9660 image.
 */
import fs from 'node:fs';
import { HangarError } from '../../common/errors.js';
import { isIso9660 } from '../../common/iso.js';

/** A read-only descriptor of `file`; the caller closes it once QEMU has its copy. */
export function openCdrom(file: string): number {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw new HangarError('ENGINE_FAILED', `cannot open the CD-ROM image ${file}: ${(e as Error).message}`, { path: file });
  }
  try {
    if (!fs.fstatSync(fd).isFile()) throw new HangarError('ENGINE_FAILED', `the CD-ROM image ${file} is not a regular file`, { path: file });
    if (!isIso9660(fd)) throw new HangarError('ENGINE_FAILED', `${file} is no longer an ISO 9660 image`, { path: file });
    return fd;
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}
