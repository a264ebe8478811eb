/**
 * What a storage pool's backend does for the storage service. The service
 * keeps the records, the quota and the rules; a driver only places bytes.
 * `dir` (a folder of image files) is the one driver today; LVM-thin or ZFS
 * drivers can implement the same interface later.
 */
import type { DiskFormat } from './qemu-img.js';
import type { PoolDriverName } from './records.js';

export interface PoolCapacity {
  /** Size of the filesystem (or volume group) that holds the pool. */
  totalBytes: number;
  /** What is still free there. */
  freeBytes: number;
}

export interface NewVolume {
  format: DiskFormat;
  sizeBytes?: number;
  /** A qcow2 overlay on this file (absolute path, format explicit). */
  backing?: { file: string; format: DiskFormat };
}

export interface PoolDriver {
  readonly name: PoolDriverName;
  /** Makes the pool's storage ready (idempotent). */
  prepare(): void;
  /** Where a volume's data is, for QEMU and qemu-img. */
  volumePath(volume: string, format: DiskFormat): string;
  /** A fresh path for a volume being made; `install` puts it in place. */
  workPath(volume: string, format: DiskFormat): string;
  /** Puts a finished work file in place as the volume; never replaces an existing one. */
  install(work: string, volume: string, format: DiskFormat): string;
  /** Makes a new empty volume (or overlay) in place. */
  create(volume: string, spec: NewVolume): Promise<string>;
  /** Removes a volume's data; a volume that is not there is no error. */
  remove(volume: string, format: DiskFormat): void;
  /** Removes a work path (a failed or cancelled job). */
  discardWork(work: string): void;
  /** Bytes a volume takes on the host (allocated, not virtual). */
  allocatedBytes(volume: string, format: DiskFormat): number;
  capacity(): PoolCapacity;
  /** Removes work files a crashed daemon left; returns what went. */
  cleanWork(): string[];
  /** True when the pool's storage holds nothing but what Hangar can remove. */
  isEmpty(): boolean;
  /** Gives the pool's storage back (dir: removes its folder if empty). */
  destroy(): void;
}
