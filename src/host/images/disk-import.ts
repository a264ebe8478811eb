/**
 * Disk images: a user's raw or qcow2 disk with its own boot loader becomes
 * an image whose base disk VMs overlay, and which boots by BIOS or UEFI
 * firmware (there is no kernel to boot directly).
 *
 * The file comes from the daemon's import folders (a path) or an upload
 * (upload.ts, part "disk"). Either way it is checked with inspectDiskImage
 * before qemu-img reads it: a backing or data file outside the allowed
 * folders (an upload may name none at all), a protocol name (`json:`,
 * `nbd:`…), another format, a corrupt or encrypted qcow2, or a virtual size
 * over what the image quota has left is refused. Then `qemu-img convert`
 * writes a standalone qcow2 of Hangar's own (no backing file, no data file,
 * 0600) into a hidden work folder, which installImage renames into place:
 * a refusal or a failure halfway leaves nothing behind.
 */
import fs from 'node:fs';
import path from 'node:path';
import { HangarError, toHangarError } from '../../common/errors.js';
import { formatSize } from '../../common/sizes.js';
import { inspectDiskImage, type DiskImageInspection } from '../storage/inspect.js';
import { qemuImgConvert, type DiskFormat } from '../storage/qemu-img.js';
import {
  checkImportRequest, claimImageName, installImage, makeImportWorkDir, usedImageBytes, DISK_FILE, type LocalImage,
} from './local.js';
import { importPolicy, openImportSource, reservedBytes, reserveImageBytes } from './policy.js';

/** Disk files larger than this are refused outright (the quota usually refuses far smaller ones). */
export const MAX_DISK_IMAGE_BYTES = 2 ** 41;

export type FirmwareBoot = 'bios' | 'uefi';

export interface DiskImportRequest {
  name: string;
  /** Absolute path in the daemon's import folders. */
  disk: string;
  /** The firmware its boot loader needs (default bios). */
  boot?: FirmwareBoot;
  /** What the file is; its bytes must agree (default: read from them). */
  format?: DiskFormat;
  description?: string;
}

export type ReportFn = (p: { stage: string; percent?: number }) => void;

/** Checks the fields every disk import has (name, description, boot, format). */
export function checkDiskImportFields(req: { name: string; boot?: unknown; format?: unknown; description?: string }, reserved: readonly string[]): void {
  checkImportRequest(req, reserved);
  if (req.boot !== undefined && req.boot !== 'bios' && req.boot !== 'uefi') {
    throw new HangarError('INVALID_ARGUMENT', `boot must be bios or uefi: a disk image boots by firmware, from its own boot loader`, { field: 'boot' });
  }
  if (req.format !== undefined && req.format !== 'raw' && req.format !== 'qcow2') {
    throw new HangarError('INVALID_ARGUMENT', 'format must be raw or qcow2', { field: 'format' });
  }
}

/** What the quota leaves for one more image now (bytes of virtual size). */
function headroom(ownReservation = 0): number {
  return Math.max(0, importPolicy().quotaBytes - usedImageBytes() - reservedBytes() + ownReservation);
}

/** Turns inspectDiskImage's over-size refusal into one that names the image quota. */
function quotaRefusal(e: unknown, what: string, room: number): unknown {
  if (e instanceof HangarError && e.details?.reason === 'too-large') {
    return new HangarError('RESOURCE_EXHAUSTED', `${what}: its virtual size is over what the image storage quota has left (${formatSize(room)} of ${formatSize(importPolicy().quotaBytes)})`, { ...e.details, quotaBytes: importPolicy().quotaBytes });
  }
  return e;
}

/**
 * Converts a checked disk into a work folder and installs it as image `name`.
 * Removes the work folder on any failure.
 */
async function convertAndInstall(
  info: DiskImageInspection, meta: { name: string; boot: FirmwareBoot; description: string; source: string }, report: ReportFn,
): Promise<LocalImage> {
  const work = makeImportWorkDir(meta.name);
  try {
    const out = path.join(work, DISK_FILE);
    report({ stage: 'converting', percent: 0 });
    await qemuImgConvert(info.path, out, { srcFormat: info.format, dstFormat: 'qcow2', onProgress: (p) => report({ stage: 'converting', percent: Math.min(99, p) }) });
    fs.chmodSync(out, 0o600);
    const image = installImage(work, {
      name: meta.name, description: meta.description, disk: DISK_FILE, boot: [meta.boot], virtualBytes: info.virtualBytes,
      source: { disk: meta.source }, importedAt: new Date().toISOString(),
    });
    report({ stage: 'ready', percent: 100 });
    return image;
  } finally {
    // After a successful install the folder has been renamed away and this removes nothing.
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/**
 * A path import, in two steps: everything that can be refused is refused
 * here, before the caller answers (name, path, inspection, quota); the
 * returned `run` does the copy (the caller runs it as an operation). Until
 * `run` settles the name and the bytes stay claimed; `run` releases them.
 */
export async function prepareDiskImport(req: DiskImportRequest, reserved: readonly string[]): Promise<{ run: (report: ReportFn) => Promise<LocalImage> }> {
  checkDiskImportFields(req, reserved);
  const release = claimImageName(req.name, reserved);
  let unreserve = (): void => {};
  try {
    const src = openImportSource(req.disk, 'disk', MAX_DISK_IMAGE_BYTES);
    let real: string;
    try {
      // What was opened, as the kernel sees it: the path checked is the path read.
      real = fs.readlinkSync(`/proc/self/fd/${src.fd}`);
    } finally {
      fs.closeSync(src.fd);
    }
    const room = headroom();
    let info: DiskImageInspection;
    try {
      // A backing file may lie beside it in the import folders; the copy flattens it.
      info = await inspectDiskImage(real, {
        allowedRoots: importPolicy().importDirs, maxVirtualBytes: room, displayName: req.disk, ...(req.format ? { format: req.format } : {}),
      });
    } catch (e) {
      throw quotaRefusal(e, req.disk, room);
    }
    unreserve = reserveImageBytes(`disk:${req.name}`, info.virtualBytes, usedImageBytes());
    const done = (): void => { unreserve(); release(); };
    return {
      run: async (report) => {
        try {
          return await convertAndInstall(info, {
            name: req.name, boot: req.boot ?? 'bios', source: req.disk,
            description: req.description ?? `imported ${info.format} disk ${path.basename(req.disk)} (${formatSize(info.virtualBytes)})`,
          }, report);
        } catch (e) {
          throw toHangarError(e);
        } finally {
          done();
        }
      },
    };
  } catch (e) {
    unreserve();
    release();
    throw toHangarError(e);
  }
}

/**
 * Finishes an uploaded disk (upload.ts): the file in `file` is checked as a
 * disk that names no other file at all (an upload has no business naming
 * files on this host), then converted and installed. The caller holds the
 * name and `declared` reserved bytes, and removes `file`'s folder.
 */
export async function finishDiskUpload(
  file: string, req: { name: string; boot?: FirmwareBoot; format?: DiskFormat; description?: string }, declared: number, report: ReportFn,
): Promise<LocalImage> {
  report({ stage: 'checking' });
  const room = headroom(declared);
  let info: DiskImageInspection;
  try {
    info = await inspectDiskImage(file, { allowedRoots: [], maxVirtualBytes: room, displayName: 'the uploaded disk', ...(req.format ? { format: req.format } : {}) });
  } catch (e) {
    throw quotaRefusal(e, 'the uploaded disk', room);
  }
  return convertAndInstall(info, {
    name: req.name, boot: req.boot ?? 'bios', source: 'upload',
    description: req.description ?? `uploaded ${info.format} disk (${formatSize(info.virtualBytes)})`,
  }, report);
}
