/**
 * The daemon's durable state: one SQLite file (<dataDir>/hangar.db, WAL).
 * Every change is a single transaction, so a crash leaves either the old or
 * the new state. The schema is versioned with PRAGMA user_version and
 * migrated forward on open.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { HangarError } from '../common/errors.js';
import type { VmSpec, VmStateName, Operation, LifecycleEvent } from './api/schemas.js';
import type { Accel } from '../api/engine.js';

export interface LastExit {
  reason: string;
  detail?: string;
  at: string;
}

export interface VmRecord {
  id: string;
  name: string;
  spec: VmSpec;
  state: VmStateName;
  pid: number | null;
  accel: Accel | null;
  startedAt: string | null;
  lastExit: LastExit | null;
  createdAt: string;
}

export type OperationRecord = Operation;

export type EventType = LifecycleEvent['type'];

/** Each entry moves the schema one version forward. Never edit an entry once shipped: append. */
const MIGRATIONS: string[] = [
  `CREATE TABLE vms (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     spec TEXT NOT NULL,
     state TEXT NOT NULL,
     pid INTEGER,
     accel TEXT,
     started_at TEXT,
     last_exit TEXT,
     created_at TEXT NOT NULL
   );
   CREATE TABLE operations (
     id TEXT PRIMARY KEY,
     description TEXT NOT NULL,
     status TEXT NOT NULL,
     progress TEXT,
     resources TEXT NOT NULL,
     error TEXT,
     result TEXT,
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL
   );
   CREATE INDEX operations_created ON operations(created_at);
   CREATE TABLE events (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     at TEXT NOT NULL,
     vm TEXT NOT NULL,
     type TEXT NOT NULL,
     reason TEXT
   );
   CREATE INDEX events_vm ON events(vm, seq);`,
  // Storage pools, volumes and which VM uses which volume (src/host/storage/records.ts).
  `CREATE TABLE pools (
     name TEXT PRIMARY KEY,
     driver TEXT NOT NULL,
     path TEXT NOT NULL,
     quota_bytes INTEGER NOT NULL,
     config TEXT NOT NULL DEFAULT '{}',
     created_at TEXT NOT NULL
   );
   CREATE TABLE volumes (
     pool TEXT NOT NULL REFERENCES pools(name),
     name TEXT NOT NULL,
     format TEXT NOT NULL,
     size_bytes INTEGER NOT NULL,
     state TEXT NOT NULL,
     backing TEXT,
     origin TEXT,
     description TEXT,
     created_at TEXT NOT NULL,
     PRIMARY KEY (pool, name)
   );
   CREATE TABLE volume_attachments (
     pool TEXT NOT NULL,
     volume TEXT NOT NULL,
     vm TEXT NOT NULL,
     device TEXT NOT NULL,
     read_only INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (pool, volume, vm, device),
     FOREIGN KEY (pool, volume) REFERENCES volumes(pool, name)
   );
   CREATE INDEX volume_attachments_vm ON volume_attachments(vm);`,
  // Snapshots (src/host/snapshots/store.ts): finished snapshots, and the intent of each snapshot
  // operation under way, written before any disk is touched (reconciled at daemon start).
  `CREATE TABLE snapshots (
     vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
     name TEXT NOT NULL,
     memory INTEGER NOT NULL,
     vm_state TEXT NOT NULL,
     vm_state_bytes INTEGER NOT NULL,
     disks TEXT NOT NULL,
     created_at TEXT NOT NULL,
     PRIMARY KEY (vm_id, name)
   );
   CREATE TABLE snapshot_intents (
     id TEXT PRIMARY KEY,
     vm_id TEXT NOT NULL,
     kind TEXT NOT NULL,
     detail TEXT NOT NULL,
     created_at TEXT NOT NULL
   );`,
  // Networks (src/host/network/records.ts): kind, subnet, the host link VMs' TAPs join; port forwards.
  `CREATE TABLE networks (
     name TEXT PRIMARY KEY,
     kind TEXT NOT NULL,
     subnet TEXT,
     bridge TEXT NOT NULL UNIQUE,
     description TEXT NOT NULL DEFAULT '',
     created_at TEXT NOT NULL
   );
   CREATE TABLE port_forwards (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     vm TEXT NOT NULL,
     proto TEXT NOT NULL,
     address TEXT NOT NULL,
     host_port INTEGER NOT NULL,
     guest_port INTEGER NOT NULL,
     created_at TEXT NOT NULL,
     UNIQUE (proto, address, host_port)
   );`,
  // Monitoring (src/host/monitor/history.ts, alerts.ts): samples per VM and of the host, raw (res 0)
  // and folded into averages (res = bucket seconds); alerts as they were raised and cleared.
  `CREATE TABLE metrics_vm (
     vm_id TEXT NOT NULL,
     res INTEGER NOT NULL,
     t INTEGER NOT NULL,
     cpu_percent REAL,
     cpu_seconds REAL,
     memory_bytes INTEGER,
     pss_bytes INTEGER,
     guest_memory_used_bytes INTEGER,
     guest_memory_total_bytes INTEGER,
     disk_read_bytes INTEGER,
     disk_write_bytes INTEGER,
     net_rx_bytes INTEGER,
     net_tx_bytes INTEGER
   );
   CREATE UNIQUE INDEX metrics_vm_key ON metrics_vm(vm_id, res, t);
   CREATE INDEX metrics_vm_age ON metrics_vm(res, t);
   CREATE TABLE metrics_host (
     res INTEGER NOT NULL,
     t INTEGER NOT NULL,
     cpu_percent REAL,
     memory_used_bytes INTEGER,
     memory_total_bytes INTEGER,
     load1 REAL,
     data_used_bytes INTEGER,
     data_total_bytes INTEGER,
     PRIMARY KEY (res, t)
   );
   CREATE TABLE alerts (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     vm TEXT,
     kind TEXT NOT NULL,
     message TEXT NOT NULL,
     raised_at INTEGER NOT NULL,
     cleared_at INTEGER
   );
   CREATE INDEX alerts_open ON alerts(cleared_at);`,
  // IPv6 of nat and isolated networks (src/host/network/records.ts): the /64, or null for none.
  `ALTER TABLE networks ADD COLUMN ipv6 TEXT;`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

interface VmRow {
  id: string; name: string; spec: string; state: string; pid: number | null; accel: string | null;
  started_at: string | null; last_exit: string | null; created_at: string;
}
interface OpRow {
  id: string; description: string; status: string; progress: string | null; resources: string;
  error: string | null; result: string | null; created_at: string; updated_at: string;
}
interface EventRow { seq: number; at: string; vm: string; type: string; reason: string | null }

function vmFromRow(r: VmRow): VmRecord {
  return {
    id: r.id,
    name: r.name,
    // Records written before VMs had disks have none.
    spec: { disks: [], ...(JSON.parse(r.spec) as Partial<VmSpec>) } as VmSpec,
    state: r.state as VmStateName,
    pid: r.pid,
    accel: r.accel as VmRecord['accel'],
    startedAt: r.started_at,
    lastExit: r.last_exit ? (JSON.parse(r.last_exit) as LastExit) : null,
    createdAt: r.created_at,
  };
}

function opFromRow(r: OpRow): OperationRecord {
  const op: OperationRecord = {
    id: r.id,
    description: r.description,
    status: r.status as OperationRecord['status'],
    resources: JSON.parse(r.resources) as OperationRecord['resources'],
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
  if (r.progress) op.progress = JSON.parse(r.progress) as NonNullable<OperationRecord['progress']>;
  if (r.error) op.error = JSON.parse(r.error) as NonNullable<OperationRecord['error']>;
  if (r.result) op.result = JSON.parse(r.result) as unknown;
  return op;
}

function eventFromRow(r: EventRow): LifecycleEvent {
  const e: LifecycleEvent = { seq: r.seq, at: r.at, vm: r.vm, type: r.type as EventType };
  if (r.reason !== null) e.reason = r.reason;
  return e;
}

/** Fields of a VM record that change while it lives. */
export type VmPatch = Partial<Pick<VmRecord, 'state' | 'pid' | 'accel' | 'startedAt' | 'lastExit'>>;

/** Events kept by default (GET /1.0/events serves what is kept). */
export const DEFAULT_EVENTS_KEEP = 10_000;

export interface StoreOptions {
  /**
   * How many of the newest events to keep; 0 keeps all. Pruning runs on insert,
   * once per `pruneBatch(keep)` events, so the table holds at most keep + batch - 1.
   */
  eventsKeep?: number;
}

/** Prune once per this many inserts: a tenth of what is kept, between 1 and 1000. */
export function pruneBatch(keep: number): number {
  return Math.max(1, Math.min(1000, Math.floor(keep / 10)));
}

export class Store {
  readonly file: string;
  readonly eventsKeep: number;
  private readonly db: Database.Database;
  /** Work to do once the transaction at each nesting level commits (innermost last). */
  private readonly commitHooks: Array<Array<() => void>> = [];

  constructor(dataDir: string, opts: StoreOptions = {}) {
    const keep = opts.eventsKeep ?? DEFAULT_EVENTS_KEEP;
    if (!Number.isSafeInteger(keep) || keep < 0) throw new HangarError('INVALID_ARGUMENT', `events to keep must be a whole number >= 0, got ${keep}`);
    this.eventsKeep = keep;
    fs.mkdirSync(dataDir, { recursive: true });
    this.file = path.join(dataDir, 'hangar.db');
    this.db = new Database(this.file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    this.migrate();
    // A smaller limit than last time takes effect at once.
    if (this.eventsKeep > 0) this.pruneEvents();
  }

  private migrate(): void {
    const current = this.db.pragma('user_version', { simple: true }) as number;
    if (current > SCHEMA_VERSION) {
      throw new HangarError('UNSUPPORTED', `${this.file} has schema version ${current}, newer than this hangard understands (${SCHEMA_VERSION})`);
    }
    for (let v = current; v < SCHEMA_VERSION; v++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[v]!);
        this.db.pragma(`user_version = ${v + 1}`);
      })();
    }
  }

  /** The database, for modules that keep tables of their own (storage/records.ts, snapshots/store.ts, network/records.ts); they write inside transaction(). */
  get sqlite(): Database.Database {
    return this.db;
  }

  schemaVersion(): number {
    return this.db.pragma('user_version', { simple: true }) as number;
  }

  /**
   * Runs fn inside one transaction (nested calls join the outer one as a
   * savepoint). Hooks registered with afterCommit() run once the outermost
   * transaction has committed, and never when it (or the nested part they
   * were registered in) rolls back.
   */
  transaction<T>(fn: () => T): T {
    this.commitHooks.push([]);
    let committed = false;
    let result: T;
    try {
      result = this.db.transaction(fn)();
      committed = true;
    } finally {
      const hooks = this.commitHooks.pop()!;
      if (committed) {
        const outer = this.commitHooks.at(-1);
        if (outer) outer.push(...hooks);
        else for (const h of hooks) this.runHook(h);
      }
    }
    return result!;
  }

  /** Runs fn once the current transaction commits; at once when none is open. */
  afterCommit(fn: () => void): void {
    const level = this.commitHooks.at(-1);
    if (level) level.push(fn);
    else this.runHook(fn);
  }

  private runHook(fn: () => void): void {
    try {
      fn();
    } catch {
      /* a hook (an event subscriber) must not undo or break the committed change */
    }
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  // --- VMs -----------------------------------------------------------------

  insertVm(vm: VmRecord): void {
    try {
      this.db
        .prepare(`INSERT INTO vms (id, name, spec, state, pid, accel, started_at, last_exit, created_at)
                  VALUES (@id, @name, @spec, @state, @pid, @accel, @startedAt, @lastExit, @createdAt)`)
        .run({
          ...vm,
          spec: JSON.stringify(vm.spec),
          lastExit: vm.lastExit ? JSON.stringify(vm.lastExit) : null,
        });
    } catch (e) {
      if (e instanceof Error && /UNIQUE constraint failed: vms\.name/.test(e.message)) {
        throw new HangarError('ALREADY_EXISTS', `a VM named "${vm.name}" already exists`, { name: vm.name });
      }
      throw e;
    }
  }

  getVm(name: string): VmRecord | null {
    const r = this.db.prepare('SELECT * FROM vms WHERE name = ?').get(name) as VmRow | undefined;
    return r ? vmFromRow(r) : null;
  }

  /** Like getVm, but a missing VM is a NOT_FOUND error. */
  requireVm(name: string): VmRecord {
    const vm = this.getVm(name);
    if (!vm) throw new HangarError('NOT_FOUND', `no VM named "${name}"`, { name });
    return vm;
  }

  listVms(): VmRecord[] {
    return (this.db.prepare('SELECT * FROM vms ORDER BY name').all() as VmRow[]).map(vmFromRow);
  }

  updateVm(name: string, patch: VmPatch): VmRecord {
    return this.transaction(() => {
      const cur = this.requireVm(name);
      const next: VmRecord = { ...cur, ...patch };
      this.db
        .prepare('UPDATE vms SET state = ?, pid = ?, accel = ?, started_at = ?, last_exit = ? WHERE name = ?')
        .run(next.state, next.pid, next.accel, next.startedAt, next.lastExit ? JSON.stringify(next.lastExit) : null, name);
      return next;
    });
  }

  /** Replaces a VM's spec (its disks changed). */
  setVmSpec(name: string, spec: VmSpec): VmRecord {
    return this.transaction(() => {
      const cur = this.requireVm(name);
      this.db.prepare('UPDATE vms SET spec = ? WHERE name = ?').run(JSON.stringify(spec), name);
      return { ...cur, spec };
    });
  }

  deleteVm(name: string): boolean {
    return this.db.prepare('DELETE FROM vms WHERE name = ?').run(name).changes > 0;
  }

  // --- Operations ----------------------------------------------------------

  insertOperation(op: OperationRecord): void {
    this.db
      .prepare(`INSERT INTO operations (id, description, status, progress, resources, error, result, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
      .run(
        op.id, op.description, op.status,
        op.progress ? JSON.stringify(op.progress) : null,
        JSON.stringify(op.resources),
        op.error ? JSON.stringify(op.error) : null,
        op.result !== undefined ? JSON.stringify(op.result) : null,
        op.createdAt, op.updatedAt,
      );
  }

  updateOperation(op: OperationRecord): void {
    this.db
      .prepare('UPDATE operations SET status = ?, progress = ?, error = ?, result = ?, updated_at = ? WHERE id = ?')
      .run(
        op.status,
        op.progress ? JSON.stringify(op.progress) : null,
        op.error ? JSON.stringify(op.error) : null,
        op.result !== undefined ? JSON.stringify(op.result) : null,
        op.updatedAt, op.id,
      );
  }

  getOperation(id: string): OperationRecord | null {
    const r = this.db.prepare('SELECT * FROM operations WHERE id = ?').get(id) as OpRow | undefined;
    return r ? opFromRow(r) : null;
  }

  /** Most recent first. */
  listOperations(limit = 100): OperationRecord[] {
    return (this.db.prepare('SELECT * FROM operations ORDER BY created_at DESC, rowid DESC LIMIT ?').all(limit) as OpRow[]).map(opFromRow);
  }

  /** Operations a previous daemon left 'running' can never finish: mark them failed. Returns how many. */
  failRunningOperations(message: string, at: string): number {
    return this.db
      .prepare(`UPDATE operations SET status = 'failure', error = ?, updated_at = ? WHERE status = 'running'`)
      .run(JSON.stringify({ code: 'UNAVAILABLE', message }), at).changes;
  }

  /** Forgets finished operations last updated before `before` (ISO time). Returns how many. */
  pruneOperations(before: string): number {
    return this.db.prepare(`DELETE FROM operations WHERE status != 'running' AND updated_at < ?`).run(before).changes;
  }

  // --- Events --------------------------------------------------------------

  insertEvent(at: string, vm: string, type: EventType, reason?: string): LifecycleEvent {
    const info = this.db.prepare('INSERT INTO events (at, vm, type, reason) VALUES (?, ?, ?, ?)').run(at, vm, type, reason ?? null);
    const seq = Number(info.lastInsertRowid);
    // Retention in batches: one range delete on the primary key every pruneBatch inserts,
    // inside the caller's transaction when there is one, so it commits or rolls back with the event.
    if (this.eventsKeep > 0 && seq % pruneBatch(this.eventsKeep) === 0) this.pruneEvents(seq);
    const e: LifecycleEvent = { seq, at, vm, type };
    if (reason !== undefined) e.reason = reason;
    return e;
  }

  /** Deletes all but the newest `eventsKeep` events (by seq, newest = `lastSeq`). Returns how many went. */
  pruneEvents(lastSeq?: number): number {
    if (this.eventsKeep <= 0) return 0;
    const last = lastSeq ?? ((this.db.prepare('SELECT MAX(seq) AS m FROM events').get() as { m: number | null }).m ?? 0);
    return this.db.prepare('DELETE FROM events WHERE seq <= ?').run(last - this.eventsKeep).changes;
  }

  countEvents(): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM events').get() as { n: number }).n;
  }

  /** Events with seq > since, oldest first, optionally for one VM. */
  listEvents(opts: { since?: number; vm?: string; limit?: number } = {}): LifecycleEvent[] {
    const since = opts.since ?? 0;
    const limit = opts.limit ?? 1000;
    const rows = opts.vm !== undefined
      ? (this.db.prepare('SELECT * FROM events WHERE seq > ? AND vm = ? ORDER BY seq LIMIT ?').all(since, opts.vm, limit) as EventRow[])
      : (this.db.prepare('SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?').all(since, limit) as EventRow[]);
    return rows.map(eventFromRow);
  }
}
