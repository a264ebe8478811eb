/**
 * The snapshot manager on a stopped VM with real qcow2 files (qemu-img,
 * qemu-io) and a real SQLite store: create, restore, delete, copy, the
 * restore refusal rule, and reconciliation of every kind of interrupted
 * operation (intents as a crash leaves them, disks in every half state).
 * The daemon-level SIGKILL tests are in test/e2e/snapshots-qemu.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { pino } from 'pino';
import { Store, type VmRecord } from '../../src/host/store.js';
import { EventBus } from '../../src/host/events.js';
import { OperationManager } from '../../src/host/operations.js';
import { HangarError } from '../../src/common/errors.js';
import { SnapshotManager, type VmAccess } from '../../src/host/snapshots/manager.js';
import { storageDiskSource } from '../../src/host/snapshots/disks.js';
import { StorageService } from '../../src/host/storage/index.js';
import { qemuImgTool } from '../../src/host/snapshots/offline.js';
import { restoreRefusal } from '../../src/host/snapshots/rules.js';
import type { Vm, VmSpec } from '../../src/host/api/schemas.js';

const log = pino({ level: 'silent' });

interface Fixture {
  dir: string;
  store: Store;
  storage: StorageService;
  ops: OperationManager;
  mgr: SnapshotManager;
  vm: VmRecord;
  file(disk: string): string;
}

function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8' });
}

/** Writes `pattern` (one byte) over the first 64 KiB of a qcow2 file. */
function writeMarker(file: string, pattern: number): void {
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P ${pattern} 0 64k`, file], { stdio: 'ignore' });
}

/** True when the first 64 KiB of the file are all `pattern`. */
function hasMarker(file: string, pattern: number): boolean {
  const out = execFileSync('qemu-io', ['-f', 'qcow2', '-c', `read -P ${pattern} 0 64k`, file], { encoding: 'utf8' });
  return !/Pattern verification failed/.test(out);
}

function tags(file: string): string[] {
  return (JSON.parse(qemuImg('info', '--output=json', '-f', 'qcow2', file)) as { snapshots?: Array<{ name: string }> }).snapshots?.map((s) => s.name) ?? [];
}

async function fixture(t: { after(fn: () => void): void }, disks: Array<{ name: string; readOnly?: boolean; format?: 'raw' | 'qcow2' }> = [{ name: 'root' }, { name: 'data' }], engine: 'qemu' | 'micro' = 'qemu'): Promise<Fixture> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-snap-'));
  const store = new Store(dir);
  t.after(() => { store.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  const storage = new StorageService({ store, dataDir: dir });
  storage.recover();
  for (const d of disks) {
    await storage.createVolume({ name: `vm1-${d.name}`, format: d.format ?? 'qcow2', sizeBytes: 16 * 1024 * 1024 });
    storage.attach(`default/vm1-${d.name}`, { vm: 'vm1', device: d.name, readOnly: d.readOnly ?? false });
  }
  const spec = {
    image: 'tiny', engine, cpus: 1, memoryBytes: 128 * 1024 ** 2, cmdline: '',
    disks: disks.map((d) => ({ name: d.name, volume: `default/vm1-${d.name}`, ...(d.readOnly ? { readOnly: true } : {}) })),
  } as VmSpec;
  const vm: VmRecord = { id: 'id-vm1', name: 'vm1', spec, state: 'stopped', pid: null, accel: null, startedAt: null, lastExit: null, createdAt: new Date().toISOString() };
  store.insertVm(vm);
  const events = new EventBus(store);
  const ops = new OperationManager(store);
  let chain = Promise.resolve();
  const vms: VmAccess = {
    withVmLock<T>(_name: string, fn: () => Promise<T>): Promise<T> {
      const run = chain.then(fn);
      chain = run.then(() => undefined, () => undefined);
      return run;
    },
    liveHandle: () => null,
    startLocked: async () => { throw new HangarError('UNSUPPORTED', 'no engine in this test'); },
    killLocked: async () => undefined,
    resumeLocked: async () => undefined,
    toVm: (r) => ({ id: r.id, name: r.name, state: r.state, spec: r.spec, createdAt: r.createdAt } as unknown as Vm),
    checkCreate: () => undefined,
    runDir: (name) => path.join(dir, 'vms', name),
  };
  const mgr = new SnapshotManager({ store, events, operations: ops, vms, disks: storageDiskSource(storage), offline: qemuImgTool, log });
  return { dir, store, storage, ops, mgr, vm, file: (d) => storage.volumePath('default', `vm1-${d}`) };
}

async function done(f: Fixture, op: { id: string }): Promise<any> {
  const final = await f.ops.wait(op.id, 60_000);
  if (final.status !== 'success') throw new HangarError((final.error?.code ?? 'INTERNAL') as 'INTERNAL', final.error?.message ?? 'failed');
  return final.result;
}

test('a disk snapshot of a stopped VM: every writable qcow2 disk gets it, restore brings the data back, delete removes it', async (t) => {
  const f = await fixture(t, [{ name: 'root' }, { name: 'data' }, { name: 'seed', readOnly: true }]);
  writeMarker(f.file('data'), 0x41);
  const s = await done(f, f.mgr.create('vm1', { name: 'before' }));
  assert.equal(s.name, 'before');
  assert.equal(s.memory, false);
  assert.deepEqual(s.disks.map((d: { name: string }) => d.name), ['root', 'data'], 'read-only disks are left out');
  assert.deepEqual(tags(f.file('root')), ['before']);
  assert.deepEqual(tags(f.file('data')), ['before']);
  assert.deepEqual(tags(f.file('seed')), []);

  writeMarker(f.file('data'), 0x42);
  assert.ok(hasMarker(f.file('data'), 0x42));
  await done(f, f.mgr.restore('vm1', 'before', false));
  assert.ok(hasMarker(f.file('data'), 0x41), 'the marker is back');

  // A default name is the first free snapN.
  const s2 = await done(f, f.mgr.create('vm1', {}));
  assert.equal(s2.name, 'snap0');
  assert.deepEqual(f.mgr.list('vm1').map((x) => x.name), ['before', 'snap0']);

  await done(f, f.mgr.remove('vm1', 'before'));
  assert.deepEqual(tags(f.file('root')), ['snap0']);
  assert.deepEqual(tags(f.file('data')), ['snap0']);
  assert.deepEqual(f.mgr.list('vm1').map((x) => x.name), ['snap0']);
  assert.throws(() => f.mgr.get('vm1', 'before'), (e: unknown) => e instanceof HangarError && e.code === 'NOT_FOUND');
  assert.deepEqual(f.mgr.snaps.intents(), [], 'no intent is left behind');
});

test('bad requests fail at once and change nothing', async (t) => {
  const f = await fixture(t);
  await done(f, f.mgr.create('vm1', { name: 'one' }));
  assert.throws(() => f.mgr.create('vm1', { name: 'one' }), (e: unknown) => e instanceof HangarError && e.code === 'ALREADY_EXISTS');
  assert.throws(() => f.mgr.create('vm1', { name: '12' }), (e: unknown) => e instanceof HangarError && e.code === 'INVALID_ARGUMENT');
  assert.throws(() => f.mgr.create('vm1', { memory: true }), (e: unknown) => e instanceof HangarError && e.code === 'INVALID_STATE' && /memory snapshot needs a running/.test(e.message));
  assert.throws(() => f.mgr.create('nope', {}), (e: unknown) => e instanceof HangarError && e.code === 'NOT_FOUND');
  assert.throws(() => f.mgr.restore('vm1', 'two', false), (e: unknown) => e instanceof HangarError && e.code === 'NOT_FOUND');
  assert.deepEqual(tags(f.file('root')), ['one']);
});

test('a VM with a writable raw disk cannot be snapshotted', async (t) => {
  const f = await fixture(t, [{ name: 'root' }, { name: 'data', format: 'raw' }]);
  assert.throws(() => f.mgr.create('vm1', {}), (e: unknown) => e instanceof HangarError && e.code === 'UNSUPPORTED' && /raw/.test(e.message));
  assert.deepEqual(tags(f.file('root')), []);
});

test('restore is refused while it would lose unsaved data, unless forced', async (t) => {
  const f = await fixture(t);
  writeMarker(f.file('data'), 0x41);
  await done(f, f.mgr.create('vm1', { name: 'a' }));
  // The VM ran after the snapshot: its last exit is later.
  f.store.updateVm('vm1', { lastExit: { reason: 'poweroff', at: new Date(Date.now() + 1000).toISOString() } });
  writeMarker(f.file('data'), 0x42);
  assert.throws(() => f.mgr.restore('vm1', 'a', false), (e: unknown) => e instanceof HangarError && e.code === 'INVALID_STATE' && /has run since its newest snapshot "a"/.test(e.message) && /--force/.test(e.message));
  assert.ok(hasMarker(f.file('data'), 0x42), 'nothing was restored');
  await done(f, f.mgr.restore('vm1', 'a', true));
  assert.ok(hasMarker(f.file('data'), 0x41));
});

test('the refusal rule', () => {
  const snap = { name: 's', createdAt: '2026-01-01T00:00:10.000Z' };
  const vm = (state: VmRecord['state'], exitAt?: string, reason = 'poweroff') => ({ name: 'v', state, lastExit: exitAt ? { reason, at: exitAt } : null });
  assert.match(restoreRefusal(vm('running'), snap) ?? '', /is running/);
  assert.match(restoreRefusal(vm('paused'), snap) ?? '', /is paused/);
  assert.equal(restoreRefusal(vm('stopped'), snap), null, 'never ran');
  assert.equal(restoreRefusal(vm('stopped', '2026-01-01T00:00:05.000Z'), snap), null, 'stopped before the snapshot');
  assert.match(restoreRefusal(vm('stopped', '2026-01-01T00:00:15.000Z'), snap) ?? '', /has run since/);
  assert.match(restoreRefusal(vm('crashed', '2026-01-01T00:00:15.000Z', 'crashed'), snap) ?? '', /has run since/);
  assert.equal(restoreRefusal(vm('stopped', '2026-01-01T00:00:15.000Z', 'start-failed'), snap), null, 'a failed start never ran');
});

test('copy from a snapshot and from the current disks: new volumes with the right data, the source untouched', async (t) => {
  const f = await fixture(t);
  writeMarker(f.file('data'), 0x41);
  await done(f, f.mgr.create('vm1', { name: 'a' }));
  writeMarker(f.file('data'), 0x42);
  const fromSnap = await done(f, f.mgr.copy('vm1', { name: 'vm2', snapshot: 'a' }));
  assert.equal(fromSnap.name, 'vm2');
  const vm2 = f.store.requireVm('vm2');
  assert.notEqual(vm2.id, f.vm.id, 'a new instance id');
  assert.equal(vm2.state, 'stopped');
  const disks2 = (vm2.spec as VmSpec & { disks: Array<{ name: string; volume: string }> }).disks;
  assert.deepEqual(disks2.map((d) => d.volume), ['default/vm2-root', 'default/vm2-data']);
  const data2 = f.storage.volumePath('default', 'vm2-data');
  assert.deepEqual(f.storage.requireVolume('default', 'vm2-data').attachments, [{ vm: 'vm2', device: 'data', readOnly: false }]);
  assert.ok(hasMarker(data2, 0x41), 'the copy has the snapshot\'s data');
  assert.deepEqual(tags(data2), [], 'the copy has none of the source\'s snapshots');
  assert.equal(fs.statSync(data2).mode & 0o777, 0o600);

  await done(f, f.mgr.copy('vm1', { name: 'vm3' }));
  assert.ok(hasMarker(f.storage.volumePath('default', 'vm3-data'), 0x42), 'a copy of the current state has the current data');
  assert.ok(hasMarker(f.file('data'), 0x42));
  assert.throws(() => f.mgr.copy('vm1', { name: 'vm3' }), (e: unknown) => e instanceof HangarError && e.code === 'ALREADY_EXISTS');
});

test('deleting a VM deletes its snapshot records', async (t) => {
  const f = await fixture(t);
  await done(f, f.mgr.create('vm1', { name: 'a' }));
  assert.equal(f.mgr.snaps.list(f.vm.id).length, 1);
  f.store.deleteVm('vm1');
  assert.equal(f.mgr.snaps.list(f.vm.id).length, 0);
});

// --- reconciliation: intents as a crash leaves them -------------------------------

function diskRecs(f: Fixture, names = ['root', 'data']) {
  return names.map((n) => ({ name: n, volume: `default/vm1-${n}`, path: f.file(n) }));
}

test('an interrupted create is undone when some disk lacks the snapshot, kept when every disk has it', async (t) => {
  const f = await fixture(t);
  // Crash after the first disk: undone.
  qemuImg('snapshot', '-c', 'half', f.file('root'));
  f.mgr.snaps.addIntent(f.vm.id, { kind: 'create', vm: 'vm1', snapshot: 'half', memory: false, vmState: 'stopped', disks: diskRecs(f), jobId: null, createdAt: new Date().toISOString() });
  // Crash after the last disk, before the record: kept.
  qemuImg('snapshot', '-c', 'whole', f.file('root'));
  qemuImg('snapshot', '-c', 'whole', f.file('data'));
  f.mgr.snaps.addIntent(f.vm.id, { kind: 'create', vm: 'vm1', snapshot: 'whole', memory: false, vmState: 'stopped', disks: diskRecs(f), jobId: null, createdAt: new Date().toISOString() });
  // Crash right after the intent: nothing to undo.
  f.mgr.snaps.addIntent(f.vm.id, { kind: 'create', vm: 'vm1', snapshot: 'none', memory: false, vmState: 'stopped', disks: diskRecs(f), jobId: null, createdAt: new Date().toISOString() });
  await f.mgr.reconcile();
  assert.deepEqual(f.mgr.list('vm1').map((s) => s.name), ['whole']);
  assert.deepEqual(tags(f.file('root')), ['whole']);
  assert.deepEqual(tags(f.file('data')), ['whole']);
  assert.deepEqual(f.mgr.snaps.intents(), []);
});

test('an interrupted delete and an interrupted restore are finished', async (t) => {
  const f = await fixture(t);
  writeMarker(f.file('root'), 0x41);
  writeMarker(f.file('data'), 0x41);
  await done(f, f.mgr.create('vm1', { name: 'a' }));
  await done(f, f.mgr.create('vm1', { name: 'b' }));
  // Delete of b cut short after the first disk.
  qemuImg('snapshot', '-d', 'b', f.file('root'));
  f.mgr.snaps.addIntent(f.vm.id, { kind: 'delete', vm: 'vm1', snapshot: 'b', disks: diskRecs(f), jobId: null });
  // Restore of a cut short after the first disk: one disk old, one new.
  writeMarker(f.file('root'), 0x42);
  writeMarker(f.file('data'), 0x42);
  qemuImg('snapshot', '-a', 'a', f.file('root'));
  f.mgr.snaps.addIntent(f.vm.id, { kind: 'restore', vm: 'vm1', snapshot: 'a', memory: false, disks: diskRecs(f), jobId: null });
  await f.mgr.reconcile();
  assert.deepEqual(f.mgr.list('vm1').map((s) => s.name), ['a']);
  assert.deepEqual(tags(f.file('root')), ['a']);
  assert.deepEqual(tags(f.file('data')), ['a']);
  assert.ok(hasMarker(f.file('root'), 0x41) && hasMarker(f.file('data'), 0x41), 'both disks are at the snapshot');
  assert.deepEqual(f.mgr.snaps.intents(), []);
});

test('an interrupted copy is undone: its files go, no VM is recorded', async (t) => {
  const f = await fixture(t);
  const partial = path.join(f.dir, 'storage', 'default', 'vm9-root');
  qemuImg('create', '-q', '-f', 'qcow2', partial, '16M');
  f.mgr.snaps.addIntent(f.vm.id, { kind: 'copy', vm: 'vm1', snapshot: null, target: 'vm9', files: [partial, path.join(f.dir, 'storage', 'default', 'vm9-data')] });
  await f.mgr.reconcile();
  assert.equal(fs.existsSync(partial), false);
  assert.equal(f.store.getVm('vm9'), null);
  assert.deepEqual(f.mgr.snaps.intents(), []);
  assert.deepEqual(tags(f.file('root')), [], 'the source is untouched');
});

test('micro-engine VM (raw disks): a disk snapshot is a folder of copies in its run folder; restore writes them back; delete removes the folder', async (t) => {
  const f = await fixture(t, [{ name: 'root', format: 'raw' }, { name: 'seed', format: 'raw', readOnly: true }], 'micro');
  const root = f.file('root');
  const mark = (b: number) => { const fd = fs.openSync(root, 'r+'); fs.writeSync(fd, Buffer.alloc(65536, b), 0, 65536, 0); fs.closeSync(fd); };
  const marked = (b: number) => { const fd = fs.openSync(root, 'r'); const buf = Buffer.alloc(65536); fs.readSync(fd, buf, 0, 65536, 0); fs.closeSync(fd); return buf.every((x) => x === b); };
  mark(0x11);
  const snap = await done(f, f.mgr.create('vm1', { name: 'before' }));
  assert.equal(snap.memory, false);
  assert.deepEqual(snap.disks.map((d: { name: string }) => d.name), ['root'], 'the read-only disk is left out');
  const folder = path.join(f.dir, 'vms', 'vm1', 'snapshots', 'before');
  assert.deepEqual(fs.readdirSync(folder), ['disk-root.raw']);
  assert.equal(fs.statSync(folder).mode & 0o777, 0o700);
  const inode = fs.statSync(root).ino;
  mark(0x22);
  assert.ok(marked(0x22));
  await done(f, f.mgr.restore('vm1', 'before', true));
  assert.ok(marked(0x11), 'the disk is back at the snapshot');
  assert.equal(fs.statSync(root).ino, inode, 'written back into the same file (its ownership and grants stay)');
  // A stopped VM has no memory to snapshot; a missing copy fails the restore without touching the disk.
  assert.throws(() => f.mgr.create('vm1', { name: 'mem', memory: true }), /running or paused/);
  assert.equal(fs.existsSync(path.join(f.dir, 'vms', 'vm1', 'snapshots', 'mem')), false, 'a refused snapshot leaves no folder');
  fs.rmSync(path.join(folder, 'disk-root.raw'));
  mark(0x33);
  await assert.rejects(done(f, f.mgr.restore('vm1', 'before', true)), /missing/);
  assert.ok(marked(0x33), 'nothing written back');
  // A copy from that snapshot fails too, and leaves no VM and no volume behind.
  await assert.rejects(done(f, f.mgr.copy('vm1', { name: 'vm2', snapshot: 'before' })), /no disk to copy/);
  assert.equal(f.store.getVm('vm2'), null);
  assert.equal(f.storage.getVolume('default', 'vm2-root'), null);
  await done(f, f.mgr.remove('vm1', 'before'));
  assert.equal(fs.existsSync(folder), false);
  assert.deepEqual(f.mgr.list('vm1'), []);
  // A copy of the stopped VM: a whole raw copy of the writable disk, the read-only one shared.
  await done(f, f.mgr.copy('vm1', { name: 'vm2' }));
  const copy = f.storage.getVolume('default', 'vm2-root')!;
  assert.equal(copy.format, 'raw');
  assert.equal(copy.backing, null);
  assert.ok(fs.readFileSync(f.storage.volumePath('default', 'vm2-root')).equals(fs.readFileSync(root)), 'the copy holds the disk as it is');
  assert.deepEqual(f.store.requireVm('vm2').spec.disks!.map((d) => [d.name, d.volume]), [['root', 'default/vm2-root'], ['seed', 'default/vm1-seed']]);
  assert.deepEqual(f.storage.getVolume('default', 'vm1-seed')!.attachments.map((a) => a.vm).sort(), ['vm1', 'vm2']);
});
