/**
 * The DiskSource the daemon gives the snapshot manager: a VM's disks are
 * its spec's `disks` (root first), each a volume "pool/volume" that the
 * storage area resolves to a file; a copy's disks become new volumes
 * `<new VM>-<disk>` in the same pool as the originals.
 */
import type { VmSpec } from '../api/schemas.js';
import type { VmRecord } from '../store.js';
import type { DiskSource } from './manager.js';
import type { VmDiskFile } from './rules.js';

/** A disk as a VM's spec names it. */
interface SpecDisk {
  name: string;
  volume: string;
  readOnly?: boolean;
  serial?: string;
}

export interface VolumeResolver {
  /** The file of volume "pool/volume", and its format. */
  fileOf(volume: string): { path: string; format: 'raw' | 'qcow2' };
}

function specDisks(spec: VmSpec): SpecDisk[] {
  return ((spec as VmSpec & { disks?: SpecDisk[] }).disks ?? []);
}

export function specDiskSource(volumes: VolumeResolver): DiskSource {
  return {
    disksOf(rec: VmRecord): VmDiskFile[] {
      return specDisks(rec.spec).map((d) => {
        const f = volumes.fileOf(d.volume);
        return { name: d.name, volume: d.volume, path: f.path, format: f.format, readOnly: d.readOnly ?? false };
      });
    },
    copyTarget(vm: string, disk: VmDiskFile) {
      const pool = disk.volume.includes('/') ? disk.volume.slice(0, disk.volume.indexOf('/')) : 'default';
      const volume = `${pool}/${vm}-${disk.name}`;
      return { volume, path: volumes.fileOf(volume).path };
    },
    copySpec(spec: VmSpec, copied: Map<string, string>): VmSpec {
      const disks = specDisks(spec).map((d) => (copied.has(d.name) ? { ...d, volume: copied.get(d.name)! } : { ...d }));
      return { ...spec, ...(disks.length > 0 ? { disks } : {}) } as VmSpec;
    },
  };
}
