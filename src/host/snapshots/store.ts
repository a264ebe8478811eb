/**
 * Snapshot records and intents in the daemon's SQLite file (tables made by
 * the store's migrations, src/host/store.ts).
 *
 * `snapshots` holds finished snapshots only; a VM's rows go with the VM
 * (ON DELETE CASCADE). `snapshot_intents` holds one row per snapshot
 * operation under way: written, and committed, before any disk is touched,
 * and removed in the same transaction that records the result. A row found
 * at daemon start is an operation a crash cut short; reconcile.ts finishes
 * or undoes it against what the disks themselves say.
 */
import { randomUUID } from 'node:crypto';
import type Database from 'better-sqlite3';
import { HangarError } from '../../common/errors.js';
import type { Store } from '../store.js';

/** A disk a snapshot covers, as it was when the snapshot was taken. */
export interface SnapshotDiskRecord {
  /** The VM's device id ('root', 'data', ...). */
  name: string;
  /** "pool/volume". */
  volume: string;
  /** The qcow2 file. */
  path: string;
}

export interface SnapshotRecord {
  vmId: string;
  name: string;
  memory: boolean;
  /** The VM's state when it was taken ('running', 'paused', 'stopped', 'crashed'). */
  vmState: string;
  vmStateBytes: number;
  /** Every disk holding the snapshot; the first holds the machine state of a memory snapshot. */
  disks: SnapshotDiskRecord[];
  createdAt: string;
}

/** What an intent says is being done; enough to finish or undo it without the request. */
export type IntentDetail =
  | { kind: 'create'; vm: string; snapshot: string; memory: boolean; vmState: string; disks: SnapshotDiskRecord[]; jobId: string | null; createdAt: string }
  | { kind: 'delete'; vm: string; snapshot: string; disks: SnapshotDiskRecord[]; jobId: string | null }
  | { kind: 'restore'; vm: string; snapshot: string; memory: boolean; disks: SnapshotDiskRecord[]; jobId: string | null }
  | { kind: 'copy'; vm: string; snapshot: string | null; target: string; files: string[] };

export interface IntentRecord {
  id: string;
  vmId: string;
  detail: IntentDetail;
  createdAt: string;
}

interface SnapshotRow {
  vm_id: string; name: string; memory: number; vm_state: string; vm_state_bytes: number; disks: string; created_at: string;
}
interface IntentRow { id: string; vm_id: string; kind: string; detail: string; created_at: string }

const fromRow = (r: SnapshotRow): SnapshotRecord => ({
  vmId: r.vm_id,
  name: r.name,
  memory: r.memory !== 0,
  vmState: r.vm_state,
  vmStateBytes: r.vm_state_bytes,
  disks: JSON.parse(r.disks) as SnapshotDiskRecord[],
  createdAt: r.created_at,
});

export class SnapshotStore {
  private readonly db: Database.Database;

  constructor(readonly store: Store) {
    this.db = store.sqlite;
  }

  list(vmId: string): SnapshotRecord[] {
    return (this.db.prepare('SELECT * FROM snapshots WHERE vm_id = ? ORDER BY created_at, name').all(vmId) as SnapshotRow[]).map(fromRow);
  }

  get(vmId: string, name: string): SnapshotRecord | null {
    const r = this.db.prepare('SELECT * FROM snapshots WHERE vm_id = ? AND name = ?').get(vmId, name) as SnapshotRow | undefined;
    return r ? fromRow(r) : null;
  }

  require(vm: string, vmId: string, name: string): SnapshotRecord {
    const s = this.get(vmId, name);
    if (!s) throw new HangarError('NOT_FOUND', `VM "${vm}" has no snapshot "${name}"`, { vm, snapshot: name });
    return s;
  }

  /** The most recent snapshot of a VM, or null. */
  newest(vmId: string): SnapshotRecord | null {
    const r = this.db.prepare('SELECT * FROM snapshots WHERE vm_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1').get(vmId) as SnapshotRow | undefined;
    return r ? fromRow(r) : null;
  }

  insert(s: SnapshotRecord): void {
    try {
      this.db
        .prepare('INSERT INTO snapshots (vm_id, name, memory, vm_state, vm_state_bytes, disks, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
        .run(s.vmId, s.name, s.memory ? 1 : 0, s.vmState, s.vmStateBytes, JSON.stringify(s.disks), s.createdAt);
    } catch (e) {
      if (e instanceof Error && /UNIQUE constraint failed/.test(e.message)) {
        throw new HangarError('ALREADY_EXISTS', `a snapshot named "${s.name}" already exists`, { snapshot: s.name });
      }
      throw e;
    }
  }

  remove(vmId: string, name: string): boolean {
    return this.db.prepare('DELETE FROM snapshots WHERE vm_id = ? AND name = ?').run(vmId, name).changes > 0;
  }

  // --- intents ---------------------------------------------------------------

  /** Records (and commits, when no transaction is open) what is about to be done. */
  addIntent(vmId: string, detail: IntentDetail): IntentRecord {
    const rec: IntentRecord = { id: randomUUID(), vmId, detail, createdAt: new Date().toISOString() };
    this.db.prepare('INSERT INTO snapshot_intents (id, vm_id, kind, detail, created_at) VALUES (?, ?, ?, ?, ?)')
      .run(rec.id, vmId, detail.kind, JSON.stringify(detail), rec.createdAt);
    return rec;
  }

  /** Rewrites an intent's detail (e.g. the job id once a job has a name). */
  updateIntent(id: string, detail: IntentDetail): void {
    this.db.prepare('UPDATE snapshot_intents SET detail = ? WHERE id = ?').run(JSON.stringify(detail), id);
  }

  removeIntent(id: string): void {
    this.db.prepare('DELETE FROM snapshot_intents WHERE id = ?').run(id);
  }

  intents(): IntentRecord[] {
    return (this.db.prepare('SELECT * FROM snapshot_intents ORDER BY created_at, rowid').all() as IntentRow[]).map((r) => ({
      id: r.id, vmId: r.vm_id, detail: JSON.parse(r.detail) as IntentDetail, createdAt: r.created_at,
    }));
  }

  /** An intent under way for this VM, if any (a new snapshot operation waits for none: they run under the VM's lock). */
  intentsOf(vmId: string): IntentRecord[] {
    return this.intents().filter((i) => i.vmId === vmId);
  }
}
