/**
 * Metric history in the daemon's SQLite file (tables from the store's
 * monitoring migration). Raw samples are kept for a day; completed buckets
 * of raw samples are folded into averages (5 minutes by default) kept for
 * 30 days. Every statement is bounded: inserts touch one row per VM, the
 * fold reads only the raw rows since the last fold, pruning deletes in
 * batches of PRUNE_BATCH rows found through the (res, t) index, and reads
 * return at most MAX_POINTS rows. So a tick costs the same however much
 * history has piled up (bench/monitor-bench.ts measures it).
 *
 * Buckets are `t - t % width`, not `(t / width) * width`: better-sqlite3
 * binds JS numbers as REALs, and `/` on a REAL does not truncate.
 */
import type Database from 'better-sqlite3';
import type { Store } from '../store.js';

/** Resolution of raw rows; folded rows carry their bucket width in seconds. */
export const RAW = 0;
export const PRUNE_BATCH = 2000;
/** Most points one read returns; a longer range gets a wider step. */
export const MAX_POINTS = 1000;

export interface VmSampleRow {
  t: number;
  cpuPercent: number;
  cpuSeconds: number;
  memoryBytes: number;
  pssBytes: number | null;
  guestMemoryUsedBytes: number | null;
  guestMemoryTotalBytes: number | null;
  diskReadBytes: number;
  diskWriteBytes: number;
  netRxBytes: number;
  netTxBytes: number;
}

export interface HostSampleRow {
  t: number;
  cpuPercent: number;
  memoryUsedBytes: number;
  memoryTotalBytes: number;
  load1: number;
  dataDirUsedBytes: number;
  dataDirTotalBytes: number;
}

export interface Retention {
  rawRetentionSeconds: number;
  rollupSeconds: number;
  rollupRetentionSeconds: number;
}

export interface RangeQuery {
  sinceMs: number;
  /** Wanted seconds between points; widened to what the data and MAX_POINTS allow. */
  stepSeconds?: number;
  nowMs: number;
  /** Seconds between raw samples (the narrowest step raw rows can give). */
  sampleIntervalSeconds: number;
}

const VM_COLUMNS = 'cpu_percent, cpu_seconds, memory_bytes, pss_bytes, guest_memory_used_bytes, guest_memory_total_bytes, disk_read_bytes, disk_write_bytes, net_rx_bytes, net_tx_bytes';
/** How a bucket sums up its samples: levels are averaged, cumulative counters take their last (largest) value. */
const VM_FOLD = 'AVG(cpu_percent), MAX(cpu_seconds), CAST(AVG(memory_bytes) AS INTEGER), CAST(AVG(pss_bytes) AS INTEGER), CAST(AVG(guest_memory_used_bytes) AS INTEGER), CAST(AVG(guest_memory_total_bytes) AS INTEGER), MAX(disk_read_bytes), MAX(disk_write_bytes), MAX(net_rx_bytes), MAX(net_tx_bytes)';
const HOST_COLUMNS = 'cpu_percent, memory_used_bytes, memory_total_bytes, load1, data_used_bytes, data_total_bytes';
const HOST_FOLD = 'AVG(cpu_percent), CAST(AVG(memory_used_bytes) AS INTEGER), MAX(memory_total_bytes), AVG(load1), CAST(AVG(data_used_bytes) AS INTEGER), MAX(data_total_bytes)';

interface VmDbRow {
  b: number; cpu_percent: number | null; cpu_seconds: number | null; memory_bytes: number | null; pss_bytes: number | null;
  guest_memory_used_bytes: number | null; guest_memory_total_bytes: number | null;
  disk_read_bytes: number | null; disk_write_bytes: number | null; net_rx_bytes: number | null; net_tx_bytes: number | null;
}
interface HostDbRow {
  b: number; cpu_percent: number | null; memory_used_bytes: number | null; memory_total_bytes: number | null;
  load1: number | null; data_used_bytes: number | null; data_total_bytes: number | null;
}

const round = (n: number | null, digits = 2): number => (n === null ? 0 : Math.round(n * 10 ** digits) / 10 ** digits);

function prepare(db: Database.Database) {
  return {
    insertVm: db.prepare(`INSERT OR REPLACE INTO metrics_vm (vm_id, res, t, ${VM_COLUMNS}) VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
    insertHost: db.prepare(`INSERT OR REPLACE INTO metrics_host (res, t, ${HOST_COLUMNS}) VALUES (0, ?, ?, ?, ?, ?, ?, ?)`),
    foldVm: db.prepare(`INSERT OR REPLACE INTO metrics_vm (vm_id, res, t, ${VM_COLUMNS})
      SELECT vm_id, @res, (t - t % @w) AS b, ${VM_FOLD} FROM metrics_vm WHERE res = 0 AND t >= @from AND t < @to GROUP BY vm_id, b`),
    foldHost: db.prepare(`INSERT OR REPLACE INTO metrics_host (res, t, ${HOST_COLUMNS})
      SELECT @res, (t - t % @w) AS b, ${HOST_FOLD} FROM metrics_host WHERE res = 0 AND t >= @from AND t < @to GROUP BY b`),
    lastFoldVm: db.prepare('SELECT MAX(t) AS t FROM metrics_vm WHERE res = ?'),
    lastFoldHost: db.prepare('SELECT MAX(t) AS t FROM metrics_host WHERE res = ?'),
    firstRawVm: db.prepare('SELECT MIN(t) AS t FROM metrics_vm WHERE res = 0'),
    firstRawHost: db.prepare('SELECT MIN(t) AS t FROM metrics_host WHERE res = 0'),
    pruneVm: db.prepare('DELETE FROM metrics_vm WHERE rowid IN (SELECT rowid FROM metrics_vm WHERE res = ? AND t < ? LIMIT ?)'),
    pruneHost: db.prepare('DELETE FROM metrics_host WHERE rowid IN (SELECT rowid FROM metrics_host WHERE res = ? AND t < ? LIMIT ?)'),
    forgetVm: db.prepare('DELETE FROM metrics_vm WHERE rowid IN (SELECT rowid FROM metrics_vm WHERE vm_id = ? LIMIT ?)'),
    readVm: db.prepare(`SELECT (t - t % @step) AS b, AVG(cpu_percent) AS cpu_percent, MAX(cpu_seconds) AS cpu_seconds, AVG(memory_bytes) AS memory_bytes,
        AVG(pss_bytes) AS pss_bytes, AVG(guest_memory_used_bytes) AS guest_memory_used_bytes, AVG(guest_memory_total_bytes) AS guest_memory_total_bytes,
        MAX(disk_read_bytes) AS disk_read_bytes, MAX(disk_write_bytes) AS disk_write_bytes, MAX(net_rx_bytes) AS net_rx_bytes, MAX(net_tx_bytes) AS net_tx_bytes
      FROM metrics_vm WHERE vm_id = @vm AND res = @res AND t >= @since GROUP BY b ORDER BY b LIMIT ${MAX_POINTS + 1}`),
    readHost: db.prepare(`SELECT (t - t % @step) AS b, AVG(cpu_percent) AS cpu_percent, AVG(memory_used_bytes) AS memory_used_bytes, MAX(memory_total_bytes) AS memory_total_bytes,
        AVG(load1) AS load1, AVG(data_used_bytes) AS data_used_bytes, MAX(data_total_bytes) AS data_total_bytes
      FROM metrics_host WHERE res = @res AND t >= @since GROUP BY b ORDER BY b LIMIT ${MAX_POINTS + 1}`),
    countVm: db.prepare('SELECT COUNT(*) AS n FROM metrics_vm'),
  };
}

export class MetricsHistory {
  private readonly db: Database.Database;
  private readonly stmts: ReturnType<typeof prepare>;
  /** Raw rows before this time (ms, a bucket boundary) have been folded. */
  private foldedUntil: number;

  constructor(private readonly store: Store, private readonly retention: Retention) {
    this.db = store.sqlite;
    const db = this.db;
    this.stmts = prepare(db);
    const w = this.widthMs;
    const lastFold = Math.max(
      (this.stmts.lastFoldVm.get(retention.rollupSeconds) as { t: number | null }).t ?? -Infinity,
      (this.stmts.lastFoldHost.get(retention.rollupSeconds) as { t: number | null }).t ?? -Infinity,
    );
    if (Number.isFinite(lastFold)) this.foldedUntil = lastFold + w;
    else {
      const first = Math.min(
        (this.stmts.firstRawVm.get() as { t: number | null }).t ?? Infinity,
        (this.stmts.firstRawHost.get() as { t: number | null }).t ?? Infinity,
      );
      this.foldedUntil = Number.isFinite(first) ? Math.floor(first / w) * w : 0;
    }
  }

  private get widthMs(): number {
    return this.retention.rollupSeconds * 1000;
  }

  /** Writes one tick's samples: every VM's and the host's, in one transaction. */
  record(vms: Array<{ vmId: string; row: VmSampleRow }>, host: HostSampleRow | null): void {
    this.store.transaction(() => {
      for (const { vmId, row: r } of vms) {
        this.stmts.insertVm.run(vmId, r.t, r.cpuPercent, r.cpuSeconds, r.memoryBytes, r.pssBytes, r.guestMemoryUsedBytes, r.guestMemoryTotalBytes, r.diskReadBytes, r.diskWriteBytes, r.netRxBytes, r.netTxBytes);
      }
      if (host) this.stmts.insertHost.run(host.t, host.cpuPercent, host.memoryUsedBytes, host.memoryTotalBytes, host.load1, host.dataDirUsedBytes, host.dataDirTotalBytes);
    });
  }

  /**
   * Folds the raw rows of buckets that have ended into averages, and prunes
   * what is past its retention (at most `batches` batches of each kind).
   * Returns how many rows were deleted.
   */
  maintain(nowMs: number, batches = 5): number {
    const w = this.widthMs;
    const boundary = Math.floor(nowMs / w) * w;
    if (boundary > this.foldedUntil) {
      // Raw rows older than what is kept are gone anyway: never fold further back than that.
      const from = Math.max(this.foldedUntil, Math.floor((nowMs - this.retention.rawRetentionSeconds * 1000) / w) * w);
      const args = { res: this.retention.rollupSeconds, w, from, to: boundary };
      this.store.transaction(() => {
        this.stmts.foldVm.run(args);
        this.stmts.foldHost.run(args);
      });
      this.foldedUntil = boundary;
    }
    let deleted = 0;
    const rawCut = nowMs - this.retention.rawRetentionSeconds * 1000;
    const foldCut = nowMs - this.retention.rollupRetentionSeconds * 1000;
    for (const [stmt, res, cut] of [
      [this.stmts.pruneVm, RAW, rawCut], [this.stmts.pruneHost, RAW, rawCut],
      [this.stmts.pruneVm, this.retention.rollupSeconds, foldCut], [this.stmts.pruneHost, this.retention.rollupSeconds, foldCut],
    ] as const) {
      for (let i = 0; i < batches; i++) {
        const n = stmt.run(res, cut, PRUNE_BATCH).changes;
        deleted += n;
        if (n < PRUNE_BATCH) break;
      }
    }
    return deleted;
  }

  /** Deletes one batch of a deleted VM's rows; true when none are left. */
  forgetVm(vmId: string): boolean {
    return this.stmts.forgetVm.run(vmId, PRUNE_BATCH).changes < PRUNE_BATCH;
  }

  /** Which rows answer a range, and at what step (ms). */
  plan(q: RangeQuery): { res: number; stepMs: number } {
    const rawFrom = q.nowMs - this.retention.rawRetentionSeconds * 1000;
    const res = q.sinceMs >= rawFrom ? RAW : this.retention.rollupSeconds;
    const finest = res === RAW ? q.sampleIntervalSeconds : res;
    const span = Math.max(0, q.nowMs - q.sinceMs) / 1000;
    const step = Math.max(q.stepSeconds ?? finest, finest, Math.ceil(span / MAX_POINTS));
    return { res, stepMs: Math.round(step * 1000) };
  }

  vmSamples(vmId: string, q: RangeQuery): { stepSeconds: number; samples: VmSampleRow[] } {
    const { res, stepMs } = this.plan(q);
    const rows = this.stmts.readVm.all({ step: stepMs, vm: vmId, res, since: Math.floor(q.sinceMs) }) as VmDbRow[];
    return {
      stepSeconds: stepMs / 1000,
      samples: rows.slice(-MAX_POINTS).map((r) => ({
        t: r.b,
        cpuPercent: round(r.cpu_percent),
        cpuSeconds: round(r.cpu_seconds),
        memoryBytes: Math.round(r.memory_bytes ?? 0),
        pssBytes: r.pss_bytes === null ? null : Math.round(r.pss_bytes),
        guestMemoryUsedBytes: r.guest_memory_used_bytes === null ? null : Math.round(r.guest_memory_used_bytes),
        guestMemoryTotalBytes: r.guest_memory_total_bytes === null ? null : Math.round(r.guest_memory_total_bytes),
        diskReadBytes: r.disk_read_bytes ?? 0,
        diskWriteBytes: r.disk_write_bytes ?? 0,
        netRxBytes: r.net_rx_bytes ?? 0,
        netTxBytes: r.net_tx_bytes ?? 0,
      })),
    };
  }

  hostSamples(q: RangeQuery): { stepSeconds: number; samples: HostSampleRow[] } {
    const { res, stepMs } = this.plan(q);
    const rows = this.stmts.readHost.all({ step: stepMs, res, since: Math.floor(q.sinceMs) }) as HostDbRow[];
    return {
      stepSeconds: stepMs / 1000,
      samples: rows.slice(-MAX_POINTS).map((r) => ({
        t: r.b,
        cpuPercent: round(r.cpu_percent),
        memoryUsedBytes: Math.round(r.memory_used_bytes ?? 0),
        memoryTotalBytes: r.memory_total_bytes ?? 0,
        load1: round(r.load1),
        dataDirUsedBytes: Math.round(r.data_used_bytes ?? 0),
        dataDirTotalBytes: r.data_total_bytes ?? 0,
      })),
    };
  }

  /** Rows in the VM table (tests and the benchmark). */
  vmRowCount(): number {
    return (this.stmts.countVm.get() as { n: number }).n;
  }
}
