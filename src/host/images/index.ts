/**
 * The image catalogue: built-in images, built on first use and cached in
 * imageDir()/<name>/ (vmlinuz, initrd.img, image.json), and images imported
 * from files on the host (local.ts), which resolve the same way.
 *
 * A build happens in a temporary folder that is renamed into place only when
 * complete, so a crash mid-build leaves no half image. A lock file
 * (imageDir()/<name>.lock, holding the builder's pid) keeps two processes
 * from building at once; it is an flock(2) lock (build-lock.ts), which the
 * kernel frees when its holder dies.
 */
import fs from 'node:fs';
import path from 'node:path';
import { HangarError } from '../../common/errors.js';
import { imageDir } from '../../common/paths.js';
import type { Image } from '../api/schemas.js';
import { buildTiny, TINY_CMDLINE, TINY_DESCRIPTION, TINY_HOSTNAME_ARG } from './tiny.js';
import { buildDebian12, DEBIAN12_CMDLINE, DEBIAN12_DESCRIPTION, type Debian12Options } from './debian12/index.js';
import { deleteLocalImage, getLocalImage, importLocalImage, listLocalImages, removeFolders, type ImportRequest, type LocalImage } from './local.js';
import { ImageUploads } from './upload.js';
import { buildLockHeld, buildLockPid, tryBuildLock, type BuildLock } from './build-lock.js';
import { prepareDiskImport, type DiskImportRequest, type ReportFn as DiskReportFn } from './disk-import.js';
import type { OperationManager } from '../operations.js';

export { IMAGE_NAME_RE, kernelFormat, initrdFormat, checkImportRequest, cleanStaleImportFolders, usedImageBytes, type ImportRequest } from './local.js';
export { configureImportPolicy, configureImportFromOptions, importPolicy, defaultImportDir, DEFAULT_IMAGE_QUOTA_BYTES } from './policy.js';
export { ImageUploads, type UploadRequest, type UploadPart } from './upload.js';
export { MAX_DISK_IMAGE_BYTES, type DiskImportRequest, type FirmwareBoot } from './disk-import.js';

export type ProgressFn = (stage: string, percent?: number) => void;

/** A built image, ready to boot. */
export interface ReadyImage {
  name: string;
  kernel: string;
  /** Absent for an imported image without one. */
  initrd?: string;
  /** Absent for an imported image without one: the engine's default applies. */
  cmdline?: string;
  /** Kernel argument the image's init reads to set its host name (the daemon passes the VM's name). */
  hostnameArg?: string;
  sizeBytes: number;
  /** Absolute path of the image's base disk (qcow2: GPT, ESP + ext4 root labelled rootfs), for disk images. */
  disk?: string;
  /** How the image can boot: its kernel directly, or its disk by BIOS or UEFI firmware. */
  boot?: BootMethod[];
  /** The image runs cloud-init and reads a NoCloud (`cidata`) seed. */
  cloudInit?: boolean;
}

export type BootMethod = 'kernel' | 'bios' | 'uefi';

/** Options of one build (POST /1.0/images/{name}/build); recipes ignore what they do not support. */
export interface BuildOptions {
  /** Exact `name=version` packages to install (a rebuild from a recorded packages.txt). */
  packages?: string[];
  /** Test hook passed to the recipe: fail after a stage. */
  failAfter?: string;
}

interface Recipe {
  description: string;
  cmdline: string;
  hostnameArg?: string;
  build(workDir: string, outDir: string, onProgress: ProgressFn, options: BuildOptions): Promise<Record<string, unknown>>;
}

const RECIPES: Record<string, Recipe> = {
  tiny: { description: TINY_DESCRIPTION, cmdline: TINY_CMDLINE, hostnameArg: TINY_HOSTNAME_ARG, build: async (w, o, p) => ({ ...(await buildTiny(w, o, p)) }) },
  'debian-12': {
    description: DEBIAN12_DESCRIPTION,
    cmdline: DEBIAN12_CMDLINE,
    build: async (w, o, p, opts) => ({
      ...(await buildDebian12(w, o, p, {
        ...(opts.packages ? { pinned: opts.packages } : {}),
        ...(opts.failAfter ? { failAfter: opts.failAfter as Debian12Options['failAfter'] } : {}),
        ...(process.env.HANGAR_DEBIAN_MIRROR ? { mirror: process.env.HANGAR_DEBIAN_MIRROR } : {}),
        ...(process.env.HANGAR_DEBIAN_SECURITY_MIRROR ? { securityMirror: process.env.HANGAR_DEBIAN_SECURITY_MIRROR } : {}),
      })),
    }),
  },
};

/** Test hook: extra recipes (e.g. a cheap one whose build can be watched or made to fail). */
export function registerTestRecipe(name: string, recipe: Recipe): void {
  RECIPES[name] = recipe;
}
export type { Recipe as ImageRecipe };

/** How long a process waits for another one's build before giving up. */
const WAIT_FOR_OTHER_BUILD_MS = 10 * 60_000;

const inFlight = new Map<string, Promise<ReadyImage>>();

function recipeFor(name: string): Recipe {
  const r = Object.prototype.hasOwnProperty.call(RECIPES, name) ? RECIPES[name] : undefined;
  if (!r) throw new HangarError('NOT_FOUND', `no image named "${name}" (known: ${Object.keys(RECIPES).join(', ')})`, { image: name });
  return r;
}

function imagePaths(name: string) {
  const dir = path.join(imageDir(), name);
  return {
    dir,
    kernel: path.join(dir, 'vmlinuz'),
    initrd: path.join(dir, 'initrd.img'),
    meta: path.join(dir, 'image.json'),
    lock: path.join(imageDir(), `${name}.lock`),
  };
}

/** The image as it is on disk, or null when it is not (completely) built. */
function readReady(name: string): ReadyImage | null {
  const p = imagePaths(name);
  try {
    const meta = JSON.parse(fs.readFileSync(p.meta, 'utf8')) as { cmdline?: unknown; disk?: unknown; boot?: unknown; cloudInit?: unknown };
    let sizeBytes = fs.statSync(p.kernel).size + fs.statSync(p.initrd).size;
    const recipe = recipeFor(name);
    const cmdline = typeof meta.cmdline === 'string' ? meta.cmdline : recipe.cmdline;
    const extra: Pick<ReadyImage, 'disk' | 'boot' | 'cloudInit'> = {};
    if (typeof meta.disk === 'string') {
      // A file name inside the image folder, never a path elsewhere.
      if (path.basename(meta.disk) !== meta.disk) return null;
      extra.disk = path.join(p.dir, meta.disk);
      sizeBytes += fs.statSync(extra.disk).size;
    }
    if (Array.isArray(meta.boot)) extra.boot = meta.boot.filter((b): b is BootMethod => b === 'kernel' || b === 'bios' || b === 'uefi');
    if (meta.cloudInit === true) extra.cloudInit = true;
    return { name, kernel: p.kernel, initrd: p.initrd, cmdline, ...(recipe.hostnameArg ? { hostnameArg: recipe.hostnameArg } : {}), sizeBytes, ...extra };
  } catch {
    return null;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function build(name: string, recipe: Recipe, onProgress: ProgressFn, options: BuildOptions = {}, replace = false): Promise<ReadyImage> {
  const p = imagePaths(name);
  fs.mkdirSync(imageDir(), { recursive: true });
  const deadline = Date.now() + WAIT_FOR_OTHER_BUILD_MS;
  let lock: BuildLock | null;
  while (!(lock = tryBuildLock(p.lock))) {
    onProgress('waiting for another build');
    if (Date.now() > deadline) {
      const pid = buildLockPid(p.lock);
      throw new HangarError('TIMEOUT', `image ${name}: another process${pid ? ` (pid ${pid})` : ''} has been building it for too long`, { lock: p.lock });
    }
    await sleep(250);
    const done = replace ? null : readReady(name);
    if (done) return done;
  }
  const work = fs.mkdtempSync(path.join(imageDir(), `.build-${name}-`));
  try {
    const ready = replace ? null : readReady(name); // someone finished while we waited for the lock
    if (ready) return ready;
    const out = path.join(work, 'out');
    const info = await recipe.build(path.join(work, 'work'), out, onProgress, options);
    fs.writeFileSync(path.join(out, 'image.json'), JSON.stringify({ name, cmdline: recipe.cmdline, builtAt: new Date().toISOString(), ...info }, null, 2) + '\n');
    if (fs.existsSync(p.dir)) {
      // Swapped in with two renames, so the image is whole at every moment but the
      // instant between them; VMs running from the old disk keep their open file.
      // (A leftover folder without image.json, an interrupted install, goes the same way.)
      const old = path.join(work, 'old');
      fs.renameSync(p.dir, old);
    }
    fs.renameSync(out, p.dir);
    const result = readReady(name);
    if (!result) throw new HangarError('INTERNAL', `image ${name} was built but cannot be read back`);
    onProgress('ready', 100);
    return result;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
    lock.release();
  }
}

/**
 * Returns the image, building it first if needed (minutes the first time,
 * instant afterwards). Concurrent callers, in this process or others, share
 * one build. Unknown name → NOT_FOUND.
 */
export async function ensureImage(name: string, onProgress: ProgressFn = () => {}): Promise<ReadyImage> {
  const image = await resolveImage(name, onProgress);
  if (image.kernel === undefined) throw new HangarError('INVALID_STATE', `image "${name}" is a disk image and brings no kernel`, { image: name });
  return image as ReadyImage;
}

/** Like ensureImage, for any image, an imported disk image (without a kernel) included: what the daemon boots VMs from. */
export async function resolveImage(name: string, onProgress: ProgressFn = () => {}): Promise<BootableImage> {
  if (!isBuiltIn(name)) {
    const local = getLocalImage(name);
    if (local) return readyLocal(local);
  }
  const recipe = recipeFor(name);
  const ready = readReady(name);
  if (ready) return ready;
  let job = inFlight.get(name);
  if (!job) {
    job = build(name, recipe, onProgress).finally(() => inFlight.delete(name));
    inFlight.set(name, job);
  }
  return job;
}

/**
 * Builds a built-in image now, even if it is already built (then the new
 * build replaces the old one only once it is complete). Shares the lock with
 * ensureImage, so a concurrent first-use build is waited for, not duplicated.
 */
export async function buildImage(name: string, options: BuildOptions = {}, onProgress: ProgressFn = () => {}): Promise<ReadyImage> {
  if (!isBuiltIn(name)) {
    if (getLocalImage(name)) throw new HangarError('INVALID_ARGUMENT', `"${name}" is an imported image: only built-in images are built`, { image: name });
  }
  const recipe = recipeFor(name);
  if (inFlight.has(name)) throw new HangarError('INVALID_STATE', `image ${name} is being built already`, { image: name });
  const job = build(name, recipe, onProgress, options, true).finally(() => inFlight.delete(name));
  inFlight.set(name, job);
  return job;
}

/** Any image the daemon can boot: an imported disk image brings no kernel (it boots by firmware from its own disk). */
export type BootableImage = Omit<ReadyImage, 'kernel'> & { kernel?: string };

function readyLocal(i: LocalImage): BootableImage {
  return {
    name: i.name, ...(i.kernel ? { kernel: i.kernel } : {}), ...(i.initrd ? { initrd: i.initrd } : {}), ...(i.cmdline !== undefined ? { cmdline: i.cmdline } : {}), sizeBytes: i.sizeBytes,
    ...(i.diskPath ? { disk: i.diskPath } : {}), ...(i.boot ? { boot: [...i.boot] } : {}),
  };
}

export function localImageEntry(i: LocalImage): Image {
  return {
    name: i.name, description: i.description, status: 'ready', origin: 'imported', sizeBytes: i.sizeBytes, ...(i.kernel ? { kernel: i.kernel } : {}),
    ...(i.initrd ? { initrd: i.initrd } : {}), ...(i.cmdline !== undefined ? { cmdline: i.cmdline } : {}), importedAt: i.importedAt,
    ...(i.diskPath ? { disk: i.diskPath } : {}), ...(i.boot ? { boot: [...i.boot] } : {}),
  };
}

/** Every known image: the built-in ones (built or not), then the imported ones. */
export function listImages(): Image[] {
  const builtIn = Object.entries(RECIPES).map(([name, recipe]): Image => {
    const ready = readReady(name);
    if (ready) {
      return {
        name, description: recipe.description, status: 'ready', origin: 'built-in', sizeBytes: ready.sizeBytes, kernel: ready.kernel,
        ...(ready.initrd ? { initrd: ready.initrd } : {}), ...(ready.cmdline !== undefined ? { cmdline: ready.cmdline } : {}),
        ...(ready.disk ? { disk: ready.disk } : {}), ...(ready.boot ? { boot: ready.boot } : {}), ...(ready.cloudInit ? { cloudInit: true } : {}),
      };
    }
    const building = inFlight.has(name) || buildLockHeld(imagePaths(name).lock);
    return { name, description: recipe.description, status: building ? 'building' : 'missing', origin: 'built-in' };
  });
  return [...builtIn, ...listLocalImages().filter((i) => !isBuiltIn(i.name)).map(localImageEntry)];
}

/**
 * Removes `.build-<image>-*` folders in the image cache that no live builder
 * owns: a builder takes <image>.lock before it makes its folder and removes
 * the folder before it lets the lock go, so a folder whose lock nobody alive
 * holds was left by a builder that died. The cache may be shared by several
 * daemons (HANGAR_IMAGE_DIR), hence the lock check rather than "all of them".
 */
export function cleanStaleBuildFolders(): string[] {
  const root = imageDir();
  let names: string[];
  try { names = fs.readdirSync(root); } catch { return []; }
  const removed: string[] = [];
  for (const recipe of Object.keys(RECIPES)) {
    const re = new RegExp(`^\\.build-${recipe.replace(/[.]/g, '\\.')}-[A-Za-z0-9]{6}$`);
    const mine = names.filter((n) => re.test(n));
    // Listed before the lock is looked at: a folder made after this check is not in the list.
    if (mine.length === 0 || inFlight.has(recipe) || buildLockHeld(imagePaths(recipe).lock)) continue;
    removed.push(...removeFolders(root, mine));
  }
  return removed;
}

/** Names of the images Hangar knows how to build. */
export function imageNames(): string[] {
  return Object.keys(RECIPES);
}

export function isBuiltIn(name: string): boolean {
  return Object.prototype.hasOwnProperty.call(RECIPES, name);
}

/** Imports an image from files on this host (see local.ts); built-in names are reserved. */
export async function importImage(req: ImportRequest): Promise<Image> {
  return localImageEntry(await importLocalImage(req, imageNames()));
}

/** A disk image import from the import folders: refusals now, the copy in `run` (disk-import.ts). */
export async function prepareDiskImageImport(req: DiskImportRequest): Promise<{ run: (report: DiskReportFn) => Promise<Image> }> {
  const prepared = await prepareDiskImport(req, imageNames());
  return { run: async (report) => localImageEntry(await prepared.run(report)) };
}

/** Deletes an imported image. Built-in ones cannot be deleted (INVALID_ARGUMENT); the caller checks that no VM uses it. */
export function deleteImage(name: string): void {
  if (isBuiltIn(name)) throw new HangarError('INVALID_ARGUMENT', `"${name}" is a built-in image and cannot be deleted`, { image: name });
  deleteLocalImage(name);
}

/** One set of uploads in progress per daemon (its operation manager), shared by its listeners. */
const uploadSets = new WeakMap<OperationManager, ImageUploads>();

export function imageUploads(operations: OperationManager): ImageUploads {
  let u = uploadSets.get(operations);
  if (!u) {
    u = new ImageUploads(operations, { reservedNames: imageNames, present: localImageEntry });
    uploadSets.set(operations, u);
  }
  return u;
}
