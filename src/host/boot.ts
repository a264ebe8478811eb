/**
 * How a VM boots, as the daemon decides it: at create, the boot mode and the
 * ISO of a request are checked and resolved into the VmSpec; at each start,
 * the spec becomes the engine's boot settings (kernel, or firmware with the
 * CD-ROM, the UEFI variable store and the display).
 *
 * - `kernel`: the image's kernel and initrd, handed to the engine; headless.
 * - `bios` / `uefi`: firmware (SeaBIOS / OVMF) runs the boot loader of the
 *   ISO, then of the root disk. These VMs get a display, served by VNC on a
 *   Unix socket in the VM's folder (display.ts).
 *
 * An ISO is read by the daemon, as root, so it may come only from places
 * Hangar governs, never from an arbitrary path an API client names: the
 * daemon's import folders (an absolute path, by the rules of
 * images/policy.ts: inside a folder as written and resolved, no symlink, a
 * regular file), or a raw storage volume ("pool/volume", e.g. one imported
 * or uploaded into a pool). Either way it must be an ISO 9660 image.
 */
import fs from 'node:fs';
import path from 'node:path';
import { HangarError } from '../common/errors.js';
import { isIso9660 } from '../common/iso.js';
import type { BootMode, EngineName } from '../api/engine.js';
import type { EngineVmConfig } from '../engines/engine.js';
import type { VmCreateRequest, VmDisplay, VmSpec } from './api/schemas.js';
import { openImportSource } from './images/policy.js';
import { parseVolumeRef } from '../api/storage-names.js';
import type { StorageService } from './storage/index.js';

/** What the ISO rules need of storage (absent: the daemon has none, only import folders serve). */
export type IsoVolumes = Pick<StorageService, 'requireVolume' | 'volumePath'> | null | undefined;

/** ISOs may be as large as a DVD image and more; the limit only guards against nonsense. */
const MAX_ISO_BYTES = 2 ** 42;
/** The VM's VNC socket and UEFI variable store, in its folder (removed with the VM). */
export const VNC_SOCKET_NAME = 'vnc.sock';
export const UEFI_VARS_NAME = 'uefi-vars.fd';

/** What the boot decision needs to know of an image (fields an image may lack are absent). */
export interface BootImage {
  name: string;
  kernel?: string;
  initrd?: string;
  /** The image's base disk (a root disk made from it boots by firmware). */
  disk?: string;
  /** The boot modes the image supports, when it says. */
  boot?: BootMode[];
}

export interface BootContext {
  engine: { name: EngineName; bootModes: BootMode[] };
  image: BootImage | undefined;
  /** The request gives the VM disks of its own (a root disk of a given size, or others). */
  hasDisks: boolean;
  /** Storage, for ISOs kept in volumes. */
  volumes?: IsoVolumes;
}

/**
 * Checks an ISO named by an API client: inside the import folders, a
 * regular file, ISO 9660. Returns the path as given. Errors say which rule
 * failed, and never whether a path outside the folders exists.
 */
export function checkIso(iso: unknown): string {
  const src = openImportSource(iso, 'iso', MAX_ISO_BYTES);
  try {
    if (!isIso9660(src.fd)) throw notIso(src.path);
    return src.path;
  } finally {
    fs.closeSync(src.fd);
  }
}

function notIso(what: string): HangarError {
  return new HangarError('INVALID_ARGUMENT', `iso ${what} is not an ISO 9660 image (no "CD001" volume descriptor at byte 32769)`, { field: 'iso', iso: what });
}

/**
 * The file behind an ISO as a VM names it: an absolute path (import
 * folders, checkIso) or "pool/volume" (a raw storage volume). Checked as
 * ISO 9660 either way; the spec keeps the name, the engine gets the file.
 */
export function isoFile(iso: string, volumes: IsoVolumes): string {
  if (iso.startsWith('/')) return checkIso(iso);
  const ref = iso.includes('/') ? parseVolumeRef(iso) : null;
  if (!ref) {
    throw new HangarError('INVALID_ARGUMENT', `iso "${iso}" must be an absolute path inside the daemon's import folders or a storage volume "pool/volume"`, { field: 'iso' });
  }
  if (!volumes) throw new HangarError('UNSUPPORTED', 'this daemon has no storage: an ISO must come from its import folders', { field: 'iso' });
  const vol = volumes.requireVolume(ref.pool, ref.volume);
  if (vol.format !== 'raw') throw new HangarError('INVALID_ARGUMENT', `iso volume ${iso} is ${vol.format}: an ISO is a raw volume`, { field: 'iso' });
  const file = volumes.volumePath(ref.pool, ref.volume);
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw new HangarError('UNAVAILABLE', `iso volume ${iso} cannot be read: ${(e as Error).message}`, { field: 'iso' });
  }
  try {
    if (!fs.fstatSync(fd).isFile() || !isIso9660(fd)) throw notIso(`volume ${iso}`);
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

function firmwareNeedsSomethingToBoot(mode: BootMode): HangarError {
  return new HangarError('INVALID_ARGUMENT', `boot ${mode} runs the boot loader of an ISO or a disk, and this VM has neither: give an ISO (--iso) or an image with a disk`, { field: 'boot' });
}

/**
 * The boot mode and ISO of a new VM. Default boot: `bios` when an ISO is
 * given (it is there to be booted), else `kernel` when the image brings a
 * kernel, else the firmware the image names (bios when it names none).
 */
export function resolveBoot(req: Pick<VmCreateRequest, 'boot' | 'iso'>, ctx: BootContext): Pick<VmSpec, 'boot' | 'iso'> {
  const img = ctx.image;
  // An image without a kernel (an imported disk image) boots with the firmware it names first.
  const boot: BootMode = req.boot ?? (req.iso !== undefined ? 'bios' : img?.kernel !== undefined || img === undefined ? 'kernel' : img.boot?.find((b) => b !== 'kernel') ?? 'bios');
  if (!ctx.engine.bootModes.includes(boot)) {
    if (boot === 'uefi' && ctx.engine.name === 'qemu') {
      throw new HangarError('UNSUPPORTED', 'boot uefi needs OVMF, which this host does not have: install the Debian package "ovmf"', { field: 'boot', engine: ctx.engine.name });
    }
    throw new HangarError('UNSUPPORTED', `engine ${ctx.engine.name} cannot boot ${boot} (it boots: ${ctx.engine.bootModes.join(', ') || 'nothing'})`, { field: 'boot', engine: ctx.engine.name });
  }
  if (boot === 'kernel') {
    if (img && img.kernel === undefined) throw new HangarError('INVALID_ARGUMENT', `image "${img.name}" brings no kernel: boot it with bios or uefi`, { field: 'boot' });
  } else {
    const imageDisk = img?.disk !== undefined;
    // An image not built yet (undefined) may bring a disk: only a known lack is refused here.
    if (req.iso === undefined && img !== undefined && !imageDisk && !ctx.hasDisks) throw firmwareNeedsSomethingToBoot(boot);
    // An image that lists its boot modes boots only those from its disk (an ISO brings its own loader).
    if (req.iso === undefined && img?.boot && !img.boot.includes(boot)) {
      throw new HangarError('INVALID_ARGUMENT', `image "${img.name}" does not boot with ${boot} (it boots: ${img.boot.join(', ')})`, { field: 'boot' });
    }
  }
  if (req.iso !== undefined) isoFile(req.iso, ctx.volumes);
  return { boot, ...(req.iso !== undefined ? { iso: req.iso } : {}) };
}

/** The display a VM has (firmware-booted VMs), or null: headless. */
export function displayOf(spec: Pick<VmSpec, 'boot'>, vmDir: string): VmDisplay | null {
  const boot = spec.boot ?? 'kernel';
  return boot === 'kernel' ? null : { type: 'vnc', socket: path.join(vmDir, VNC_SOCKET_NAME) };
}

/**
 * The engine's boot settings for one start. `kernel`: the image's kernel
 * with the command line the daemon composed. Firmware: the ISO (checked
 * again: the import folders or the file may have changed since create), the
 * UEFI variable store and the VNC socket in the VM's folder.
 */
export function bootConfig(spec: Pick<VmSpec, 'boot' | 'iso'>, image: BootImage, vmDir: string, cmdline: string | undefined, volumes?: IsoVolumes): Pick<EngineVmConfig, 'boot' | 'firmware' | 'cdrom' | 'cdromDrive' | 'vnc'> {
  const mode = spec.boot ?? 'kernel';
  const cdrom = spec.iso !== undefined ? isoFile(spec.iso, volumes) : undefined;
  const withCdrom = cdrom !== undefined ? { cdrom } : {};
  if (mode === 'kernel') {
    if (image.kernel === undefined) throw new HangarError('INVALID_STATE', `image "${image.name}" brings no kernel to boot`);
    return { boot: { kernel: image.kernel, ...(image.initrd ? { initrd: image.initrd } : {}), ...(cmdline !== undefined ? { cmdline } : {}) }, ...withCdrom };
  }
  return {
    firmware: { kind: mode, ...(mode === 'uefi' ? { varsFile: path.join(vmDir, UEFI_VARS_NAME) } : {}) },
    vnc: { socket: path.join(vmDir, VNC_SOCKET_NAME) },
    // Without an ISO, an empty drive: `hangar iso insert` can then put one in while the VM runs.
    ...(cdrom !== undefined ? withCdrom : { cdromDrive: true }),
  };
}

/** What an image list entry (GET /1.0/images) tells about booting; undefined while the image is not built. */
export function bootImageOf(entry: { name: string; status?: string; kernel?: string; disk?: string; boot?: BootMode[] } | undefined): BootImage | undefined {
  // Only a built image says what it brings; for any other the defaults apply and the start checks.
  if (!entry || entry.status !== 'ready') return undefined;
  return {
    name: entry.name,
    ...(entry.kernel !== undefined ? { kernel: entry.kernel } : {}),
    ...(entry.disk !== undefined ? { disk: entry.disk } : {}),
    ...(Array.isArray(entry.boot) ? { boot: entry.boot } : {}),
  };
}
