/**
 * Pools, volumes and attachments in SQLite (tables `pools`, `volumes`,
 * `volume_attachments`, made by the store's migration). A volume is inserted
 * as `creating` before its file is made, so two requests cannot both take a
 * name, and becomes `ready` once the file is in place; a daemon that dies in
 * between leaves a `creating` row that the next start removes with its file.
 */
import { HangarError } from '../../common/errors.js';
import type { Store } from '../store.js';
import type { DiskFormat } from './qemu-img.js';

export type PoolDriverName = 'dir';
export type VolumeState = 'creating' | 'ready';

export interface PoolRecord {
  name: string;
  driver: PoolDriverName;
  /** The pool's folder (dir driver): absolute. */
  path: string;
  /** Most bytes the virtual sizes of all its volumes may add up to. */
  quotaBytes: number;
  config: Record<string, unknown>;
  createdAt: string;
}

/** How a volume came to be. */
export type VolumeOrigin =
  | { kind: 'empty' }
  | { kind: 'overlay'; base: string }
  | { kind: 'clone'; from: string }
  | { kind: 'import'; source: string }
  | { kind: 'upload' };

/** A VM that uses a volume, as device `device` of that VM. */
export interface VolumeAttachment {
  vm: string;
  device: string;
  readOnly: boolean;
}

export interface VolumeRecord {
  pool: string;
  name: string;
  format: DiskFormat;
  /** Virtual size in bytes. */
  sizeBytes: number;
  state: VolumeState;
  /** Absolute path of the backing file (overlays), null for standalone volumes. */
  backing: string | null;
  origin: VolumeOrigin | null;
  description: string | null;
  createdAt: string;
  /** The VMs that use it; a volume in use cannot be deleted. */
  attachments: VolumeAttachment[];
}

interface PoolRow { name: string; driver: string; path: string; quota_bytes: number; config: string; created_at: string }
interface VolumeRow {
  pool: string; name: string; format: string; size_bytes: number; state: string; backing: string | null;
  origin: string | null; description: string | null; created_at: string;
}
interface AttachmentRow { pool: string; volume: string; vm: string; device: string; read_only: number }

function poolFromRow(r: PoolRow): PoolRecord {
  return { name: r.name, driver: r.driver as PoolDriverName, path: r.path, quotaBytes: r.quota_bytes, config: JSON.parse(r.config) as Record<string, unknown>, createdAt: r.created_at };
}

export class StorageRecords {
  constructor(private readonly store: Store) {}

  private get db() {
    return this.store.sqlite;
  }

  transaction<T>(fn: () => T): T {
    return this.store.transaction(fn);
  }

  // --- pools ---------------------------------------------------------------

  insertPool(p: PoolRecord): void {
    try {
      this.db.prepare('INSERT INTO pools (name, driver, path, quota_bytes, config, created_at) VALUES (?, ?, ?, ?, ?, ?)')
        .run(p.name, p.driver, p.path, p.quotaBytes, JSON.stringify(p.config), p.createdAt);
    } catch (e) {
      if (e instanceof Error && /UNIQUE constraint failed: pools\.name/.test(e.message)) throw new HangarError('ALREADY_EXISTS', `a storage pool named "${p.name}" already exists`, { pool: p.name });
      throw e;
    }
  }

  getPool(name: string): PoolRecord | null {
    const r = this.db.prepare('SELECT * FROM pools WHERE name = ?').get(name) as PoolRow | undefined;
    return r ? poolFromRow(r) : null;
  }

  listPools(): PoolRecord[] {
    return (this.db.prepare('SELECT * FROM pools ORDER BY name').all() as PoolRow[]).map(poolFromRow);
  }

  updatePoolQuota(name: string, quotaBytes: number): void {
    this.db.prepare('UPDATE pools SET quota_bytes = ? WHERE name = ?').run(quotaBytes, name);
  }

  deletePool(name: string): boolean {
    return this.db.prepare('DELETE FROM pools WHERE name = ?').run(name).changes > 0;
  }

  // --- volumes -------------------------------------------------------------

  private attachmentsOf(pool: string, name: string): VolumeAttachment[] {
    return (this.db.prepare('SELECT * FROM volume_attachments WHERE pool = ? AND volume = ? ORDER BY vm, device').all(pool, name) as AttachmentRow[])
      .map((a) => ({ vm: a.vm, device: a.device, readOnly: a.read_only !== 0 }));
  }

  private volumeFromRow(r: VolumeRow): VolumeRecord {
    return {
      pool: r.pool,
      name: r.name,
      format: r.format as DiskFormat,
      sizeBytes: r.size_bytes,
      state: r.state as VolumeState,
      backing: r.backing,
      origin: r.origin ? (JSON.parse(r.origin) as VolumeOrigin) : null,
      description: r.description,
      createdAt: r.created_at,
      attachments: this.attachmentsOf(r.pool, r.name),
    };
  }

  insertVolume(v: Omit<VolumeRecord, 'attachments'>): void {
    try {
      this.db.prepare(`INSERT INTO volumes (pool, name, format, size_bytes, state, backing, origin, description, created_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
        .run(v.pool, v.name, v.format, v.sizeBytes, v.state, v.backing, v.origin ? JSON.stringify(v.origin) : null, v.description, v.createdAt);
    } catch (e) {
      if (e instanceof Error && /UNIQUE constraint failed: volumes\./.test(e.message)) {
        throw new HangarError('ALREADY_EXISTS', `a volume named "${v.name}" already exists in pool "${v.pool}"`, { pool: v.pool, volume: v.name });
      }
      throw e;
    }
  }

  getVolume(pool: string, name: string): VolumeRecord | null {
    const r = this.db.prepare('SELECT * FROM volumes WHERE pool = ? AND name = ?').get(pool, name) as VolumeRow | undefined;
    return r ? this.volumeFromRow(r) : null;
  }

  listVolumes(pool?: string): VolumeRecord[] {
    const rows = pool === undefined
      ? (this.db.prepare('SELECT * FROM volumes ORDER BY pool, name').all() as VolumeRow[])
      : (this.db.prepare('SELECT * FROM volumes WHERE pool = ? ORDER BY name').all(pool) as VolumeRow[]);
    return rows.map((r) => this.volumeFromRow(r));
  }

  countVolumes(pool: string): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM volumes WHERE pool = ?').get(pool) as { n: number }).n;
  }

  /** Sum of the virtual sizes of a pool's volumes (those being made included). */
  provisionedBytes(pool: string): number {
    return (this.db.prepare('SELECT COALESCE(SUM(size_bytes), 0) AS n FROM volumes WHERE pool = ?').get(pool) as { n: number }).n;
  }

  updateVolume(pool: string, name: string, patch: Partial<Pick<VolumeRecord, 'state' | 'sizeBytes' | 'format' | 'backing'>>): void {
    const cur = this.getVolume(pool, name);
    if (!cur) throw new HangarError('NOT_FOUND', `no volume "${name}" in pool "${pool}"`, { pool, volume: name });
    const next = { ...cur, ...patch };
    this.db.prepare('UPDATE volumes SET state = ?, size_bytes = ?, format = ?, backing = ? WHERE pool = ? AND name = ?')
      .run(next.state, next.sizeBytes, next.format, next.backing, pool, name);
  }

  deleteVolume(pool: string, name: string): boolean {
    return this.transaction(() => {
      this.db.prepare('DELETE FROM volume_attachments WHERE pool = ? AND volume = ?').run(pool, name);
      return this.db.prepare('DELETE FROM volumes WHERE pool = ? AND name = ?').run(pool, name).changes > 0;
    });
  }

  volumesInState(state: VolumeState): VolumeRecord[] {
    return (this.db.prepare('SELECT * FROM volumes WHERE state = ?').all(state) as VolumeRow[]).map((r) => this.volumeFromRow(r));
  }

  // --- attachments ---------------------------------------------------------

  attach(pool: string, volume: string, a: VolumeAttachment): void {
    this.db.prepare('INSERT OR REPLACE INTO volume_attachments (pool, volume, vm, device, read_only) VALUES (?, ?, ?, ?, ?)')
      .run(pool, volume, a.vm, a.device, a.readOnly ? 1 : 0);
  }

  /** Removes one VM's use of a volume (all its devices when `device` is left out). */
  detach(pool: string, volume: string, vm: string, device?: string): number {
    return device === undefined
      ? this.db.prepare('DELETE FROM volume_attachments WHERE pool = ? AND volume = ? AND vm = ?').run(pool, volume, vm).changes
      : this.db.prepare('DELETE FROM volume_attachments WHERE pool = ? AND volume = ? AND vm = ? AND device = ?').run(pool, volume, vm, device).changes;
  }

  /** Removes every attachment of a VM (the VM is deleted). */
  detachVm(vm: string): number {
    return this.db.prepare('DELETE FROM volume_attachments WHERE vm = ?').run(vm).changes;
  }

  attachmentsOfVm(vm: string): Array<VolumeAttachment & { pool: string; volume: string }> {
    return (this.db.prepare('SELECT * FROM volume_attachments WHERE vm = ? ORDER BY device').all(vm) as AttachmentRow[])
      .map((a) => ({ pool: a.pool, volume: a.volume, vm: a.vm, device: a.device, readOnly: a.read_only !== 0 }));
  }
}
