/**
 * The daemon's rules for image imports: which host folders a path import may
 * read from, and how many bytes imported images may take in all.
 *
 * A path import reads a file as the daemon (root), so it is confined to the
 * configured import folders (default: <data dir>/import, which only root can
 * write). The path must lie inside one of them both as written and once its
 * folders are resolved; the file itself is opened with O_NOFOLLOW (a symlink
 * is refused, not followed), must be a regular file, and the descriptor is
 * checked once more through /proc/self/fd, so a folder swapped for a symlink
 * between the check and the open is caught too. A path outside the folders is
 * refused with one message whether or not it exists.
 */
import fs from 'node:fs';
import path from 'node:path';
import { HangarError } from '../../common/errors.js';
import { dataDir } from '../../common/paths.js';
import { formatSize, parseSize } from '../../common/sizes.js';

/** Default total for imported images: 10 GiB. */
export const DEFAULT_IMAGE_QUOTA_BYTES = 10 * 2 ** 30;

export interface ImportPolicy {
  /** Folders path imports may read from; empty: path imports are refused. */
  importDirs: string[];
  /** Most bytes all imported images (and uploads in progress) may take together. */
  quotaBytes: number;
}

let configured: Partial<ImportPolicy> = {};

/** <data dir>/import: the folder path imports read from unless the daemon is told otherwise. */
export function defaultImportDir(): string {
  return path.join(dataDir(), 'import');
}

/** Sets the daemon's policy (hangard options); fields left out keep their defaults. */
export function configureImportPolicy(p: Partial<ImportPolicy>): void {
  if (p.quotaBytes !== undefined && (!Number.isSafeInteger(p.quotaBytes) || p.quotaBytes < 0)) {
    throw new HangarError('INVALID_ARGUMENT', `the image quota must be a whole number of bytes >= 0, got ${p.quotaBytes}`);
  }
  if (p.importDirs) {
    for (const d of p.importDirs) {
      if (!path.isAbsolute(d)) throw new HangarError('INVALID_ARGUMENT', `import folder "${d}" must be an absolute path`);
    }
  }
  configured = { ...p, ...(p.importDirs ? { importDirs: p.importDirs.map((d) => path.resolve(d)) } : {}) };
}

/**
 * Applies hangard's options: `--import-dir DIR` (repeatable; `none` allows no
 * path imports; default <data dir>/import, made 0700 here) and
 * `--image-quota SIZE` (default 10G).
 */
export function configureImportFromOptions(o: { importDir?: string[] | undefined; imageQuota?: string | undefined }): ImportPolicy {
  const dirs = o.importDir?.includes('none') ? [] : o.importDir?.map((d) => path.resolve(d));
  configureImportPolicy({
    ...(dirs ? { importDirs: dirs } : {}),
    ...(o.imageQuota !== undefined ? { quotaBytes: parseSize(o.imageQuota, '--image-quota') } : {}),
  });
  if (!dirs) fs.mkdirSync(defaultImportDir(), { recursive: true, mode: 0o700 });
  return importPolicy();
}

export function importPolicy(): ImportPolicy {
  return {
    importDirs: configured.importDirs ?? [defaultImportDir()],
    quotaBytes: configured.quotaBytes ?? DEFAULT_IMAGE_QUOTA_BYTES,
  };
}

function inside(dir: string, p: string): boolean {
  const rel = path.relative(dir, p);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

/** The import folders as given and as resolved (a folder may itself be reached through a symlink). */
function allowedRoots(): Array<{ given: string; real: string }> {
  const roots: Array<{ given: string; real: string }> = [];
  for (const given of importPolicy().importDirs) {
    try {
      roots.push({ given, real: fs.realpathSync(given) });
    } catch { /* a folder that does not exist allows nothing */ }
  }
  return roots;
}

/** An open source file: opened once, so what was checked is what gets copied. */
export interface Source {
  fd: number;
  size: number;
  /** The path as the client gave it (for messages and the image record). */
  path: string;
}

function outside(field: string, p: string): HangarError {
  const dirs = importPolicy().importDirs;
  const where = dirs.length ? `the daemon's import folders (${dirs.join(', ')})` : "the daemon's import folders (none are configured: upload the file instead)";
  // The same answer whether or not the path exists: a path import must not become a way to probe the host.
  return new HangarError('INVALID_ARGUMENT', `${field} "${p}" is not a file inside ${where}`, { field });
}

/**
 * Opens a file for a path import under the rules above; the caller closes fd.
 * `maxBytes`: larger files are refused.
 */
export function openImportSource(p: unknown, field: string, maxBytes: number): Source {
  if (typeof p !== 'string' || p.length === 0 || p.length > 4096 || p.includes('\0')) {
    throw new HangarError('INVALID_ARGUMENT', `${field} must be a path`, { field });
  }
  if (!path.isAbsolute(p)) throw new HangarError('INVALID_ARGUMENT', `${field} must be an absolute path on the daemon's host, got "${p}"`, { field });
  const wanted = path.resolve(p);
  const roots = allowedRoots();
  const root = roots.find((r) => inside(r.given, wanted) || inside(r.real, wanted));
  if (!root) throw outside(field, p);

  // Resolve the folders above the file; the file itself is never followed.
  let parent: string;
  try {
    parent = fs.realpathSync(path.dirname(wanted));
  } catch {
    throw outside(field, p);
  }
  const real = path.join(parent, path.basename(wanted));
  if (!roots.some((r) => inside(r.real, real))) throw outside(field, p);

  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO must not hang the daemon; it is refused below as not a regular file.
    fd = fs.openSync(real, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new HangarError('NOT_FOUND', `${field} file ${p} does not exist`, { field, path: p });
    if (code === 'ELOOP') throw new HangarError('INVALID_ARGUMENT', `${field} ${p} is a symbolic link: name the file itself`, { field, path: p });
    if (code === 'EACCES' || code === 'EPERM') throw new HangarError('INVALID_ARGUMENT', `${field} file ${p} is not readable by the daemon`, { field, path: p });
    throw new HangarError('INVALID_ARGUMENT', `${field} file ${p} cannot be opened: ${(e as Error).message}`, { field, path: p });
  }
  try {
    // What was opened, as the kernel sees it: catches a folder swapped for a symlink after realpath.
    const opened = fs.readlinkSync(`/proc/self/fd/${fd}`);
    if (!roots.some((r) => inside(r.real, opened))) throw outside(field, p);
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new HangarError('INVALID_ARGUMENT', `${field} ${p} is not a regular file`, { field, path: p });
    if (st.size === 0) throw new HangarError('INVALID_ARGUMENT', `${field} file ${p} is empty`, { field, path: p });
    if (st.size > maxBytes) throw new HangarError('INVALID_ARGUMENT', `${field} file ${p} is larger than ${formatSize(maxBytes)}`, { field, path: p, max: maxBytes });
    return { fd, size: st.size, path: p };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/** Reads up to n bytes from the start of an open source. */
export function readHead(fd: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  let got = 0;
  while (got < b.length) {
    const r = fs.readSync(fd, b, got, b.length - got, got);
    if (r === 0) break;
    got += r;
  }
  return b.subarray(0, got);
}

// --- quota ------------------------------------------------------------------

/** Bytes promised to imports in progress (path copies and uploads), by a key of the caller's. */
const reserved = new Map<string, number>();

export function reservedBytes(): number {
  let n = 0;
  for (const v of reserved.values()) n += v;
  return n;
}

/**
 * Reserves `bytes` for an import before anything is written, so two imports
 * at once cannot both fit in the same free space. `usedBytes`: what finished
 * images take now. Over the quota → RESOURCE_EXHAUSTED. Returns the release.
 */
export function reserveImageBytes(key: string, bytes: number, usedBytes: number): () => void {
  const { quotaBytes } = importPolicy();
  const taken = usedBytes + reservedBytes();
  if (taken + bytes > quotaBytes) {
    throw new HangarError('RESOURCE_EXHAUSTED',
      `image storage quota exceeded: this import needs ${formatSize(bytes)}, ${formatSize(Math.max(0, quotaBytes - taken))} of ${formatSize(quotaBytes)} is free`,
      { quotaBytes, usedBytes: taken, requestedBytes: bytes });
  }
  reserved.set(key, bytes);
  return () => { reserved.delete(key); };
}
