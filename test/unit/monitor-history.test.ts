/**
 * Metric history in a real SQLite store: raw samples are folded into
 * 5-minute averages once their bucket has ended, old rows are pruned in
 * bounded batches, reads widen their step so they never return more than
 * MAX_POINTS points, and a deleted VM's rows go.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Store } from '../../src/host/store.js';
import { MAX_POINTS, MetricsHistory, PRUNE_BATCH, RAW, type VmSampleRow } from '../../src/host/monitor/history.js';

const RET = { rawRetentionSeconds: 86400, rollupSeconds: 300, rollupRetentionSeconds: 30 * 86400 };
const T0 = Date.UTC(2026, 10, 1); // a bucket boundary

function open(t: { after(fn: () => void): void }): { store: Store; history: MetricsHistory; dir: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-monitor-hist-'));
  const store = new Store(dir);
  t.after(() => { store.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  return { store, history: new MetricsHistory(store, RET), dir };
}

function row(t: number, cpuPercent: number, cpuSeconds: number, mem = 100): VmSampleRow {
  return { t, cpuPercent, cpuSeconds, memoryBytes: mem, pssBytes: null, guestMemoryUsedBytes: null, guestMemoryTotalBytes: null, diskReadBytes: cpuSeconds * 10, diskWriteBytes: 0, netRxBytes: 0, netTxBytes: 0 };
}

test('raw samples fold into 5-minute averages when their bucket ends: levels averaged, counters at their last value', (t) => {
  const { store, history } = open(t);
  // 10 s samples over 10 minutes: CPU 20 % in the first 5 minutes, 60 % in the next.
  for (let i = 0; i < 60; i++) history.record([{ vmId: 'vm-a', row: row(T0 + i * 10_000, i < 30 ? 20 : 60, i, i < 30 ? 100 : 300) }], null);
  history.maintain(T0 + 600_000 + 1);
  const folded = store.sqlite.prepare('SELECT t, cpu_percent, cpu_seconds, memory_bytes, disk_read_bytes FROM metrics_vm WHERE res = 300 ORDER BY t').all();
  assert.deepEqual(folded, [
    { t: T0, cpu_percent: 20, cpu_seconds: 29, memory_bytes: 100, disk_read_bytes: 290 },
    { t: T0 + 300_000, cpu_percent: 60, cpu_seconds: 59, memory_bytes: 300, disk_read_bytes: 590 },
  ]);
  // Folding again changes nothing (the same buckets are not counted twice).
  history.maintain(T0 + 600_000 + 2);
  assert.equal((store.sqlite.prepare('SELECT COUNT(*) AS n FROM metrics_vm WHERE res = 300').get() as { n: number }).n, 2);
});

test('a bucket still filling is not folded; a new history object carries on where the last fold ended', (t) => {
  const { store, history } = open(t);
  for (let i = 0; i < 40; i++) history.record([{ vmId: 'vm-a', row: row(T0 + i * 10_000, 10, i) }], null);
  history.maintain(T0 + 399_000); // the second bucket (300–600 s) is still open
  assert.equal((store.sqlite.prepare('SELECT COUNT(*) AS n FROM metrics_vm WHERE res = 300').get() as { n: number }).n, 1);
  const again = new MetricsHistory(store, RET);
  for (let i = 40; i < 60; i++) again.record([{ vmId: 'vm-a', row: row(T0 + i * 10_000, 30, i) }], null);
  again.maintain(T0 + 600_001);
  const second = store.sqlite.prepare('SELECT cpu_percent FROM metrics_vm WHERE res = 300 AND t = ?').get(T0 + 300_000) as { cpu_percent: number };
  assert.ok(Math.abs(second.cpu_percent - (10 * 10 + 20 * 30) / 30) < 1e-9, 'the second bucket averages all its samples (10 at 10 %, 20 at 30 %)');
});

test('pruning: raw rows older than a day and folded rows older than 30 days go, a batch at a time', (t) => {
  const { store, history } = open(t);
  const insert = store.sqlite.prepare('INSERT INTO metrics_vm (vm_id, res, t, cpu_percent) VALUES (?, ?, ?, 1)');
  const now = T0 + 40 * 86400_000;
  store.transaction(() => {
    // 2.5 batches of raw rows older than a day, and some within the day.
    for (let i = 0; i < PRUNE_BATCH * 2.5; i++) insert.run('vm-a', RAW, now - 2 * 86400_000 - i * 1000);
    for (let i = 0; i < 100; i++) insert.run('vm-a', RAW, now - i * 1000);
    // Folded rows: 31 days old (go) and 29 days old (stay).
    for (let i = 0; i < 50; i++) insert.run('vm-a', 300, now - 31 * 86400_000 - i * 300_000);
    for (let i = 0; i < 50; i++) insert.run('vm-a', 300, now - 29 * 86400_000 - i * 300_000);
  });
  const count = (res: number) => (store.sqlite.prepare('SELECT COUNT(*) AS n FROM metrics_vm WHERE res = ?').get(res) as { n: number }).n;
  // One batch per call: bounded work per tick.
  history.maintain(now, 1);
  assert.equal(count(RAW), PRUNE_BATCH * 1.5 + 100);
  history.maintain(now, 5);
  assert.equal(count(RAW), 100);
  // The 29-day-old averages stay, plus the one bucket the recent raw rows were folded into.
  assert.equal(count(300), 51);
});

test('reads: raw rows for the last day, averages beyond it; never more than MAX_POINTS points', (t) => {
  const { history } = open(t);
  for (let i = 0; i < 360; i++) history.record([{ vmId: 'vm-a', row: row(T0 + i * 10_000, i % 2 ? 100 : 0, i) }], null);
  const now = T0 + 3600_000;
  const raw = history.vmSamples('vm-a', { sinceMs: T0, nowMs: now, sampleIntervalSeconds: 10 });
  assert.equal(raw.stepSeconds, 10);
  assert.equal(raw.samples.length, 360);
  const coarse = history.vmSamples('vm-a', { sinceMs: T0, stepSeconds: 60, nowMs: now, sampleIntervalSeconds: 10 });
  assert.equal(coarse.samples.length, 60);
  assert.equal(coarse.samples[0]!.cpuPercent, 50, 'a 60 s point averages six 10 s samples');
  assert.equal(coarse.samples[0]!.cpuSeconds, 5, 'and takes the last cumulative value');
  // A step finer than the samples is widened to the sample interval.
  assert.equal(history.vmSamples('vm-a', { sinceMs: T0, stepSeconds: 1, nowMs: now, sampleIntervalSeconds: 10 }).stepSeconds, 10);
  // A week back: past the raw day, so 5-minute averages, and the step keeps the answer within MAX_POINTS.
  const plan = history.plan({ sinceMs: now - 7 * 86400_000, nowMs: now, sampleIntervalSeconds: 10 });
  assert.equal(plan.res, 300);
  assert.ok((7 * 86400_000) / plan.stepMs <= MAX_POINTS);
  const wide = history.plan({ sinceMs: now - 3600_000, stepSeconds: 1, nowMs: now, sampleIntervalSeconds: 1 });
  assert.ok(3600_000 / wide.stepMs <= MAX_POINTS, 'an hour of 1 s samples is thinned to at most MAX_POINTS');
});

test("a deleted VM's rows are removed in batches", (t) => {
  const { store, history } = open(t);
  const insert = store.sqlite.prepare('INSERT INTO metrics_vm (vm_id, res, t) VALUES (?, 0, ?)');
  store.transaction(() => { for (let i = 0; i < PRUNE_BATCH + 10; i++) { insert.run('gone', T0 + i); insert.run('kept', T0 + i); } });
  assert.equal(history.forgetVm('gone'), false);
  assert.equal(history.forgetVm('gone'), true);
  assert.equal(history.vmRowCount(), PRUNE_BATCH + 10);
});

test('queries use the indexes: no full scan of the history tables', (t) => {
  const { store } = open(t);
  const plan = (sql: string) => (store.sqlite.prepare(`EXPLAIN QUERY PLAN ${sql}`).all() as Array<{ detail: string }>).map((r) => r.detail).join('; ');
  assert.match(plan('SELECT rowid FROM metrics_vm WHERE res = 0 AND t < 5 LIMIT 10'), /USING (COVERING )?INDEX metrics_vm_age/);
  assert.match(plan('SELECT * FROM metrics_vm WHERE vm_id = \'a\' AND res = 0 AND t >= 5'), /USING INDEX metrics_vm_key/);
  assert.match(plan('SELECT vm_id FROM metrics_vm WHERE res = 0 AND t >= 1 AND t < 5'), /USING (COVERING )?INDEX metrics_vm_age/);
  assert.match(plan('SELECT * FROM metrics_host WHERE res = 0 AND t >= 5'), /USING INDEX|PRIMARY KEY/);
});
