/**
 * Imported ("local") images: a kernel, optionally an initrd and a command
 * line, that a client uploads through the API (upload.ts) or, from the
 * daemon's import folders only (policy.ts), names by path, in the manner of
 * `incus image import`. The daemon keeps its own copies (0600), so later
 * changes to the sources never reach its VMs. Both files are checked by
 * their first bytes (formats.ts), and their sizes count against the image
 * storage quota.
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
import { initrdFormat, kernelFormat, FORMAT_HEAD_BYTES, type InitrdFormat, type KernelFormat } from './formats.js';
import { openImportSource, readHead, reserveImageBytes, type Source } from './policy.js';
import { IMAGE_NAME_PATTERN } from '../../api/names.js';

export { kernelFormat, initrdFormat, type KernelFormat, type InitrdFormat } from './formats.js';

/** Image names: lower-case letters, digits, dots, dashes and underscores, starting with a letter. */
export const IMAGE_NAME_RE = new RegExp(IMAGE_NAME_PATTERN);

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
  /** Kernel images only. */
  kernelFormat?: KernelFormat;
  initrdFormat?: InitrdFormat;
  /** Disk images only (disk-import.ts): the base disk's file name in the image folder, always a qcow2 Hangar wrote. */
  disk?: typeof DISK_FILE;
  /** Disk images only: the firmware its boot loader needs. */
  boot?: Array<'bios' | 'uefi'>;
  /** Disk images only: the base disk's virtual size. */
  virtualBytes?: number;
  /** Where the files came from (for the operator; never read again): host paths, or "upload". */
  source: { kernel?: string; initrd?: string; disk?: string };
  importedAt: string;
}

/** The file name of an imported disk image's base disk. */
export const DISK_FILE = 'disk.qcow2';

export interface LocalImage extends LocalImageMeta {
  /** Absent on a disk image: it boots by firmware from its own disk. */
  kernel?: string;
  initrd?: string;
  /** Absolute path of a disk image's base disk. */
  diskPath?: string;
  sizeBytes: number;
}

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

/** Copies an open source into dest (0600), all of it and nothing more (a file growing meanwhile is cut at the checked size). */
async function copySource(src: Source, dest: string): Promise<void> {
  const input = fs.createReadStream('', { fd: src.fd, autoClose: false, start: 0, end: src.size - 1 });
  const output = fs.createWriteStream(dest, { mode: 0o600, flags: 'wx' });
  await new Promise<void>((resolve, reject) => {
    input.on('error', reject);
    output.on('error', reject);
    output.on('finish', resolve);
    input.pipe(output);
  });
  const st = fs.statSync(dest);
  if (st.size !== src.size) throw new HangarError('INVALID_ARGUMENT', `${src.path} changed size while it was copied`, { path: src.path });
}

/** Refuses a kernel whose first bytes are not a bootable kernel; returns its format. */
export function checkKernelHead(head: Buffer, what: string): KernelFormat {
  const format = kernelFormat(head);
  if (!format) throw new HangarError('INVALID_ARGUMENT', `kernel ${what} is neither an x86-64 ELF64 executable nor a Linux bzImage`, { field: 'kernel' });
  return format;
}

/** Refuses an initrd that is neither a cpio archive nor compressed data Linux can unpack. */
export function checkInitrdHead(head: Buffer, what: string): InitrdFormat {
  const format = initrdFormat(head);
  if (!format) throw new HangarError('INVALID_ARGUMENT', `initrd ${what} is neither a cpio archive (newc or odc) nor gzip, xz, zstd, lz4 or bzip2 data`, { field: 'initrd' });
  return format;
}

/** Checks everything about a request except the sources themselves; exported for unit tests. */
export function checkImportRequest(req: Omit<ImportRequest, 'kernel'> & { kernel?: unknown }, reserved: readonly string[]): void {
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
    if (typeof m.name !== 'string' || typeof m.description !== 'string' || typeof m.source !== 'object' || m.source === null) return null;
    const isKernel = m.kernelFormat === 'elf64' || m.kernelFormat === 'bzimage';
    const isDisk = m.disk === DISK_FILE && Array.isArray(m.boot) && m.boot.length > 0 && m.boot.every((b) => b === 'bios' || b === 'uefi');
    if (isKernel === isDisk) return null;
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
  if (meta.disk !== undefined) {
    const diskPath = path.join(dir, meta.disk);
    try {
      return { ...meta, diskPath, sizeBytes: fs.statSync(diskPath).size };
    } catch {
      return null;
    }
  }
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

/** Total bytes the finished imported images take. */
export function usedImageBytes(): number {
  return listLocalImages().reduce((n, i) => n + i.sizeBytes, 0);
}

/**
 * Claims a name for an import in progress; ALREADY_EXISTS when an image or
 * another import has it. Returns the release.
 */
export function claimImageName(name: string, reserved: readonly string[]): () => void {
  checkImageName(name);
  if (reserved.includes(name)) throw new HangarError('INVALID_ARGUMENT', `"${name}" is the name of a built-in image`, { field: 'name' });
  if (importing.has(name) || getLocalImage(name)) {
    throw new HangarError('ALREADY_EXISTS', `an image named "${name}" already exists`, { name });
  }
  importing.add(name);
  return () => { importing.delete(name); };
}

/** A fresh hidden work folder for an import (0700), removed by the caller on failure. */
export function makeImportWorkDir(name: string): string {
  const root = localImageRoot();
  fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  return fs.mkdtempSync(path.join(root, `.import-${name}-`));
}

/**
 * Moves a finished work folder (kernel, initrd.img if any) into place with its
 * image.json. The rename decides races for the name.
 */
export function installImage(work: string, meta: LocalImageMeta): LocalImage {
  fs.writeFileSync(path.join(work, 'image.json'), JSON.stringify(meta, null, 2) + '\n', { mode: 0o600 });
  fs.chmodSync(work, 0o700);
  try {
    fs.renameSync(work, imageFolder(meta.name));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') throw new HangarError('ALREADY_EXISTS', `an image named "${meta.name}" already exists`, { name: meta.name });
    throw e;
  }
  const done = getLocalImage(meta.name);
  if (!done) throw new HangarError('INTERNAL', `image ${meta.name} was imported but cannot be read back`);
  return done;
}

/**
 * Imports an image from files on the daemon's host, inside its import
 * folders (policy.ts): checks the request and the files (formats by magic),
 * reserves their size against the quota, copies them into a temporary folder
 * and renames it into place. `reserved`: the built-in names, which cannot be taken.
 */
export async function importLocalImage(req: ImportRequest, reserved: readonly string[]): Promise<LocalImage> {
  checkImportRequest(req, reserved);
  const release = claimImageName(req.name, reserved);
  const sources: Source[] = [];
  let unreserve = (): void => {};
  try {
    const kernel = openImportSource(req.kernel, 'kernel', MAX_KERNEL_BYTES);
    sources.push(kernel);
    const format = checkKernelHead(readHead(kernel.fd, FORMAT_HEAD_BYTES), req.kernel);
    const initrd = req.initrd !== undefined ? openImportSource(req.initrd, 'initrd', MAX_INITRD_BYTES) : null;
    let iFormat: InitrdFormat | undefined;
    if (initrd) {
      sources.push(initrd);
      iFormat = checkInitrdHead(readHead(initrd.fd, FORMAT_HEAD_BYTES), req.initrd!);
    }
    unreserve = reserveImageBytes(`path:${req.name}`, kernel.size + (initrd?.size ?? 0), usedImageBytes());

    const work = makeImportWorkDir(req.name);
    try {
      await copySource(kernel, path.join(work, 'kernel'));
      if (initrd) await copySource(initrd, path.join(work, 'initrd.img'));
      return installImage(work, {
        name: req.name,
        description: req.description ?? `imported ${format === 'elf64' ? 'ELF64 kernel' : 'bzImage'} ${path.basename(req.kernel)}`,
        ...(req.cmdline !== undefined ? { cmdline: req.cmdline } : {}),
        kernelFormat: format,
        ...(iFormat ? { initrdFormat: iFormat } : {}),
        source: { kernel: req.kernel, ...(req.initrd !== undefined ? { initrd: req.initrd } : {}) },
        importedAt: new Date().toISOString(),
      });
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  } catch (e) {
    throw toHangarError(e);
  } finally {
    for (const s of sources) fs.closeSync(s.fd);
    unreserve();
    release();
  }
}

/** Hidden folders an import, upload or delete leaves while it runs. */
const WORK_DIR_RE = /^\.(import|delete)-[a-z][a-z0-9._-]{0,62}-/;

/**
 * Removes the work folders a crashed daemon left in the imported-image store.
 * Call at start, before any import: one daemon owns a data directory, so
 * every such folder then is stale. Only our own names, only real folders.
 */
export function cleanStaleImportFolders(): string[] {
  const root = localImageRoot();
  let names: string[];
  try { names = fs.readdirSync(root); } catch { return []; }
  return removeFolders(root, names.filter((n) => WORK_DIR_RE.test(n)));
}

/** Removes the named folders under root (never following a symlink); returns what was removed. */
export function removeFolders(root: string, names: string[]): string[] {
  const removed: string[] = [];
  for (const n of names) {
    const p = path.join(root, n);
    try {
      if (!fs.lstatSync(p).isDirectory()) continue;
      fs.rmSync(p, { recursive: true, force: true });
      removed.push(p);
    } catch { /* gone meanwhile */ }
  }
  return removed;
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
