/**
 * Storage pools and volumes: the records (records.ts), the per-pool quota,
 * the rules (no delete while in use, grow only), and the pool drivers that
 * place the bytes. The `default` pool, a dir pool at <data dir>/storage/default,
 * is made the first time anything asks for it.
 *
 * Every volume that is being made is recorded first (state `creating`, with
 * its virtual size, inside the same transaction as the quota check), so two
 * requests can neither take the same name nor the same free space; on any
 * failure the record and the work file go again, and a daemon that died
 * halfway has both removed at its next start (recover()).
 */
import fs from 'node:fs';
import path from 'node:path';
import { HangarError } from '../../common/errors.js';
import { formatSize } from '../../common/sizes.js';
import type { Logger } from '../../common/log.js';
import { DEFAULT_POOL, isPoolName, isVolumeName, parseVolumeRef, POOL_NAME_RULE, VOLUME_NAME_RULE, type VolumeRef } from '../../api/storage-names.js';
import type { Store } from '../store.js';
import { StorageRecords, type PoolRecord, type VolumeAttachment, type VolumeOrigin, type VolumeRecord } from './records.js';
import type { PoolDriver } from './driver.js';
import { DirPoolDriver } from './dir-driver.js';
import { diskFileFormat } from './overlay.js';
import { qemuImgResize, DISK_FORMATS, type DiskFormat } from './qemu-img.js';

/** A pool's quota when none is given: 100 GiB of virtual size. */
export const DEFAULT_POOL_QUOTA_BYTES = 100 * 2 ** 30;
/** Largest single volume: 16 TiB (also bounded by the pool's quota). */
export const MAX_VOLUME_BYTES = 16 * 2 ** 40;
/** Sizes are whole 512-byte sectors, and QEMU wants at least one. */
export const SECTOR = 512;

/**
 * Resizes a volume that a running VM holds open (QMP block_resize), provided
 * by the VM-disk code. Answers 'not-running' when that VM is not running, so
 * the storage service resizes the file itself.
 */
export type OnlineResizeHook = (req: { vm: string; device: string; pool: string; volume: string; path: string; sizeBytes: number }) => Promise<'resized' | 'not-running'>;

export interface StorageOptions {
  store: Store;
  dataDir: string;
  log?: Logger;
  /** Quota of the default pool and of pools created without one. */
  defaultQuotaBytes?: number;
}

export interface CreateVolumeRequest {
  pool?: string;
  name: string;
  format?: DiskFormat;
  /** Virtual size; may be left out for an overlay (the base's size). */
  sizeBytes?: number;
  /** Make a qcow2 overlay on this file (a Hangar-owned base: an image's disk, another volume). */
  backingFile?: string;
  description?: string;
  origin?: VolumeOrigin;
}

export interface CreatePoolRequest {
  name: string;
  driver?: 'dir';
  /** dir: the pool's folder (absolute); default <data dir>/storage/<name>. */
  path?: string;
  quotaBytes?: number;
}

export interface PoolUsage {
  volumes: number;
  /** Sum of the volumes' virtual sizes, what the quota counts. */
  provisionedBytes: number;
  /** What the volumes take on the host. */
  allocatedBytes: number;
  totalBytes: number;
  freeBytes: number;
}

/** Folders no pool may be (or be inside): the system's own. */
const FORBIDDEN_POOL_ROOTS = ['/proc', '/sys', '/dev', '/run', '/boot', '/etc', '/bin', '/sbin', '/lib', '/lib64', '/usr'];

export class StorageService {
  readonly records: StorageRecords;
  readonly dataDir: string;
  private readonly log: Logger | undefined;
  private readonly defaultQuota: number;
  private onlineResize: OnlineResizeHook | null = null;
  /** Volumes with a job on them (resize, clone source, export), so delete waits its turn. */
  private readonly busy = new Map<string, string>();

  constructor(opts: StorageOptions) {
    this.records = new StorageRecords(opts.store);
    this.dataDir = opts.dataDir;
    this.log = opts.log;
    this.defaultQuota = opts.defaultQuotaBytes ?? DEFAULT_POOL_QUOTA_BYTES;
    checkQuota(this.defaultQuota);
  }

  /** Set by the VM-disk code: how to grow a volume a running VM holds. */
  setOnlineResizeHook(fn: OnlineResizeHook | null): void {
    this.onlineResize = fn;
  }

  /** The folder the default pool (and pools created without a path) live under. */
  storageRoot(): string {
    return path.join(this.dataDir, 'storage');
  }

  /**
   * Start of the daemon: volumes a previous daemon left half made are removed
   * (record and files), as are work files in every pool. Returns the volumes removed.
   */
  recover(): string[] {
    const removed: string[] = [];
    for (const v of this.records.volumesInState('creating')) {
      const pool = this.records.getPool(v.pool);
      if (pool) this.driverOf(pool).remove(v.name, v.format);
      this.records.deleteVolume(v.pool, v.name);
      removed.push(`${v.pool}/${v.name}`);
    }
    for (const p of this.records.listPools()) {
      const gone = this.driverOf(p).cleanWork();
      if (gone.length) this.log?.info({ pool: p.name, removed: gone }, 'removed work files a previous daemon left behind');
    }
    if (removed.length) this.log?.warn({ volumes: removed }, 'removed volumes a previous daemon left half made');
    return removed;
  }

  // --- pools -----------------------------------------------------------------

  driverOf(pool: PoolRecord): PoolDriver {
    switch (pool.driver) {
      case 'dir': return new DirPoolDriver(pool.path);
      default: throw new HangarError('UNSUPPORTED', `pool ${pool.name} uses driver "${String(pool.driver)}", which this hangard does not have`);
    }
  }

  private ensureDefaultPool(): PoolRecord {
    const cur = this.records.getPool(DEFAULT_POOL);
    if (cur) return cur;
    const pool: PoolRecord = {
      name: DEFAULT_POOL, driver: 'dir', path: path.join(this.storageRoot(), DEFAULT_POOL),
      quotaBytes: this.defaultQuota, config: {}, createdAt: new Date().toISOString(),
    };
    fs.mkdirSync(this.storageRoot(), { recursive: true, mode: 0o700 });
    this.driverOf(pool).prepare();
    try {
      this.records.insertPool(pool);
    } catch (e) {
      if (!(e instanceof HangarError && e.code === 'ALREADY_EXISTS')) throw e;
    }
    return this.records.getPool(DEFAULT_POOL)!;
  }

  getPool(name: string): PoolRecord | null {
    if (name === DEFAULT_POOL) return this.ensureDefaultPool();
    return this.records.getPool(name);
  }

  requirePool(name: string): PoolRecord {
    if (!isPoolName(name)) throw new HangarError('INVALID_ARGUMENT', `"${name}" is not a pool name: ${POOL_NAME_RULE}`, { pool: name });
    const p = this.getPool(name);
    if (!p) throw new HangarError('NOT_FOUND', `no storage pool named "${name}"`, { pool: name });
    return p;
  }

  listPools(): PoolRecord[] {
    this.ensureDefaultPool();
    return this.records.listPools();
  }

  poolUsage(pool: PoolRecord): PoolUsage {
    const driver = this.driverOf(pool);
    const vols = this.records.listVolumes(pool.name);
    const cap = driver.capacity();
    return {
      volumes: vols.length,
      provisionedBytes: this.records.provisionedBytes(pool.name),
      allocatedBytes: vols.reduce((n, v) => n + driver.allocatedBytes(v.name, v.format), 0),
      totalBytes: cap.totalBytes,
      freeBytes: cap.freeBytes,
    };
  }

  createPool(req: CreatePoolRequest): PoolRecord {
    if (!isPoolName(req.name)) throw new HangarError('INVALID_ARGUMENT', `"${req.name}" is not a pool name: ${POOL_NAME_RULE}`, { pool: req.name });
    const driver = req.driver ?? 'dir';
    if (driver !== 'dir') throw new HangarError('UNSUPPORTED', `storage driver "${String(driver)}" is not available (this hangard has: dir)`);
    if (req.quotaBytes !== undefined) checkQuota(req.quotaBytes);
    if (req.name === DEFAULT_POOL) this.ensureDefaultPool();
    if (this.records.getPool(req.name)) throw new HangarError('ALREADY_EXISTS', `a storage pool named "${req.name}" already exists`, { pool: req.name });
    const dir = req.path === undefined ? path.join(this.storageRoot(), req.name) : this.checkPoolPath(req.path);
    if (req.path === undefined) fs.mkdirSync(this.storageRoot(), { recursive: true, mode: 0o700 });
    const existed = fs.existsSync(dir);
    if (req.path === undefined && existed && fs.readdirSync(dir).length > 0) {
      throw new HangarError('INVALID_STATE', `${dir} already holds files; move them away or give the pool another name`, { pool: req.name });
    }
    // A folder Hangar made goes with the pool; one the admin gave stays.
    const pool: PoolRecord = { name: req.name, driver, path: dir, quotaBytes: req.quotaBytes ?? this.defaultQuota, config: { createdFolder: !existed }, createdAt: new Date().toISOString() };
    this.driverOf(pool).prepare();
    try {
      this.records.insertPool(pool);
    } catch (e) {
      if (!existed) fs.rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    return pool;
  }

  /** A dir pool's folder as given: absolute, normalized, not a system folder, not another pool's, empty if it exists. */
  private checkPoolPath(p: string): string {
    if (typeof p !== 'string' || !path.isAbsolute(p) || p.includes('\0')) throw new HangarError('INVALID_ARGUMENT', `a dir pool's path must be an absolute path, got "${p}"`, { field: 'path' });
    const dir = path.resolve(p);
    if (dir === '/' || FORBIDDEN_POOL_ROOTS.some((r) => dir === r || dir.startsWith(`${r}/`))) {
      throw new HangarError('INVALID_ARGUMENT', `${dir} is a system folder and cannot hold a storage pool`, { field: 'path' });
    }
    let real = dir;
    if (fs.existsSync(dir)) {
      const st = fs.lstatSync(dir);
      if (st.isSymbolicLink()) throw new HangarError('INVALID_ARGUMENT', `${dir} is a symbolic link: give the folder itself`, { field: 'path' });
      if (!st.isDirectory()) throw new HangarError('INVALID_ARGUMENT', `${dir} exists and is not a folder`, { field: 'path' });
      if (fs.readdirSync(dir).length > 0) throw new HangarError('INVALID_ARGUMENT', `${dir} is not empty: a new pool starts in an empty folder`, { field: 'path' });
      real = fs.realpathSync(dir);
    }
    for (const other of this.records.listPools()) {
      const rel = path.relative(other.path, real);
      const rel2 = path.relative(real, other.path);
      if (rel === '' || !rel.startsWith('..') || !rel2.startsWith('..')) {
        throw new HangarError('INVALID_ARGUMENT', `${dir} overlaps pool "${other.name}" (${other.path})`, { field: 'path' });
      }
    }
    return real;
  }

  setPoolQuota(name: string, quotaBytes: number): PoolRecord {
    checkQuota(quotaBytes);
    const pool = this.requirePool(name);
    this.records.updatePoolQuota(pool.name, quotaBytes);
    return this.requirePool(name);
  }

  /** Removes a pool that has no volumes (its folder too when Hangar made it). The default pool stays. */
  deletePool(name: string): void {
    const pool = this.requirePool(name);
    if (pool.name === DEFAULT_POOL) throw new HangarError('INVALID_STATE', 'the default pool cannot be deleted');
    const n = this.records.countVolumes(pool.name);
    if (n > 0) throw new HangarError('INVALID_STATE', `pool "${name}" still has ${n} volume${n === 1 ? '' : 's'}: delete them first`, { pool: name, volumes: n });
    const driver = this.driverOf(pool);
    if (!driver.isEmpty()) throw new HangarError('INVALID_STATE', `pool "${name}"'s folder ${pool.path} holds files Hangar does not know; remove them first`, { pool: name });
    this.records.deletePool(pool.name);
    if (pool.config.createdFolder !== false) driver.destroy();
    else driver.cleanWork();
  }

  // --- volumes -----------------------------------------------------------------

  /** Reads "pool/volume" (a bare name means the default pool). */
  parseRef(ref: string): VolumeRef {
    const r = parseVolumeRef(ref);
    if (!r) throw new HangarError('INVALID_ARGUMENT', `"${ref}" is not a volume name ("pool/volume"; ${VOLUME_NAME_RULE})`, { volume: ref });
    return r;
  }

  listVolumes(pool?: string): VolumeRecord[] {
    if (pool !== undefined) this.requirePool(pool);
    return this.records.listVolumes(pool);
  }

  getVolume(pool: string, name: string): VolumeRecord | null {
    if (!isPoolName(pool) || !isVolumeName(name)) return null;
    return this.records.getVolume(pool, name);
  }

  /** Like getVolume, but a missing (or half made) volume is a NOT_FOUND error. */
  requireVolume(pool: string, name: string): VolumeRecord {
    const v = this.getVolume(pool, name);
    if (!v || v.state !== 'ready') throw new HangarError('NOT_FOUND', `no volume "${name}" in pool "${pool}"`, { pool, volume: name });
    return v;
  }

  /** Where a volume's data is (for QEMU): by "pool/volume" or by pool and name. */
  volumePath(poolOrRef: string, name?: string): string {
    const ref = name === undefined ? this.parseRef(poolOrRef) : { pool: poolOrRef, volume: name };
    const v = this.requireVolume(ref.pool, ref.volume);
    return this.driverOf(this.requirePool(v.pool)).volumePath(v.name, v.format);
  }

  /**
   * Claims a name and quota for a new volume: records it `creating`. The
   * quota check and the insert are one transaction. Returns the pool and a
   * function that drops the claim again.
   */
  claimVolume(req: { pool: string; name: string; format: DiskFormat; sizeBytes: number; backing?: string | null; origin?: VolumeOrigin; description?: string }): { pool: PoolRecord; driver: PoolDriver; release: () => void } {
    if (!isVolumeName(req.name)) throw new HangarError('INVALID_ARGUMENT', `"${req.name}" is not a volume name: ${VOLUME_NAME_RULE}`, { volume: req.name });
    if (!DISK_FORMATS.includes(req.format)) throw new HangarError('INVALID_ARGUMENT', `volume format must be raw or qcow2, got "${String(req.format)}"`);
    checkVolumeSize(req.sizeBytes);
    const pool = this.requirePool(req.pool);
    const driver = this.driverOf(pool);
    this.records.transaction(() => {
      const used = this.records.provisionedBytes(pool.name);
      if (used + req.sizeBytes > pool.quotaBytes) throw quotaError(pool, used, req.sizeBytes);
      this.records.insertVolume({
        pool: pool.name, name: req.name, format: req.format, sizeBytes: req.sizeBytes, state: 'creating',
        backing: req.backing ?? null, origin: req.origin ?? null, description: req.description ?? null, createdAt: new Date().toISOString(),
      });
    });
    let released = false;
    return {
      pool,
      driver,
      release: () => {
        if (released) return;
        released = true;
        this.records.deleteVolume(pool.name, req.name);
      },
    };
  }

  /** Marks a claimed volume ready (its file is in place). */
  finishVolume(pool: string, name: string, patch: { sizeBytes?: number } = {}): VolumeRecord {
    this.records.updateVolume(pool, name, { state: 'ready', ...patch });
    return this.requireVolume(pool, name);
  }

  /** Creates an empty volume, or a qcow2 overlay on `backingFile`. */
  async createVolume(req: CreateVolumeRequest): Promise<VolumeRecord> {
    const poolName = req.pool ?? DEFAULT_POOL;
    let format: DiskFormat = req.format ?? 'qcow2';
    let backing: { file: string; format: DiskFormat } | undefined;
    let size = req.sizeBytes;
    if (req.backingFile !== undefined) {
      if (req.format !== undefined && req.format !== 'qcow2') throw new HangarError('INVALID_ARGUMENT', 'an overlay volume is always qcow2');
      format = 'qcow2';
      if (!path.isAbsolute(req.backingFile)) throw new HangarError('INVALID_ARGUMENT', 'the backing file must be an absolute path');
      let real: string;
      try { real = fs.realpathSync(req.backingFile); } catch { throw new HangarError('NOT_FOUND', `base image ${req.backingFile} does not exist`, { path: req.backingFile }); }
      const base = diskFileFormat(real);
      backing = { file: real, format: base.format };
      size ??= base.virtualBytes;
      if (size < base.virtualBytes) {
        throw new HangarError('INVALID_ARGUMENT', `an overlay cannot be smaller than its base: ${formatSize(size)} < ${formatSize(base.virtualBytes)}`, { sizeBytes: size, baseBytes: base.virtualBytes });
      }
    }
    if (size === undefined) throw new HangarError('INVALID_ARGUMENT', 'a new volume needs a size');
    size = roundUpToSector(size);
    const claim = this.claimVolume({
      pool: poolName, name: req.name, format, sizeBytes: size, backing: backing?.file ?? null,
      origin: req.origin ?? (backing ? { kind: 'overlay', base: backing.file } : { kind: 'empty' }),
      ...(req.description !== undefined ? { description: req.description } : {}),
    });
    try {
      await claim.driver.create(req.name, { format, sizeBytes: size, ...(backing ? { backing } : {}) });
    } catch (e) {
      claim.release();
      throw e;
    }
    return this.finishVolume(claim.pool.name, req.name);
  }

  /** Deletes a volume that no VM uses, with its file. */
  deleteVolume(pool: string, name: string): void {
    const v = this.requireVolume(pool, name);
    if (v.attachments.length > 0) {
      throw new HangarError('INVALID_STATE', `volume ${pool}/${name} is used by ${v.attachments.map((a) => `VM ${a.vm} (${a.device})`).join(', ')}: detach it first`, { pool, volume: name, usedBy: v.attachments.map((a) => a.vm) });
    }
    const job = this.busy.get(key(pool, name));
    if (job) throw new HangarError('INVALID_STATE', `volume ${pool}/${name} is busy (${job}); try again when it is done`, { pool, volume: name });
    const file = this.driverOf(this.requirePool(pool)).volumePath(name, v.format);
    let real = file;
    try { real = fs.realpathSync(file); } catch { /* already gone: nothing can be based on it */ }
    const dependents = this.records.listVolumes().filter((o) => o.backing === file || o.backing === real);
    if (dependents.length > 0) {
      throw new HangarError('INVALID_STATE', `volume ${pool}/${name} is the base of ${dependents.map((d) => `${d.pool}/${d.name}`).join(', ')}: delete those first`, { pool, volume: name });
    }
    const driver = this.driverOf(this.requirePool(pool));
    this.records.deleteVolume(pool, name);
    driver.remove(name, v.format);
  }

  /** Marks a volume as used by a VM's device (a used volume cannot be deleted). */
  attach(ref: string | VolumeRef, a: VolumeAttachment): VolumeRecord {
    const r = typeof ref === 'string' ? this.parseRef(ref) : ref;
    this.requireVolume(r.pool, r.volume);
    this.records.attach(r.pool, r.volume, a);
    return this.requireVolume(r.pool, r.volume);
  }

  /** Drops a VM's use of a volume (one device, or all of that VM's when `device` is left out). */
  detach(ref: string | VolumeRef, vm: string, device?: string): void {
    const r = typeof ref === 'string' ? this.parseRef(ref) : ref;
    this.records.detach(r.pool, r.volume, vm, device);
  }

  /** The volumes a VM uses, with the device of each use. */
  attachmentsOfVm(vm: string): Array<VolumeAttachment & { pool: string; volume: string }> {
    return this.records.attachmentsOfVm(vm);
  }

  /** Drops every use of volumes by a VM (the VM is deleted). */
  detachVm(vm: string): void {
    this.records.detachVm(vm);
  }

  /** Runs `fn` with the volume marked busy (`what`), so delete refuses meanwhile. */
  async withBusy<T>(pool: string, name: string, what: string, fn: () => Promise<T>): Promise<T> {
    const k = key(pool, name);
    const cur = this.busy.get(k);
    if (cur) throw new HangarError('INVALID_STATE', `volume ${pool}/${name} is busy (${cur}); try again when it is done`, { pool, volume: name });
    this.busy.set(k, what);
    try {
      return await fn();
    } finally {
      this.busy.delete(k);
    }
  }

  /**
   * Grows a volume to `sizeBytes` (never shrinks: data would be lost). A volume
   * a running VM holds is grown by that VM's QEMU (the online-resize hook), so
   * the guest sees the new size at once; otherwise qemu-img resizes the file.
   */
  async resizeVolume(pool: string, name: string, sizeBytes: number): Promise<VolumeRecord> {
    const v = this.requireVolume(pool, name);
    checkVolumeSize(sizeBytes);
    const size = roundUpToSector(sizeBytes);
    if (size < v.sizeBytes) throw new HangarError('INVALID_ARGUMENT', `volumes only grow: ${pool}/${name} is ${formatSize(v.sizeBytes)}, asked for ${formatSize(size)}`, { sizeBytes: size, currentBytes: v.sizeBytes });
    if (size === v.sizeBytes) return v;
    const poolRec = this.requirePool(pool);
    return this.withBusy(pool, name, 'resizing', async () => {
      const grow = size - v.sizeBytes;
      // Quota check and the new size recorded in one step; put back if the resize fails.
      this.records.transaction(() => {
        const used = this.records.provisionedBytes(pool);
        if (used + grow > poolRec.quotaBytes) throw quotaError(poolRec, used, grow);
        this.records.updateVolume(pool, name, { sizeBytes: size });
      });
      try {
        const file = this.driverOf(poolRec).volumePath(name, v.format);
        let online = false;
        for (const a of v.attachments) {
          if (!this.onlineResize) break;
          const r = await this.onlineResize({ vm: a.vm, device: a.device, pool, volume: name, path: file, sizeBytes: size });
          if (r === 'resized') { online = true; break; }
        }
        if (!online) {
          await qemuImgResize(file, v.format, size).catch((e: unknown) => {
            if (e instanceof HangarError && /lock|another process/i.test(e.message)) {
              throw new HangarError('INVALID_STATE', `volume ${pool}/${name} is held by a running VM that cannot grow it online; stop the VM and resize again`, { pool, volume: name });
            }
            throw e;
          });
        }
      } catch (e) {
        this.records.updateVolume(pool, name, { sizeBytes: v.sizeBytes });
        throw e;
      }
      return this.requireVolume(pool, name);
    });
  }
}

function key(pool: string, name: string): string {
  return `${pool}/${name}`;
}

function checkQuota(q: number): void {
  if (!Number.isSafeInteger(q) || q < 0) throw new HangarError('INVALID_ARGUMENT', `a pool quota must be a whole number of bytes >= 0, got ${q}`);
}

function checkVolumeSize(n: number): void {
  if (!Number.isSafeInteger(n) || n < 1) throw new HangarError('INVALID_ARGUMENT', `a volume size must be a whole number of bytes > 0, got ${n}`);
  if (n > MAX_VOLUME_BYTES) throw new HangarError('INVALID_ARGUMENT', `a volume cannot be larger than ${formatSize(MAX_VOLUME_BYTES)}`, { max: MAX_VOLUME_BYTES });
}

export function roundUpToSector(n: number): number {
  return Math.ceil(n / SECTOR) * SECTOR;
}

function quotaError(pool: PoolRecord, used: number, wanted: number): HangarError {
  return new HangarError('RESOURCE_EXHAUSTED',
    `pool "${pool.name}" quota exceeded: this needs ${formatSize(wanted)}, ${formatSize(Math.max(0, pool.quotaBytes - used))} of ${formatSize(pool.quotaBytes)} is free`,
    { pool: pool.name, quotaBytes: pool.quotaBytes, provisionedBytes: used, requestedBytes: wanted });
}
