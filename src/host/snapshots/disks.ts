/**
 * The DiskSource the daemon gives the snapshot manager, over the storage
 * service: a VM's disks are its spec's `disks` (root first), each a volume
 * "pool/volume"; a copy's disks become new volumes `<new VM>-<disk>` in
 * the same pool, claimed (recorded `creating`) before their file is
 * written and made ready, and attached to the new VM, in the transaction
 * that records the new VM. A claim a crash leaves is removed, file and
 * record, by the storage service's own recovery at the next daemon start.
 */
import { HangarError } from '../../common/errors.js';
import type { VmSpec } from '../api/schemas.js';
import type { StorageService } from '../storage/index.js';
import type { VmRecord } from '../store.js';
import { attachIsoVolume } from '../iso-media.js';
import type { CopyTarget, DiskSource } from './manager.js';
import type { VmDiskFile } from './rules.js';

const specDisks = (spec: VmSpec): VmSpec['disks'] => spec.disks ?? [];

export function storageDiskSource(storage: StorageService): DiskSource {
  return {
    disksOf(rec: VmRecord): VmDiskFile[] {
      return specDisks(rec.spec).map((d) => {
        const r = storage.parseRef(d.volume);
        const v = storage.getVolume(r.pool, r.volume);
        if (!v || v.state !== 'ready') throw new HangarError('NOT_FOUND', `disk ${d.name} of VM "${rec.name}": volume ${d.volume} does not exist`, { vm: rec.name, disk: d.name });
        return { name: d.name, volume: `${r.pool}/${r.volume}`, path: storage.volumePath(r.pool, r.volume), format: v.format, readOnly: d.readOnly ?? false };
      });
    },
    claimCopy(vm: string, disk: VmDiskFile, from: string, format: 'qcow2' | 'raw' = 'qcow2'): CopyTarget {
      const r = storage.parseRef(disk.volume);
      const src = storage.requireVolume(r.pool, r.volume);
      const name = `${vm}-${disk.name}`;
      // A raw copy is whole (micro-engine disks have no backing file).
      const claim = storage.claimVolume({ pool: r.pool, name, format, sizeBytes: src.sizeBytes, backing: format === 'raw' ? null : src.backing, origin: { kind: 'clone', from } });
      return {
        volume: `${r.pool}/${name}`,
        path: claim.driver.volumePath(name, format),
        commit: () => {
          storage.finishVolume(r.pool, name);
          storage.attach({ pool: r.pool, volume: name }, { vm, device: disk.name, readOnly: false });
        },
        release: claim.release,
      };
    },
    shareReadOnly(vm: string, disk: VmDiskFile): void {
      storage.attach(storage.parseRef(disk.volume), { vm, device: disk.name, readOnly: true });
    },
    shareIso(vm: string, iso: string | undefined): void {
      attachIsoVolume(storage, vm, iso);
    },
    copySpec(spec: VmSpec, copied: Map<string, string>): VmSpec {
      const disks = specDisks(spec).map((d) => (copied.has(d.name) ? { ...d, volume: copied.get(d.name)! } : { ...d }));
      return { ...spec, disks };
    },
  };
}
