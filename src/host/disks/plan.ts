/**
 * The disks a create (or attach) request asks for, checked for everything
 * that needs no storage: device names (valid, unique, "root" reserved),
 * exactly one of size and volume, sizes, serials. The result names every
 * volume the VM will use, so the spec can be written before any volume
 * exists; storage checks (volume exists, attached elsewhere, quota, format
 * for the engine) follow in disks/service.ts.
 */
import { HangarError } from '../../common/errors.js';
import { formatSize, parseSize } from '../../common/sizes.js';
import { DEVICE_ID_RULE, isDeviceId } from '../../api/names.js';
import type { DiskRequest, VmDisk } from '../api/schemas.js';
import { SEED_DISK_ID } from '../cloudinit/index.js';

export const DEFAULT_POOL = 'default';
/** Disks one VM may have, root disk included (QEMU gets a PCIe root port per disk, plus spares). */
export const MAX_DISKS = 16;
/** Smallest volume worth making; also keeps typos such as "20" (bytes) from passing. */
export const MIN_DISK_BYTES = 1024 * 1024;
/** The device name of the root disk. */
export const ROOT_DISK = 'root';

const SERIAL_RE = /^[A-Za-z0-9_.-]{1,20}$/;

/** One disk as planned: a new volume to create, or an existing one to attach. */
export type DiskPlan = VmDisk & ({ create: true; pool: string; volumeName: string; sizeBytes: number } | { create: false });

function invalid(message: string, details: Record<string, unknown> = {}): never {
  throw new HangarError('INVALID_ARGUMENT', message, details);
}

/** "pool/volume" for a reference that may name no pool. */
export function qualifyVolume(volume: string, pool?: string, field = 'volume'): string {
  if (volume.includes('/')) {
    if (pool !== undefined && !volume.startsWith(`${pool}/`)) invalid(`${field}: volume "${volume}" names pool "${volume.split('/')[0]}" but pool "${pool}" was given`, { field });
    return volume;
  }
  return `${pool ?? DEFAULT_POOL}/${volume}`;
}

/** Parses a disk size: a whole number of 512-byte sectors, at least 1 MiB. */
export function diskSize(input: string | number, what: string): number {
  let bytes: number;
  try {
    bytes = parseSize(input, what);
  } catch (e) {
    if (e instanceof HangarError) throw new HangarError(e.code, e.message, { field: what });
    throw e;
  }
  if (bytes < MIN_DISK_BYTES) invalid(`${what} must be at least 1M, got ${formatSize(bytes)}`, { field: what });
  if (bytes % 512 !== 0) invalid(`${what} must be a multiple of 512 bytes, got ${bytes}`, { field: what });
  return bytes;
}

/**
 * Plans `requests` for VM `vm`; `taken` are device names already in use (the
 * root disk, disks attached before). Default names are disk1, disk2, ... (the
 * first free ones). A new volume is `<pool>/<vm>-<name>`.
 */
export function planDisks(vm: string, requests: readonly DiskRequest[], taken: readonly string[] = []): DiskPlan[] {
  const names = new Set(taken);
  if (names.size + requests.length > MAX_DISKS) invalid(`a VM has at most ${MAX_DISKS} disks, asked for ${names.size + requests.length}`, { field: 'disks' });
  const volumes = new Set<string>();
  const plans: DiskPlan[] = [];
  let next = 1;
  requests.forEach((r, i) => {
    const field = `disks[${i}]`;
    let name = r.name;
    if (name === undefined) {
      while (names.has(`disk${next}`)) next++;
      name = `disk${next}`;
    }
    if (!isDeviceId(name)) invalid(`${field}: disk name "${name}" must be ${DEVICE_ID_RULE}`, { field });
    if (name === ROOT_DISK) invalid(`${field}: "root" is the root disk's name; the root disk comes from the image (size it with rootSize)`, { field });
    if (name === SEED_DISK_ID) invalid(`${field}: "${SEED_DISK_ID}" is the name of the cloud-init seed disk`, { field });
    if (names.has(name)) invalid(`${field}: disk name "${name}" is used twice`, { field, disk: name });
    names.add(name);
    if ((r.size === undefined) === (r.volume === undefined)) invalid(`${field}: give either size (a new volume) or volume (an existing one)`, { field });
    if (r.serial !== undefined && !SERIAL_RE.test(r.serial)) invalid(`${field}: serial must be 1-20 letters, digits, "_", "." or "-"`, { field });
    // The disk's name is its serial by default: guests find it as /dev/disk/by-id/virtio-<name>.
    const serial = r.serial ?? (SERIAL_RE.test(name) ? name : undefined);
    const base = { name, ...(r.readOnly ? { readOnly: true } : {}), ...(serial !== undefined ? { serial } : {}) };
    if (r.size !== undefined) {
      const sizeBytes = diskSize(r.size, `${field}.size`);
      const pool = r.pool ?? DEFAULT_POOL;
      const volumeName = `${vm}-${name}`;
      const volume = `${pool}/${volumeName}`;
      if (volumes.has(volume)) invalid(`${field}: volume ${volume} is named twice`, { field });
      volumes.add(volume);
      plans.push({ ...base, volume, create: true, pool, volumeName, sizeBytes });
    } else {
      const volume = qualifyVolume(r.volume!, r.pool, field);
      if (volumes.has(volume)) invalid(`${field}: volume ${volume} is given twice`, { field, volume });
      volumes.add(volume);
      plans.push({ ...base, volume, create: false });
    }
  });
  return plans;
}

/** The spec's record of a planned disk. */
export function specDisk(p: DiskPlan): VmDisk {
  return { name: p.name, volume: p.volume, ...(p.readOnly ? { readOnly: true } : {}), ...(p.serial !== undefined ? { serial: p.serial } : {}), ...(p.owned ? { owned: true } : {}) };
}
