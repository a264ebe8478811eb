/**
 * StorageService with a real SQLite store and real qemu-img in a temporary
 * data directory: the default pool made on first use, volumes as 0600 files
 * recorded in SQLite, overlays, the pool quota, delete refused while in use,
 * grow-only resize (offline and through the online-resize hook), half-made
 * volumes removed at the next start, and pools made and deleted.
 */
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HangarError } from '../../src/common/errors.js';
import { Store } from '../../src/host/store.js';
import { StorageService } from '../../src/host/storage/service.js';
import { qemuImgInfo } from '../../src/host/storage/qemu-img.js';

const MiB = 1024 * 1024;
let dir: string;
let store: Store;
let storage: StorageService;

function isCode(code: string, re?: RegExp) {
  return (e: unknown): boolean => e instanceof HangarError && e.code === code && (!re || re.test(e.message));
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-storage-'));
  store = new Store(dir);
  storage = new StorageService({ store, dataDir: dir, defaultQuotaBytes: 64 * MiB });
});

afterEach(() => {
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('the default pool is made on first use at <dataDir>/storage/default, 0700', () => {
  assert.equal(fs.existsSync(path.join(dir, 'storage')), false);
  const pools = storage.listPools();
  assert.deepEqual(pools.map((p) => [p.name, p.driver, p.path, p.quotaBytes]), [['default', 'dir', path.join(dir, 'storage', 'default'), 64 * MiB]]);
  assert.equal(fs.statSync(path.join(dir, 'storage', 'default')).mode & 0o777, 0o700);
});

test('createVolume makes a 0600 file, records it, and volumePath finds it', async () => {
  const v = await storage.createVolume({ name: 'data', sizeBytes: 8 * MiB });
  assert.equal(v.state, 'ready');
  assert.equal(v.format, 'qcow2');
  assert.equal(v.sizeBytes, 8 * MiB);
  const file = storage.volumePath('default/data');
  assert.equal(file, path.join(dir, 'storage', 'default', 'data.qcow2'));
  assert.equal(storage.volumePath('default', 'data'), file);
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.equal((await qemuImgInfo(file, { format: 'qcow2' })).virtualBytes, 8 * MiB);
  const raw = await storage.createVolume({ name: 'scratch', format: 'raw', sizeBytes: 1000 });
  assert.equal(raw.sizeBytes, 1024, 'sizes are rounded up to whole sectors');
  assert.equal(fs.statSync(storage.volumePath('scratch')).size, 1024);
  // The record survives a new store on the same file.
  store.close();
  store = new Store(dir);
  storage = new StorageService({ store, dataDir: dir });
  assert.deepEqual(storage.listVolumes('default').map((x) => x.name), ['data', 'scratch']);
  await assert.rejects(storage.createVolume({ name: 'data', sizeBytes: MiB }), isCode('ALREADY_EXISTS'));
  await assert.rejects(storage.createVolume({ name: '../x', sizeBytes: MiB }), isCode('INVALID_ARGUMENT'));
  await assert.rejects(storage.createVolume({ name: 'x', sizeBytes: MiB, pool: 'nope' }), isCode('NOT_FOUND'));
});

test('an overlay volume names its base by absolute path and explicit format', async () => {
  const baseFile = path.join(dir, 'base.raw');
  fs.writeFileSync(baseFile, Buffer.alloc(4 * MiB));
  const v = await storage.createVolume({ name: 'vm1-root', backingFile: baseFile, sizeBytes: 16 * MiB });
  assert.equal(v.backing, baseFile);
  assert.deepEqual(v.origin, { kind: 'overlay', base: baseFile });
  const info = await qemuImgInfo(storage.volumePath('default/vm1-root'), { format: 'qcow2' });
  assert.equal(info.backingFilename, baseFile);
  assert.equal(info.backingFormat, 'raw');
  assert.equal(info.virtualBytes, 16 * MiB);
  // No size: the base's.
  assert.equal((await storage.createVolume({ name: 'vm2-root', backingFile: baseFile })).sizeBytes, 4 * MiB);
});

test('the pool quota counts virtual sizes; creation and resize over it are refused and leave nothing', async () => {
  await storage.createVolume({ name: 'a', sizeBytes: 40 * MiB });
  await assert.rejects(storage.createVolume({ name: 'b', sizeBytes: 30 * MiB }), isCode('RESOURCE_EXHAUSTED', /quota exceeded/));
  assert.equal(storage.getVolume('default', 'b'), null);
  assert.deepEqual(fs.readdirSync(path.join(dir, 'storage', 'default')), ['a.qcow2']);
  await assert.rejects(storage.resizeVolume('default', 'a', 80 * MiB), isCode('RESOURCE_EXHAUSTED'));
  assert.equal(storage.requireVolume('default', 'a').sizeBytes, 40 * MiB);
  storage.setPoolQuota('default', 200 * MiB);
  await storage.createVolume({ name: 'b', sizeBytes: 30 * MiB });
});

test('resize grows only; an attached volume of a running VM goes through the online hook', async () => {
  await storage.createVolume({ name: 'r', sizeBytes: 8 * MiB });
  await assert.rejects(storage.resizeVolume('default', 'r', 4 * MiB), isCode('INVALID_ARGUMENT', /only grow/));
  const v = await storage.resizeVolume('default', 'r', 16 * MiB);
  assert.equal(v.sizeBytes, 16 * MiB);
  assert.equal((await qemuImgInfo(storage.volumePath('default/r'), { format: 'qcow2' })).virtualBytes, 16 * MiB);

  storage.attach('default/r', { vm: 'web', device: 'data', readOnly: false });
  const calls: unknown[] = [];
  storage.setOnlineResizeHook(async (req) => { calls.push(req); return 'resized'; });
  await storage.resizeVolume('default', 'r', 24 * MiB);
  assert.deepEqual(calls, [{ vm: 'web', device: 'data', pool: 'default', volume: 'r', path: storage.volumePath('default/r'), sizeBytes: 24 * MiB }]);
  // The hook did the work (a real one resizes through QMP): qemu-img did not touch the file.
  assert.equal((await qemuImgInfo(storage.volumePath('default/r'), { format: 'qcow2' })).virtualBytes, 16 * MiB);
  assert.equal(storage.requireVolume('default', 'r').sizeBytes, 24 * MiB);
  // A VM that is not running: the file is resized here.
  storage.setOnlineResizeHook(async () => 'not-running');
  await storage.resizeVolume('default', 'r', 32 * MiB);
  assert.equal((await qemuImgInfo(storage.volumePath('default/r'), { format: 'qcow2' })).virtualBytes, 32 * MiB);
  // A failing hook puts the recorded size back.
  storage.setOnlineResizeHook(async () => { throw new HangarError('ENGINE_FAILED', 'block_resize failed'); });
  await assert.rejects(storage.resizeVolume('default', 'r', 40 * MiB), isCode('ENGINE_FAILED'));
  assert.equal(storage.requireVolume('default', 'r').sizeBytes, 32 * MiB);
});

test('delete is refused while a VM uses the volume or another volume is based on it', async () => {
  const v = await storage.createVolume({ name: 'd', sizeBytes: MiB, format: 'raw' });
  storage.attach('default/d', { vm: 'web', device: 'root', readOnly: false });
  assert.deepEqual(storage.requireVolume('default', 'd').attachments, [{ vm: 'web', device: 'root', readOnly: false }]);
  assert.throws(() => storage.deleteVolume('default', 'd'), isCode('INVALID_STATE', /used by VM web/));
  storage.detach('default/d', 'web');
  await storage.createVolume({ name: 'child', backingFile: storage.volumePath('default/d') });
  assert.throws(() => storage.deleteVolume('default', 'd'), isCode('INVALID_STATE', /base of default\/child/));
  storage.deleteVolume('default', 'child');
  storage.deleteVolume('default', 'd');
  assert.equal(fs.existsSync(path.join(dir, 'storage', 'default', `d.${v.format}`)), false);
  assert.throws(() => storage.deleteVolume('default', 'd'), isCode('NOT_FOUND'));
});

test('a volume a dead daemon left half made is removed at the next start, with its work files', async () => {
  const claim = storage.claimVolume({ pool: 'default', name: 'half', format: 'raw', sizeBytes: MiB });
  const work = claim.driver.workPath('half', 'raw');
  fs.writeFileSync(work, 'partial');
  assert.throws(() => storage.requireVolume('default', 'half'), isCode('NOT_FOUND'), 'a volume being made is not usable');
  await assert.rejects(storage.createVolume({ name: 'half', sizeBytes: MiB }), isCode('ALREADY_EXISTS'));
  const fresh = new StorageService({ store, dataDir: dir });
  assert.deepEqual(fresh.recover(), ['default/half']);
  assert.equal(fresh.getVolume('default', 'half'), null);
  assert.deepEqual(fs.readdirSync(path.join(dir, 'storage', 'default')), []);
});

test('pools: a dir pool at an absolute path; delete refused while it holds volumes', async () => {
  assert.throws(() => storage.createPool({ name: 'rel', path: 'relative/dir' }), isCode('INVALID_ARGUMENT', /absolute/));
  assert.throws(() => storage.createPool({ name: 'etc', path: '/etc/hangar' }), isCode('INVALID_ARGUMENT', /system folder/));
  assert.throws(() => storage.createPool({ name: 'Bad' }), isCode('INVALID_ARGUMENT'));
  const full = path.join(dir, 'full');
  fs.mkdirSync(full);
  fs.writeFileSync(path.join(full, 'x'), '');
  assert.throws(() => storage.createPool({ name: 'full', path: full }), isCode('INVALID_ARGUMENT', /not empty/));
  const at = path.join(dir, 'fast');
  const p = storage.createPool({ name: 'fast', path: at, quotaBytes: 32 * MiB });
  assert.equal(p.path, at);
  assert.throws(() => storage.createPool({ name: 'fast2', path: path.join(at, 'sub') }), isCode('INVALID_ARGUMENT', /overlaps/));
  await storage.createVolume({ pool: 'fast', name: 'v', sizeBytes: MiB });
  assert.equal(fs.existsSync(path.join(at, 'v.qcow2')), true);
  assert.throws(() => storage.deletePool('fast'), isCode('INVALID_STATE', /still has 1 volume/));
  storage.deleteVolume('fast', 'v');
  storage.deletePool('fast');
  assert.equal(fs.existsSync(at), false);
  assert.throws(() => storage.deletePool('default'), isCode('INVALID_STATE'));
});
