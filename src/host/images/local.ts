/**
 * Imported ("local") images: a kernel, optionally an initrd and a command
 * line, that an operator hands to the daemon from files on the host, in the
 * manner of `incus image import`. The daemon copies the files, so later
 * changes to the sources never reach its VMs.
 *
 * They live in <dataDir>/local-images/<name>/ (kernel, initrd.img, image.json),
 * apart from the built-in image cache (imageDir(), which HANGAR_IMAGE_DIR may
 * point at a folder that several daemons share): an imported image belongs to
 * the one daemon that imported it.
 *
 * An import is assembled in a hidden temporary folder and renamed into place
 * only when complete; the rename also decides races for the same name (it
 * fails on an existing folder). A delete renames the folder away before
 * removing it, so a half-deleted image is never listed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { HangarError, toHangarError } from '../../common/errors.js';
import { dataDir } from '../../common/paths.js';

/** Image names: lower-case letters, digits, dots, dashes and underscores, starting with a letter. */
export const IMAGE_NAME_RE = /^[a-z][a-z0-9._-]{0,62}$/;

/** Kernel files larger than this are refused (a Linux bzImage is ~10 MiB). */
export const MAX_KERNEL_BYTES = 256 * 2 ** 20;
/** Initrds larger than this are refused. */
export const MAX_INITRD_BYTES = 2 * 2 ** 30;
export const MAX_CMDLINE_LENGTH = 2048;
export const MAX_DESCRIPTION_LENGTH = 256;

export interface ImportRequest {
  name: string;
  kernel: string;
  initrd?: string;
  cmdline?: string;
  description?: string;
}

/** What image.json of an imported image records. */
export interface LocalImageMeta {
  name: string;
  description: string;
  /** Absent: the engine's default command line is used. */
  cmdline?: string;
  kernelFormat: KernelFormat;
  /** Where the files came from (for the operator; never read again). */
  source: { kernel: string; initrd?: string };
  importedAt: string;
}

export interface LocalImage extends LocalImageMeta {
  kernel: string;
  initrd?: string;
  sizeBytes: number;
}

export type KernelFormat = 'elf64' | 'bzimage';

export function localImageRoot(): string {
  return path.join(dataDir(), 'local-images');
}

function imageFolder(name: string): string {
  return path.join(localImageRoot(), name);
}

export function checkImageName(name: unknown): string {
  if (typeof name !== 'string' || !IMAGE_NAME_RE.test(name)) {
    throw new HangarError('INVALID_ARGUMENT', `image name ${JSON.stringify(name)} is not valid: lower-case letters, digits, dots, dashes and underscores, starting with a letter, at most 63 characters`, { field: 'name' });
  }
  return name;
}

/**
 * Recognises a bootable kernel by its first bytes: an x86-64 ELF64 executable (ET_EXEC)
 * (what hangar-vmm's test guests and an uncompressed vmlinux are), or a Linux
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

/** An open, checked source file: opened once, so what was checked is what gets copied. */
interface Source {
  fd: number;
  size: number;
  path: string;
}

function openSource(p: unknown, field: 'kernel' | 'initrd', maxBytes: number): Source {
  if (typeof p !== 'string' || p.length === 0 || p.length > 4096 || p.includes('\0')) {
    throw new HangarError('INVALID_ARGUMENT', `${field} must be a path`, { field });
  }
  if (!path.isAbsolute(p)) throw new HangarError('INVALID_ARGUMENT', `${field} must be an absolute path on the daemon's host, got "${p}"`, { field });
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO must not hang the daemon; it is refused below as not a regular file.
    fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new HangarError('NOT_FOUND', `${field} file ${p} does not exist`, { field, path: p });
    if (code === 'EACCES' || code === 'EPERM') throw new HangarError('INVALID_ARGUMENT', `${field} file ${p} is not readable by the daemon`, { field, path: p });
    throw new HangarError('INVALID_ARGUMENT', `${field} file ${p} cannot be opened: ${(e as Error).message}`, { field, path: p });
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new HangarError('INVALID_ARGUMENT', `${field} ${p} is not a regular file`, { field, path: p });
    if (st.size === 0) throw new HangarError('INVALID_ARGUMENT', `${field} file ${p} is empty`, { field, path: p });
    if (st.size > maxBytes) throw new HangarError('INVALID_ARGUMENT', `${field} file ${p} is larger than ${maxBytes} bytes`, { field, path: p, max: maxBytes });
    return { fd, size: st.size, path: p };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

function readHead(src: Source, n: number): Buffer {
  const b = Buffer.alloc(Math.min(n, src.size));
  let got = 0;
  while (got < b.length) {
    const r = fs.readSync(src.fd, b, got, b.length - got, got);
    if (r === 0) break;
    got += r;
  }
  return b.subarray(0, got);
}

/** Copies an open source into dest, all of it and nothing more (a file growing meanwhile is cut at the checked size). */
async function copySource(src: Source, dest: string): Promise<void> {
  const input = fs.createReadStream('', { fd: src.fd, autoClose: false, start: 0, end: src.size - 1 });
  const output = fs.createWriteStream(dest, { mode: 0o644 });
  await new Promise<void>((resolve, reject) => {
    input.on('error', reject);
    output.on('error', reject);
    output.on('finish', resolve);
    input.pipe(output);
  });
  const st = fs.statSync(dest);
  if (st.size !== src.size) throw new HangarError('INVALID_ARGUMENT', `${src.path} changed size while it was copied`, { path: src.path });
}

/** Checks everything about a request except the sources themselves; exported for unit tests. */
export function checkImportRequest(req: ImportRequest, reserved: readonly string[]): void {
  checkImageName(req.name);
  if (reserved.includes(req.name)) throw new HangarError('INVALID_ARGUMENT', `"${req.name}" is the name of a built-in image`, { field: 'name' });
  if (req.cmdline !== undefined) {
    if (typeof req.cmdline !== 'string' || req.cmdline.length > MAX_CMDLINE_LENGTH || /[\0\n\r]/.test(req.cmdline)) {
      throw new HangarError('INVALID_ARGUMENT', `cmdline must be one line of at most ${MAX_CMDLINE_LENGTH} characters`, { field: 'cmdline' });
    }
  }
  if (req.description !== undefined) {
    if (typeof req.description !== 'string' || req.description.length > MAX_DESCRIPTION_LENGTH || /[\0\n\r]/.test(req.description)) {
      throw new HangarError('INVALID_ARGUMENT', `description must be one line of at most ${MAX_DESCRIPTION_LENGTH} characters`, { field: 'description' });
    }
  }
}

function readMeta(dir: string): LocalImageMeta | null {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, 'image.json'), 'utf8')) as Partial<LocalImageMeta>;
    if (typeof m.name !== 'string' || typeof m.description !== 'string' || (m.kernelFormat !== 'elf64' && m.kernelFormat !== 'bzimage')) return null;
    if (m.cmdline !== undefined && typeof m.cmdline !== 'string') return null;
    return m as LocalImageMeta;
  } catch {
    return null;
  }
}

/** One imported image as it is on disk, or null when there is none (or it is damaged). */
export function getLocalImage(name: string): LocalImage | null {
  if (!IMAGE_NAME_RE.test(name)) return null;
  const dir = imageFolder(name);
  const meta = readMeta(dir);
  if (!meta || meta.name !== name) return null;
  const kernel = path.join(dir, 'kernel');
  const initrd = path.join(dir, 'initrd.img');
  try {
    let sizeBytes = fs.statSync(kernel).size;
    const hasInitrd = meta.source.initrd !== undefined;
    if (hasInitrd) sizeBytes += fs.statSync(initrd).size;
    return { ...meta, kernel, ...(hasInitrd ? { initrd } : {}), sizeBytes };
  } catch {
    return null;
  }
}

/** Every imported image, by name. */
export function listLocalImages(): LocalImage[] {
  let names: string[];
  try {
    names = fs.readdirSync(localImageRoot());
  } catch {
    return [];
  }
  return names.filter((n) => IMAGE_NAME_RE.test(n)).sort().map(getLocalImage).filter((i): i is LocalImage => i !== null);
}

/** Names being imported by this process right now (the rename settles races with other processes). */
const importing = new Set<string>();

/**
 * Imports an image: checks the request and the files (kernel format by magic),
 * copies them into a temporary folder and renames it into place.
 * `reserved`: the built-in names, which cannot be taken.
 */
export async function importLocalImage(req: ImportRequest, reserved: readonly string[]): Promise<LocalImage> {
  checkImportRequest(req, reserved);
  if (importing.has(req.name) || getLocalImage(req.name)) {
    throw new HangarError('ALREADY_EXISTS', `an image named "${req.name}" already exists`, { name: req.name });
  }
  importing.add(req.name);
  const sources: Source[] = [];
  try {
    const kernel = openSource(req.kernel, 'kernel', MAX_KERNEL_BYTES);
    sources.push(kernel);
    const format = kernelFormat(readHead(kernel, 0x210));
    if (!format) throw new HangarError('INVALID_ARGUMENT', `kernel ${req.kernel} is neither an x86-64 ELF64 executable nor a Linux bzImage`, { field: 'kernel', path: req.kernel });
    const initrd = req.initrd !== undefined ? openSource(req.initrd, 'initrd', MAX_INITRD_BYTES) : null;
    if (initrd) sources.push(initrd);

    const root = localImageRoot();
    fs.mkdirSync(root, { recursive: true, mode: 0o700 });
    const work = fs.mkdtempSync(path.join(root, `.import-${req.name}-`));
    try {
      await copySource(kernel, path.join(work, 'kernel'));
      if (initrd) await copySource(initrd, path.join(work, 'initrd.img'));
      const meta: LocalImageMeta = {
        name: req.name,
        description: req.description ?? `imported ${format === 'elf64' ? 'ELF64 kernel' : 'bzImage'} ${path.basename(req.kernel)}`,
        ...(req.cmdline !== undefined ? { cmdline: req.cmdline } : {}),
        kernelFormat: format,
        source: { kernel: req.kernel, ...(req.initrd !== undefined ? { initrd: req.initrd } : {}) },
        importedAt: new Date().toISOString(),
      };
      fs.writeFileSync(path.join(work, 'image.json'), JSON.stringify(meta, null, 2) + '\n', { mode: 0o644 });
      fs.chmodSync(work, 0o755);
      try {
        fs.renameSync(work, imageFolder(req.name));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOTEMPTY' || code === 'EEXIST') throw new HangarError('ALREADY_EXISTS', `an image named "${req.name}" already exists`, { name: req.name });
        throw e;
      }
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
    const done = getLocalImage(req.name);
    if (!done) throw new HangarError('INTERNAL', `image ${req.name} was imported but cannot be read back`);
    return done;
  } catch (e) {
    throw toHangarError(e);
  } finally {
    for (const s of sources) fs.closeSync(s.fd);
    importing.delete(req.name);
  }
}

/** Removes an imported image (the caller has checked that no VM uses it). Unknown name → NOT_FOUND. */
export function deleteLocalImage(name: string): void {
  if (!getLocalImage(name)) throw new HangarError('NOT_FOUND', `no imported image named "${name}"`, { image: name });
  const dir = imageFolder(name);
  const trash = path.join(localImageRoot(), `.delete-${name}-${process.pid}-${Date.now()}`);
  try {
    fs.renameSync(dir, trash);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new HangarError('NOT_FOUND', `no imported image named "${name}"`, { image: name });
    throw toHangarError(e);
  }
  fs.rmSync(trash, { recursive: true, force: true });
}
