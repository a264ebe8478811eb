/**
 * Writes a cpio archive in the "newc" format, the one the Linux kernel
 * unpacks as an initramfs. Writing it ourselves means no root is needed for
 * device nodes and ownership, and the archive is the same on every build.
 */
import { HangarError } from '../../common/errors.js';

export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; data: Buffer; mode?: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'chardev'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new HangarError('INVALID_ARGUMENT', `cpio field out of range: ${n}`);
  return n.toString(16).padStart(8, '0');
}

function pad4(len: number): Buffer {
  return Buffer.alloc((4 - (len % 4)) % 4);
}

function header(ino: number, mode: number, nlink: number, size: number, rmaj: number, rmin: number, nameSize: number, mtime: number): string {
  // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
  return '070701' + [ino, mode, 0, 0, nlink, mtime, size, 0, 0, rmaj, rmin, nameSize, 0].map(hex8).join('');
}

/** Entry paths are relative to the archive root ("init", "bin/busybox"); owner is root. */
export function buildCpio(entries: CpioEntry[], mtime = 0): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const push = (name: string, mode: number, nlink: number, data: Buffer, rmaj = 0, rmin = 0) => {
    const nameBuf = Buffer.from(name + '\0', 'utf8');
    const head = Buffer.from(header(ino++, mode, nlink, data.length, rmaj, rmin, nameBuf.length, mtime), 'ascii');
    parts.push(head, nameBuf, pad4(head.length + nameBuf.length), data, pad4(data.length));
  };
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    if (name === '' || name.split('/').includes('..')) throw new HangarError('INVALID_ARGUMENT', `bad cpio path "${e.path}"`);
    switch (e.type) {
      case 'dir':
        push(name, S_IFDIR | (e.mode ?? 0o755), 2, Buffer.alloc(0));
        break;
      case 'file':
        push(name, S_IFREG | (e.mode ?? 0o644), 1, e.data);
        break;
      case 'symlink':
        push(name, S_IFLNK | 0o777, 1, Buffer.from(e.target, 'utf8'));
        break;
      case 'chardev':
        push(name, S_IFCHR | (e.mode ?? 0o600), 1, Buffer.alloc(0), e.major, e.minor);
        break;
    }
  }
  push('TRAILER!!!', 0, 1, Buffer.alloc(0));
  return Buffer.concat(parts);
}

/** Reads back the names and sizes of a newc archive (used by tests and to check a built image). */
export function listCpio(archive: Buffer): Array<{ name: string; mode: number; size: number }> {
  const out: Array<{ name: string; mode: number; size: number }> = [];
  let off = 0;
  for (;;) {
    if (off + 110 > archive.length) throw new HangarError('INVALID_ARGUMENT', 'cpio archive is truncated');
    const h = archive.toString('ascii', off, off + 110);
    if (!h.startsWith('070701')) throw new HangarError('INVALID_ARGUMENT', `no newc header at offset ${off}`);
    const field = (i: number) => parseInt(h.slice(6 + i * 8, 14 + i * 8), 16);
    const mode = field(1);
    const size = field(6);
    const nameSize = field(11);
    const nameEnd = off + 110 + nameSize;
    const name = archive.toString('utf8', off + 110, nameEnd - 1);
    const dataStart = nameEnd + ((4 - (nameEnd % 4)) % 4);
    off = dataStart + size + ((4 - (size % 4)) % 4);
    if (name === 'TRAILER!!!') return out;
    out.push({ name, mode, size });
  }
}
