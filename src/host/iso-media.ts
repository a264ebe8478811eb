/**
 * A VM's ISO (its CD-ROM medium), changed after create:
 *
 *   PUT    /1.0/vms/{name}/iso  {iso}   insert, or change what is in the drive
 *   DELETE /1.0/vms/{name}/iso          eject
 *
 * The ISO is named as at create (boot.ts): a path in the daemon's import
 * folders or a raw storage volume "pool/volume", and checked the same way.
 * A stopped VM gets the change in its spec (the next start attaches it); a
 * running QEMU VM also gets it at once over QMP (engines/qemu/media.ts)
 * and keeps it across stop/start. A VM started without a drive (a
 * kernel-booted VM that had no ISO) must be stopped first.
 *
 * An ISO that is a storage volume is recorded as used by the VM (device
 * `cdrom`), so the volume cannot be deleted while a VM has it in its drive.
 */
import { HangarError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { VmHandle } from '../engines/engine.js';
import { formatVolumeRef, parseVolumeRef, type VolumeRef } from '../api/storage-names.js';
import { isoFile } from './boot.js';
import type { Store } from './store.js';
import type { StorageService } from './storage/index.js';

/** The device name an ISO volume's use is recorded under. */
export const ISO_DEVICE = 'cdrom';

/** The storage volume an ISO names, or null for a path in the import folders. */
export function isoVolumeRef(iso: string | undefined): VolumeRef | null {
  if (iso === undefined || iso.startsWith('/')) return null;
  return parseVolumeRef(iso);
}

/** Records that `vm` has the ISO volume `iso` in its drive (nothing for a path). */
export function attachIsoVolume(storage: StorageService | null | undefined, vm: string, iso: string | undefined): void {
  const ref = isoVolumeRef(iso);
  if (ref && storage) storage.attach(ref, { vm, device: ISO_DEVICE, readOnly: true });
}

/** Drops the record that `vm` has the ISO volume `iso` (nothing for a path). */
export function detachIsoVolume(storage: StorageService | null | undefined, vm: string, iso: string | undefined): void {
  const ref = isoVolumeRef(iso);
  if (ref && storage) storage.detach(ref, vm, ISO_DEVICE);
}

/**
 * Start of the daemon: every VM's ISO volume is recorded as in use, and no
 * `cdrom` use is recorded that the VM's spec does not name. The two change
 * in one transaction, but VMs made before ISO volumes were tracked (or a
 * data dir edited by hand) have no record, and the volume could then be
 * deleted under a VM that boots from it. Returns the fixes made.
 */
export function reconcileIsoVolumes(store: Store, storage: StorageService, log?: Logger): string[] {
  const fixes: string[] = [];
  store.transaction(() => {
    for (const rec of store.listVms()) {
      const want = isoVolumeRef(rec.spec.iso);
      const wanted = want ? formatVolumeRef(want) : null;
      for (const a of storage.attachmentsOfVm(rec.name)) {
        if (a.device !== ISO_DEVICE || formatVolumeRef(a) === wanted) continue;
        storage.detach({ pool: a.pool, volume: a.volume }, rec.name, ISO_DEVICE);
        fixes.push(`${rec.name}: dropped stale use of ${a.pool}/${a.volume}`);
      }
      if (!want) continue;
      const vol = storage.getVolume(want.pool, want.volume);
      if (!vol) {
        // Not made up here: the next start refuses the VM with a clear error (boot.ts checks the ISO).
        log?.warn({ vm: rec.name, iso: rec.spec.iso }, 'the VM names an ISO volume that does not exist');
        continue;
      }
      if (vol.attachments.some((a) => a.vm === rec.name && a.device === ISO_DEVICE)) continue;
      storage.attach(want, { vm: rec.name, device: ISO_DEVICE, readOnly: true });
      fixes.push(`${rec.name}: recorded use of ${formatVolumeRef(want)}`);
    }
  });
  if (fixes.length) log?.info({ fixes }, 'ISO volume uses reconciled');
  return fixes;
}

export interface VmIsoOpsDeps {
  store: Store;
  storage: StorageService | null | undefined;
  log: Logger;
  withLock<T>(name: string, fn: () => Promise<T>): Promise<T>;
  handleOf(name: string): VmHandle | null;
}

export interface VmIsoState {
  vm: string;
  /** What is in the drive now; null: empty. */
  iso: string | null;
  /** Whether the running VM's drive was changed at once (false: the VM is stopped, the next start uses it). */
  live: boolean;
  /** The running VM's drive as its engine reports it; null when the VM is not running or has no drive. */
  drive?: { inserted: boolean; file: string | null; trayOpen: boolean } | null;
}

export class VmIsoOps {
  constructor(private readonly d: VmIsoOpsDeps) {}

  /** The running VM's process to change the medium of, null when the VM is stopped. */
  private target(name: string): VmHandle | null {
    const rec = this.d.store.requireVm(name);
    if (rec.state === 'stopped' || rec.state === 'crashed') return null;
    if (rec.state !== 'running' && rec.state !== 'paused') {
      throw new HangarError('INVALID_STATE', `cannot change the ISO while VM "${name}" is ${rec.state}`, { name, state: rec.state });
    }
    const handle = this.d.handleOf(name);
    if (!handle) throw new HangarError('INVALID_STATE', `VM "${name}" has no running process`, { name });
    if (!handle.changeMedium) {
      throw new HangarError('UNSUPPORTED', `engine ${rec.spec.engine} cannot change media while the VM runs: stop VM "${name}" first`, { name, engine: rec.spec.engine });
    }
    return handle;
  }

  /** GET: what the spec says, and what the running VM's drive holds. */
  async show(name: string): Promise<VmIsoState> {
    const rec = this.d.store.requireVm(name);
    const handle = rec.state === 'running' || rec.state === 'paused' ? this.d.handleOf(name) : null;
    const drive = handle?.cdromMedium ? await handle.cdromMedium() : null;
    return { vm: name, iso: rec.spec.iso ?? null, live: handle !== null, drive };
  }

  /** Inserts `iso` (or changes the ISO in the drive to it). */
  insert(name: string, iso: string): Promise<VmIsoState> {
    this.d.store.requireVm(name);
    return this.d.withLock(name, async () => {
      const rec = this.d.store.requireVm(name);
      const file = isoFile(iso, this.d.storage);
      const handle = this.target(name);
      if (handle) await handle.changeMedium!(file);
      this.d.store.transaction(() => {
        detachIsoVolume(this.d.storage, name, rec.spec.iso);
        attachIsoVolume(this.d.storage, name, iso);
        this.d.store.setVmSpec(name, { ...rec.spec, iso });
      });
      this.d.log.info({ vm: name, iso, live: handle !== null }, 'ISO inserted');
      return { vm: name, iso, live: handle !== null };
    });
  }

  /** Ejects the ISO: the drive is empty now and at the next start. */
  eject(name: string): Promise<VmIsoState> {
    this.d.store.requireVm(name);
    return this.d.withLock(name, async () => {
      const rec = this.d.store.requireVm(name);
      if (rec.spec.iso === undefined) throw new HangarError('INVALID_STATE', `VM "${name}" has no ISO to eject`, { name });
      const handle = this.target(name);
      if (handle) await handle.changeMedium!(null);
      const { iso: old, ...rest } = rec.spec;
      this.d.store.transaction(() => {
        detachIsoVolume(this.d.storage, name, old);
        this.d.store.setVmSpec(name, rest);
      });
      this.d.log.info({ vm: name, iso: old, live: handle !== null }, 'ISO ejected');
      return { vm: name, iso: null, live: handle !== null };
    });
  }
}
