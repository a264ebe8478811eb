/**
 * qcow2 overlays on a base image: a VM's root disk on an image's base disk,
 * a volume on another volume. The overlay names its base by absolute path
 * and says the base's format explicitly, so QEMU never guesses a format from
 * bytes a guest could have written.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { HangarError } from '../../common/errors.js';
import { formatSize } from '../../common/sizes.js';
import { detectDiskFormat, readQcow2Header } from './disk-format.js';
import { qemuImgCreate, type DiskFormat } from './qemu-img.js';

export interface OverlayInfo {
  path: string;
  format: 'qcow2';
  virtualBytes: number;
  backing: { path: string; format: DiskFormat };
}

/** The format and virtual size of a Hangar-owned image file, read from its bytes. */
export function diskFileFormat(file: string): { format: DiskFormat; virtualBytes: number } {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new HangarError('NOT_FOUND', `disk image ${file} does not exist`, { path: file });
    throw new HangarError('INVALID_ARGUMENT', `disk image ${file} cannot be opened: ${(e as Error).message}`, { path: file });
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new HangarError('INVALID_ARGUMENT', `disk image ${file} is not a regular file`, { path: file });
    const d = detectDiskFormat(fd, st.size);
    if (d.kind === 'qcow2') {
      const h = readQcow2Header(fd, st.size)!;
      if (h.problems.length) throw new HangarError('INVALID_ARGUMENT', `disk image ${file} is a damaged qcow2: ${h.problems.join('; ')}`, { path: file });
      return { format: 'qcow2', virtualBytes: h.virtualBytes };
    }
    // A base image may be a blank or unusual raw disk: only a whole number of sectors is asked for.
    if (d.kind === 'raw' || (d.kind === 'not-a-disk' && st.size > 0 && st.size % 512 === 0)) return { format: 'raw', virtualBytes: st.size };
    throw new HangarError('INVALID_ARGUMENT', `disk image ${file} is neither raw nor qcow2`, { path: file });
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Creates `overlayPath` as a qcow2 overlay on `basePath` (absolute backing
 * path, explicit backing format), `sizeBytes` large (default: the base's
 * size; never smaller than the base). The file is made under a hidden name
 * and linked into place, so an existing file is never replaced and a failure
 * leaves nothing. Mode 0600.
 */
export async function createOverlay(basePath: string, overlayPath: string, sizeBytes?: number): Promise<OverlayInfo> {
  if (!path.isAbsolute(basePath) || !path.isAbsolute(overlayPath)) throw new HangarError('INVALID_ARGUMENT', 'overlay and base must be absolute paths');
  let base: string;
  try {
    base = fs.realpathSync(basePath);
  } catch {
    throw new HangarError('NOT_FOUND', `base image ${basePath} does not exist`, { path: basePath });
  }
  const { format, virtualBytes } = diskFileFormat(base);
  const size = sizeBytes ?? virtualBytes;
  if (size < virtualBytes) {
    throw new HangarError('INVALID_ARGUMENT', `an overlay cannot be smaller than its base: ${formatSize(size)} < ${formatSize(virtualBytes)}`, { sizeBytes: size, baseBytes: virtualBytes });
  }
  if (fs.existsSync(overlayPath)) throw new HangarError('ALREADY_EXISTS', `${overlayPath} already exists`, { path: overlayPath });
  const work = path.join(path.dirname(overlayPath), `.${path.basename(overlayPath)}.${randomBytes(6).toString('hex')}.part`);
  try {
    await qemuImgCreate(work, { format: 'qcow2', sizeBytes: size, backing: { file: base, format } });
    fs.chmodSync(work, 0o600);
    try {
      fs.linkSync(work, overlayPath);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new HangarError('ALREADY_EXISTS', `${overlayPath} already exists`, { path: overlayPath });
      throw e;
    }
  } finally {
    fs.rmSync(work, { force: true });
  }
  return { path: overlayPath, format: 'qcow2', virtualBytes: size, backing: { path: base, format } };
}
