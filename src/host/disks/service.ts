/**
 * A VM's disks against the storage service: the volumes a create makes (the
 * root disk from the image's base disk, new data volumes), the checks on
 * volumes a request names, what the engine gets at start, attach and detach
 * (hot-plug where the engine can), online resize, and what a VM delete does
 * with its volumes.
 *
 * Who uses a volume is recorded by the storage service (its attachments);
 * the VM's spec lists its disks in order. Both change together, and a step
 * that fails undoes the ones before it.
 *
 * Volume lifetime, as Incus does it: the root volume made for a VM
 * (`default/<vm>-root`, marked `owned`) is part of the VM and goes with it;
 * every other volume, including one a launch made with `--disk data=50G`,
 * is a volume of its own that outlives the VM (detached, kept in its pool).
 */
import { HangarError, toHangarError } from '../../common/errors.js';
import { formatSize } from '../../common/sizes.js';
import type { Logger } from '../../common/log.js';
import type { DiskAttachment, EngineName, VmHandle } from '../../engines/engine.js';
import type { DiskRequest, VmDisk, VmDiskInfo } from '../api/schemas.js';
import type { StorageService, VolumeRecord } from '../storage/index.js';
import { qemuImgConvert, qemuImgResize, type DiskFormat } from '../storage/qemu-img.js';
import { diskFileFormat } from '../storage/overlay.js';
import { DEFAULT_POOL, planDisks, ROOT_DISK, specDisk, type DiskPlan } from './plan.js';

/** What disks need of an image: its base disk, when it has one. */
export interface DiskImage {
  name: string;
  /** Absolute path of the base disk (raw or qcow2) in the image's folder. */
  disk?: string;
}

/** Volume format a new volume gets on each engine: hangar-vmm reads raw files only. */
export function volumeFormatFor(engine: EngineName): DiskFormat {
  return engine === 'micro' ? 'raw' : 'qcow2';
}

function ref(volume: string): { pool: string; name: string } {
  const slash = volume.indexOf('/');
  return slash < 0 ? { pool: DEFAULT_POOL, name: volume } : { pool: volume.slice(0, slash), name: volume.slice(slash + 1) };
}

export class DiskService {
  constructor(private readonly storage: StorageService, private readonly log: Logger) {}

  /** The volume a VmDisk names; NOT_FOUND naming the disk when it has gone. */
  private volume(vm: string, d: VmDisk): VolumeRecord {
    const r = ref(d.volume);
    const v = this.storage.getVolume(r.pool, r.name);
    if (!v || v.state !== 'ready') throw new HangarError('NOT_FOUND', `disk ${d.name} of VM "${vm}": volume ${d.volume} does not exist`, { vm, disk: d.name, volume: d.volume });
    return v;
  }

  /**
   * Checks planned disks against storage before anything is made: existing
   * volumes exist, are attached to no other VM, suit the engine; pools exist
   * and their quota holds every new volume. Throws the first problem.
   */
  check(vm: string, plans: readonly DiskPlan[], engine: EngineName, extraBytes: Record<string, number> = {}): void {
    const wanted = new Map<string, number>(Object.entries(extraBytes));
    for (const p of plans) {
      if (p.create) {
        this.storage.requirePool(p.pool);
        const r = ref(p.volume);
        if (this.storage.getVolume(r.pool, r.name)) {
          throw new HangarError('ALREADY_EXISTS', `disk ${p.name}: volume ${p.volume} already exists; attach it with volume "${p.volume}" or choose another disk name`, { disk: p.name, volume: p.volume });
        }
        wanted.set(p.pool, (wanted.get(p.pool) ?? 0) + p.sizeBytes);
        continue;
      }
      const r = ref(p.volume);
      this.storage.requirePool(r.pool);
      const v = this.storage.getVolume(r.pool, r.name);
      if (!v || v.state !== 'ready') throw new HangarError('NOT_FOUND', `disk ${p.name}: no volume "${r.name}" in pool "${r.pool}"`, { disk: p.name, volume: p.volume });
      if (v.attachments.length > 0) {
        const who = v.attachments.map((a) => `VM ${a.vm} (disk ${a.device})`).join(', ');
        throw new HangarError('INVALID_STATE', `disk ${p.name}: volume ${p.volume} is already attached to ${who}; detach it there first`, { disk: p.name, volume: p.volume, usedBy: v.attachments.map((a) => a.vm) });
      }
      if (engine === 'micro' && v.format !== 'raw') {
        throw new HangarError('UNSUPPORTED', `disk ${p.name}: volume ${p.volume} is ${v.format}, and the micro engine (hangar-vmm) reads raw volumes only; convert it to a raw volume or use engine qemu`, { disk: p.name, volume: p.volume, format: v.format });
      }
    }
    for (const [poolName, bytes] of wanted) {
      const pool = this.storage.requirePool(poolName);
      const used = this.storage.poolUsage(pool).provisionedBytes;
      if (used + bytes > pool.quotaBytes) {
        throw new HangarError('RESOURCE_EXHAUSTED', `pool "${poolName}" quota exceeded: the new disks need ${formatSize(bytes)}, ${formatSize(Math.max(0, pool.quotaBytes - used))} of ${formatSize(pool.quotaBytes)} is free`, { pool: poolName, quotaBytes: pool.quotaBytes, provisionedBytes: used, requestedBytes: bytes });
      }
    }
  }

  /** The root disk's plan for an image with a base disk (null without one), with its size checked. */
  rootPlan(vm: string, image: DiskImage, rootSize: number | undefined): (DiskPlan & { create: true; base: string }) | null {
    if (!image.disk) {
      if (rootSize !== undefined) throw new HangarError('INVALID_ARGUMENT', `image "${image.name}" has no base disk, so there is no root disk to size (rootSize)`, { field: 'rootSize', image: image.name });
      return null;
    }
    const base = diskFileFormat(image.disk);
    const sizeBytes = rootSize ?? base.virtualBytes;
    if (sizeBytes < base.virtualBytes) {
      throw new HangarError('INVALID_ARGUMENT', `rootSize ${formatSize(sizeBytes)} is smaller than image "${image.name}"'s disk (${formatSize(base.virtualBytes)})`, { field: 'rootSize', minBytes: base.virtualBytes });
    }
    const volumeName = `${vm}-${ROOT_DISK}`;
    return { name: ROOT_DISK, volume: `${DEFAULT_POOL}/${volumeName}`, serial: ROOT_DISK, owned: true, create: true, pool: DEFAULT_POOL, volumeName, sizeBytes, base: image.disk };
  }

  /** Makes one planned volume (root: overlay or raw copy of the base; else empty). */
  private async make(vm: string, p: DiskPlan & { create: true; base?: string }, engine: EngineName): Promise<void> {
    const format = volumeFormatFor(engine);
    const description = p.owned ? `root disk of VM ${vm}` : `disk ${p.name} of VM ${vm}`;
    if (p.base === undefined) {
      await this.storage.createVolume({ pool: p.pool, name: p.volumeName, format, sizeBytes: p.sizeBytes, description });
      return;
    }
    if (format === 'qcow2') {
      // A thin qcow2 overlay: the base stays shared and read-only, the VM writes only its own changes.
      await this.storage.createVolume({ pool: p.pool, name: p.volumeName, backingFile: p.base, sizeBytes: p.sizeBytes, description });
      return;
    }
    // hangar-vmm takes raw files only: a full copy of the base, converted, grown to the root size.
    const base = diskFileFormat(p.base);
    const claim = this.storage.claimVolume({ pool: p.pool, name: p.volumeName, format: 'raw', sizeBytes: p.sizeBytes, origin: { kind: 'clone', from: p.base }, description });
    const work = claim.driver.workPath(p.volumeName, 'raw');
    try {
      await qemuImgConvert(p.base, work, { srcFormat: base.format, dstFormat: 'raw' });
      if (p.sizeBytes > base.virtualBytes) await qemuImgResize(work, 'raw', p.sizeBytes);
      claim.driver.install(work, p.volumeName, 'raw');
    } catch (e) {
      claim.driver.discardWork(work);
      claim.release();
      throw e;
    }
    this.storage.finishVolume(claim.pool.name, p.volumeName);
  }

  /**
   * Makes the volumes of `plans` that are new and records every disk as
   * attached to `vm`; undoes all of it when a step fails. Returns the disks
   * for the VM's spec, in order.
   */
  async provision(vm: string, plans: readonly (DiskPlan & { base?: string })[], engine: EngineName, onProgress?: (stage: string) => void): Promise<VmDisk[]> {
    const made: DiskPlan[] = [];
    const attached: DiskPlan[] = [];
    try {
      for (const p of plans) {
        if (p.create) {
          onProgress?.(`disk ${p.name}: ${p.base ? 'from the image' : formatSize(p.sizeBytes)}`);
          await this.make(vm, p, engine);
          made.push(p);
        }
        if (!p.create) {
          // Checked again right before the attach (no await in between): another request may have taken it since check().
          const r = ref(p.volume);
          const users = this.storage.getVolume(r.pool, r.name)?.attachments ?? [];
          if (users.length > 0) throw new HangarError('INVALID_STATE', `disk ${p.name}: volume ${p.volume} is already attached to VM ${users[0]!.vm}`, { disk: p.name, volume: p.volume });
        }
        this.storage.attach(p.volume, { vm, device: p.name, readOnly: p.readOnly ?? false });
        attached.push(p);
      }
    } catch (e) {
      this.undo(vm, made, attached);
      throw e;
    }
    return plans.map(specDisk);
  }

  /** Gives back what provision() did: attachments dropped, new volumes deleted. */
  undo(vm: string, made: readonly DiskPlan[], attached: readonly DiskPlan[]): void {
    for (const p of attached) {
      try { this.storage.detach(p.volume, vm, p.name); } catch (e) { this.log.warn({ vm, volume: p.volume, err: String(e) }, 'could not drop a disk attachment while undoing'); }
    }
    for (const p of made) {
      const r = ref(p.volume);
      try { this.storage.deleteVolume(r.pool, r.name); } catch (e) { this.log.warn({ vm, volume: p.volume, err: String(e) }, 'could not remove a volume while undoing'); }
    }
  }

  /** What the engine gets for one disk: the file, its format, and the backing files below it. */
  attachment(vm: string, d: VmDisk, engine: EngineName): DiskAttachment {
    const v = this.volume(vm, d);
    if (engine === 'micro' && v.format !== 'raw') {
      throw new HangarError('UNSUPPORTED', `disk ${d.name}: volume ${d.volume} is ${v.format}, and the micro engine (hangar-vmm) reads raw volumes only`, { disk: d.name, volume: d.volume, format: v.format });
    }
    const backingFiles: string[] = [];
    // The chain below an overlay: a base that is itself a volume may have a backing file too.
    for (let b = v.backing; b !== null && backingFiles.length < 8 && !backingFiles.includes(b);) {
      backingFiles.push(b);
      // Only ready volumes: one another VM's create is still making has no path yet (and is no base).
      const under = this.storage.listVolumes().find((o) => o.state === 'ready' && o.backing !== null && this.pathOf(o) === b);
      b = under?.backing ?? null;
    }
    return {
      id: d.name,
      path: this.pathOf(v),
      format: v.format,
      ...(d.readOnly ? { readOnly: true } : {}),
      ...(d.serial !== undefined ? { serial: d.serial } : {}),
      ...(backingFiles.length ? { backingFiles } : {}),
    };
  }

  private pathOf(v: VolumeRecord): string {
    return this.storage.volumePath(v.pool, v.name);
  }

  /** The engine's disks for a VM's spec, root disk first. */
  attachments(vm: string, disks: readonly VmDisk[], engine: EngineName): DiskAttachment[] {
    return disks.map((d) => this.attachment(vm, d, engine));
  }

  /** GET /1.0/vms/{name}/disks. */
  list(vm: string, disks: readonly VmDisk[]): VmDiskInfo[] {
    return disks.map((d) => {
      const info: VmDiskInfo = { name: d.name, volume: d.volume, readOnly: d.readOnly ?? false, owned: d.owned ?? false, ...(d.serial !== undefined ? { serial: d.serial } : {}) };
      const r = ref(d.volume);
      const v = this.storage.getVolume(r.pool, r.name);
      if (v) Object.assign(info, { format: v.format, sizeBytes: v.sizeBytes, path: this.pathOf(v) });
      return info;
    });
  }

  /** Plans one disk to attach to a VM that has `disks`, and checks it against storage. */
  planAttach(vm: string, disks: readonly VmDisk[], req: DiskRequest, engine: EngineName): DiskPlan {
    const [plan] = planDisks(vm, [req], disks.map((d) => d.name));
    this.check(vm, [plan!], engine);
    return plan!;
  }

  /**
   * Attaches a planned disk: makes its volume when new, records it, and plugs
   * it into the running VM when there is one (`handle`). Undone when any step
   * fails. Returns the disk for the spec.
   */
  async attach(vm: string, plan: DiskPlan, engine: EngineName, handle: VmHandle | null): Promise<VmDisk> {
    const [disk] = await this.provision(vm, [plan], engine);
    if (handle) {
      try {
        await handle.attachDisk!(this.attachment(vm, disk!, engine));
      } catch (e) {
        this.undo(vm, plan.create ? [plan] : [], [plan]);
        throw e;
      }
    }
    return disk!;
  }

  /** Unplugs disk `d` from the running VM (when `handle`), then drops its attachment. The volume stays. */
  async detach(vm: string, d: VmDisk, handle: VmHandle | null): Promise<void> {
    if (handle) await handle.detachDisk!(d.name);
    this.storage.detach(d.volume, vm, d.name);
  }

  /**
   * A VM is being deleted: its own root volume goes, every other volume is
   * detached and kept. Checked first, so a volume that cannot go (another
   * volume is based on it) stops the delete before anything changed.
   */
  releaseForDelete(vm: string, disks: readonly VmDisk[]): void {
    const owned = disks.filter((d) => d.owned);
    for (const d of owned) {
      const r = ref(d.volume);
      const v = this.storage.getVolume(r.pool, r.name);
      if (!v) continue;
      const file = this.pathOf(v);
      const dependents = this.storage.listVolumes().filter((o) => o.backing === file);
      if (dependents.length) {
        throw new HangarError('INVALID_STATE', `VM "${vm}"'s root volume ${d.volume} is the base of ${dependents.map((o) => `${o.pool}/${o.name}`).join(', ')}: delete those first`, { vm, volume: d.volume });
      }
    }
    this.storage.detachVm(vm);
    for (const d of owned) {
      const r = ref(d.volume);
      try {
        if (this.storage.getVolume(r.pool, r.name)) this.storage.deleteVolume(r.pool, r.name);
      } catch (e) {
        this.log.warn({ vm, volume: d.volume, err: toHangarError(e).message }, 'could not delete the root volume of a deleted VM');
      }
    }
  }
}
