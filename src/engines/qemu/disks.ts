/**
 * How a Hangar disk becomes QEMU block nodes and a virtio-blk device: the
 * same description serves the command line (`-blockdev` JSON, `-device`) and
 * hot-plug over QMP (blockdev-add, device_add), so a disk attached to a
 * running VM is configured exactly like one present at start.
 *
 * Each disk is two block nodes: a protocol node `file-<id>` (the host file)
 * and a format node `disk-<id>` (raw or qcow2) on top of it, which the
 * device `dev-disk-<id>` uses. A qcow2 overlay's backing file is opened by
 * QEMU from the overlay's header, read-only.
 *
 * Cache and I/O mode (docs/engines.md, "Disks"): guest flushes always reach
 * the host's disk (never cache.no-flush, i.e. no cache=unsafe). Where the
 * file's filesystem takes O_DIRECT, the host page cache is bypassed
 * (cache.direct=on) with Linux native AIO: no double caching of guest data,
 * no host memory pressure from guest I/O, and a write the guest saw complete
 * is at least in the device's queue. Where it does not (tmpfs, some
 * overlay filesystems), writes go through the page cache (writeback) with
 * QEMU's thread pool, and the guest's flushes still become fdatasync().
 * Discards and zero writes are passed down as holes (discard=unmap,
 * detect-zeroes=unmap), so thin volumes stay thin.
 */
import fs from 'node:fs';
import type { DiskAttachment } from '../engine.js';

/** How a disk's file is opened: bypassing the page cache with native AIO, or through it with threads. */
export type DiskIoMode = 'direct' | 'buffered';

/** Node and device names of one disk, derived from its id (ids are checked: letters, digits, "-", "_"). */
export function diskNames(id: string): { file: string; format: string; device: string } {
  return { file: `file-${id}`, format: `disk-${id}`, device: `dev-disk-${id}` };
}

/** Block nodes of one disk: the protocol node first, then the format node on top of it. */
export function blockdevNodes(d: DiskAttachment, io: DiskIoMode): [Record<string, unknown>, Record<string, unknown>] {
  const n = diskNames(d.id);
  const readOnly = d.readOnly ?? false;
  const cache = { direct: io === 'direct', 'no-flush': false };
  const file = {
    driver: 'file',
    'node-name': n.file,
    filename: d.path,
    aio: io === 'direct' ? 'native' : 'threads',
    cache,
    discard: 'unmap',
    'read-only': readOnly,
  };
  const format = {
    driver: d.format,
    'node-name': n.format,
    file: n.file,
    cache,
    discard: 'unmap',
    'detect-zeroes': readOnly ? 'off' : 'unmap',
    'read-only': readOnly,
  };
  return [file, format];
}

/** The virtio-blk device of a disk, as device_add arguments (q35: PCI, in `bus` when given; microvm: MMIO). */
export function diskDevice(d: DiskAttachment, transport: 'pci' | 'device', bus?: string): Record<string, unknown> {
  const n = diskNames(d.id);
  const dev: Record<string, unknown> = { driver: `virtio-blk-${transport}`, drive: n.format, id: n.device };
  if (bus !== undefined) dev.bus = bus;
  if (d.serial !== undefined) dev.serial = d.serial;
  return dev;
}

/** The same device as a -device option string (ids, serials and bus names never hold commas). */
export function deviceOption(dev: Record<string, unknown>): string {
  const { driver, ...rest } = dev;
  return [String(driver), ...Object.entries(rest).map(([k, v]) => `${k}=${String(v)}`)].join(',');
}

/**
 * Whether `file`'s filesystem takes O_DIRECT: opening with it fails (EINVAL)
 * on those that do not, such as tmpfs. A file that cannot be opened at all
 * gets 'buffered' here; QEMU then reports the real problem itself.
 */
export function probeDiskIo(file: string): DiskIoMode {
  let fd: number | null = null;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_DIRECT);
    return 'direct';
  } catch {
    return 'buffered';
  } finally {
    if (fd !== null) fs.closeSync(fd);
  }
}

/**
 * PCIe root ports for disks on q35: one per disk present at start and a few
 * spare ones, because q35's root bus takes no hot-plugged devices; a device
 * behind a root port can be plugged and unplugged while the guest runs.
 */
export const SPARE_DISK_PORTS = 4;
/** Root ports on the root bus, counting other devices' slots: q35's pcie.0 has 32 slots. */
export const MAX_DISK_PORTS = 24;

export function diskPortName(i: number): string {
  return `disk-port${i}`;
}

export function diskPortCount(disks: number): number {
  return Math.min(MAX_DISK_PORTS, disks + SPARE_DISK_PORTS);
}
