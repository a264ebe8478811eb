import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { Store, SCHEMA_VERSION, DEFAULT_EVENTS_KEEP, pruneBatch, type VmRecord } from '../../src/host/store.js';
import { HangarError } from '../../src/common/errors.js';

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-store-'));
}

function vm(name: string): VmRecord {
  return {
    id: `id-${name}`, name, state: 'stopped', pid: null, accel: null, startedAt: null, lastExit: null,
    spec: { image: 'tiny', engine: 'qemu', cpus: 1, memoryBytes: 128 * 1024 ** 2, cmdline: '', disks: [] },
    createdAt: new Date().toISOString(),
  };
}

test('opens a real file in WAL mode at the current schema version', (t) => {
  const dir = tmp();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const s = new Store(dir);
  assert.equal(s.file, path.join(dir, 'hangar.db'));
  assert.equal(s.schemaVersion(), SCHEMA_VERSION);
  s.close();
  const db = new Database(path.join(dir, 'hangar.db'));
  assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  db.close();
  // Reopening does not migrate again.
  const s2 = new Store(dir);
  assert.equal(s2.schemaVersion(), SCHEMA_VERSION);
  s2.close();
});

test('refuses a database from a newer hangard', (t) => {
  const dir = tmp();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const db = new Database(path.join(dir, 'hangar.db'));
  db.pragma(`user_version = ${SCHEMA_VERSION + 5}`);
  db.close();
  assert.throws(() => new Store(dir), (e: unknown) => e instanceof HangarError && e.code === 'UNSUPPORTED');
});

test('VM rows: insert, unique name, update, list, delete; persisted across reopen', (t) => {
  const dir = tmp();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const s = new Store(dir);
  s.insertVm(vm('b'));
  s.insertVm(vm('a'));
  assert.throws(() => s.insertVm({ ...vm('a'), id: 'other' }), (e: unknown) => e instanceof HangarError && e.code === 'ALREADY_EXISTS');
  s.updateVm('a', { state: 'running', pid: 1234, accel: 'tcg', startedAt: '2026-01-01T00:00:00.000Z' });
  s.updateVm('b', { lastExit: { reason: 'crashed', detail: 'boom', at: '2026-01-01T00:00:00.000Z' } });
  assert.throws(() => s.updateVm('zz', { state: 'running' }), (e: unknown) => e instanceof HangarError && e.code === 'NOT_FOUND');
  s.close();

  const r = new Store(dir);
  assert.deepEqual(r.listVms().map((v) => v.name), ['a', 'b']);
  const a = r.requireVm('a');
  assert.equal(a.state, 'running');
  assert.equal(a.pid, 1234);
  assert.equal(a.accel, 'tcg');
  assert.deepEqual(a.spec, vm('a').spec);
  assert.equal(r.requireVm('b').lastExit?.detail, 'boom');
  assert.equal(r.deleteVm('a'), true);
  assert.equal(r.deleteVm('a'), false);
  assert.equal(r.getVm('a'), null);
  r.close();
});

test('a failing transaction leaves the old state', (t) => {
  const dir = tmp();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const s = new Store(dir);
  s.insertVm(vm('a'));
  assert.throws(() => s.transaction(() => {
    s.updateVm('a', { state: 'running', pid: 99 });
    s.insertVm(vm('a')); // duplicate: the whole transaction rolls back
  }));
  assert.equal(s.requireVm('a').state, 'stopped');
  assert.equal(s.requireVm('a').pid, null);
  s.close();
});

test('operations: insert, update, list newest first, fail the running ones', (t) => {
  const dir = tmp();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const s = new Store(dir);
  s.insertOperation({ id: 'o1', description: 'one', status: 'running', resources: { vms: ['a'] }, createdAt: '2026-01-01T00:00:00.000Z', updatedAt: '2026-01-01T00:00:00.000Z' });
  s.insertOperation({ id: 'o2', description: 'two', status: 'running', resources: { vms: [] }, createdAt: '2026-01-01T00:00:01.000Z', updatedAt: '2026-01-01T00:00:01.000Z' });
  s.updateOperation({ ...s.getOperation('o2')!, status: 'success', progress: { stage: 'done', percent: 100 }, result: { x: 1 } });
  assert.deepEqual(s.listOperations().map((o) => o.id), ['o2', 'o1']);
  assert.deepEqual(s.getOperation('o2')!.result, { x: 1 });
  assert.equal(s.failRunningOperations('daemon restarted', '2026-01-01T00:00:02.000Z'), 1);
  const o1 = s.getOperation('o1')!;
  assert.equal(o1.status, 'failure');
  assert.equal(o1.error?.message, 'daemon restarted');
  assert.equal(s.getOperation('nope'), null);
  // Pruning forgets finished operations older than the cut-off, never running ones.
  s.insertOperation({ id: 'o3', description: 'three', status: 'running', resources: { vms: [] }, createdAt: '2026-01-01T00:00:00.000Z', updatedAt: '2026-01-01T00:00:00.000Z' });
  assert.equal(s.pruneOperations('2026-01-01T00:00:01.500Z'), 1);
  assert.deepEqual(s.listOperations().map((o) => o.id).sort(), ['o1', 'o3']); // o2 finished at 00:00:01, o1 failed at 00:00:02
  s.close();
});

test('events: increasing seq, filter by since and vm', (t) => {
  const dir = tmp();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const s = new Store(dir);
  const e1 = s.insertEvent('2026-01-01T00:00:00.000Z', 'a', 'created');
  const e2 = s.insertEvent('2026-01-01T00:00:01.000Z', 'b', 'created');
  const e3 = s.insertEvent('2026-01-01T00:00:02.000Z', 'a', 'stopped', 'poweroff');
  assert.ok(e1.seq < e2.seq && e2.seq < e3.seq);
  assert.deepEqual(s.listEvents().map((e) => e.seq), [e1.seq, e2.seq, e3.seq]);
  assert.deepEqual(s.listEvents({ since: e1.seq }).map((e) => e.seq), [e2.seq, e3.seq]);
  assert.deepEqual(s.listEvents({ vm: 'a' }), [e1, e3]);
  assert.equal(s.listEvents({ vm: 'a' })[1]!.reason, 'poweroff');
  s.close();
});

test('events retention: the newest N are kept, pruned in batches on insert; seq keeps counting', (t) => {
  const dir = tmp();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const s = new Store(dir, { eventsKeep: 50 });
  assert.equal(pruneBatch(50), 5);
  const at = new Date().toISOString();
  for (let i = 1; i <= 203; i++) s.insertEvent(at, i % 2 ? 'a' : 'b', 'started', `n${i}`);
  // Last prune at seq 200 kept 151..200; 201..203 came after it.
  assert.equal(s.countEvents(), 53);
  const all = s.listEvents({ limit: 1000 });
  assert.equal(all[0]!.seq, 151);
  assert.equal(all.at(-1)!.seq, 203);
  assert.equal(all.at(-1)!.reason, 'n203');
  // Never more than keep + batch - 1.
  for (let i = 204; i <= 300; i++) {
    s.insertEvent(at, 'a', 'stopped');
    assert.ok(s.countEvents() <= 54);
  }
  s.close();
  // A smaller limit on the next open applies at once; seq goes on from where it was.
  const s2 = new Store(dir, { eventsKeep: 10 });
  assert.deepEqual(s2.listEvents({ limit: 1000 }).map((e) => e.seq), [291, 292, 293, 294, 295, 296, 297, 298, 299, 300]);
  assert.equal(s2.insertEvent(at, 'a', 'created').seq, 301);
  s2.close();
});

test('events retention: 0 keeps everything; the default is 10000; bad limits are refused', (t) => {
  const dir = tmp();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const s = new Store(dir, { eventsKeep: 0 });
  const at = new Date().toISOString();
  for (let i = 0; i < 2500; i++) s.insertEvent(at, 'a', 'started');
  assert.equal(s.countEvents(), 2500);
  s.close();
  const d = new Store(dir);
  assert.equal(d.eventsKeep, DEFAULT_EVENTS_KEEP);
  assert.equal(DEFAULT_EVENTS_KEEP, 10_000);
  assert.equal(d.countEvents(), 2500);
  d.close();
  for (const bad of [-1, 1.5, Number.NaN]) {
    assert.throws(() => new Store(dir, { eventsKeep: bad }), (e: unknown) => e instanceof HangarError && e.code === 'INVALID_ARGUMENT');
  }
});

test('events retention: a prune inside a rolled-back transaction is rolled back with the event', (t) => {
  const dir = tmp();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const s = new Store(dir, { eventsKeep: 10 });
  const at = new Date().toISOString();
  for (let i = 1; i <= 9; i++) s.insertEvent(at, 'a', 'started');
  assert.throws(() => s.transaction(() => {
    s.insertEvent(at, 'a', 'stopped'); // seq 10: a batch boundary, prunes seq <= 0
    for (let i = 11; i <= 20; i++) s.insertEvent(at, 'a', 'stopped'); // seq 20 prunes seq <= 10
    throw new Error('abort');
  }), /abort/);
  assert.deepEqual(s.listEvents().map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  s.close();
});
