/**
 * Volume jobs against a real store, operation manager and qemu-img: uploads
 * that go wrong every way (too long, too short, cancelled, silent, a hostile
 * image) end their operation with the reason and leave no volume and no
 * file; a path import flattens a backing chain that stays inside the import
 * folder and refuses a symlink; a copy reports qemu-img's progress.
 */
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { execFileSync } from 'node:child_process';
import { HangarError } from '../../src/common/errors.js';
import { Store } from '../../src/host/store.js';
import { OperationManager } from '../../src/host/operations.js';
import { configureImportPolicy } from '../../src/host/images/policy.js';
import { StorageService } from '../../src/host/storage/service.js';
import { VolumeJobs } from '../../src/host/storage/jobs.js';
import { qemuImgInfo } from '../../src/host/storage/qemu-img.js';

const MiB = 1024 * 1024;
let dir: string;
let importDir: string;
let store: Store;
let operations: OperationManager;
let storage: StorageService;
let jobs: VolumeJobs;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-storage-jobs-'));
  importDir = path.join(dir, 'import');
  fs.mkdirSync(importDir);
  configureImportPolicy({ importDirs: [importDir] });
  store = new Store(dir);
  operations = new OperationManager(store);
  storage = new StorageService({ store, dataDir: dir, defaultQuotaBytes: 256 * MiB });
  jobs = new VolumeJobs(storage, operations, { present: (v) => ({ name: v.name, format: v.format, sizeBytes: v.sizeBytes }), uploadIdleMs: 200 });
});

afterEach(async () => {
  await operations.drain(5000);
  store.close();
  configureImportPolicy({});
  fs.rmSync(dir, { recursive: true, force: true });
});

function disk(size: number): Buffer {
  const b = Buffer.alloc(size);
  b.fill(9, 4096, 8192);
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

function poolFiles(): string[] {
  return fs.readdirSync(path.join(dir, 'storage', 'default'));
}

async function finished(id: string) {
  return operations.wait(id, 30_000);
}

async function assertNothingLeft(name: string): Promise<void> {
  assert.equal(storage.getVolume('default', name), null, 'no record');
  assert.deepEqual(poolFiles(), [], 'no file, no work file');
}

test('an upload is stored, checked and kept in the format asked for', async () => {
  const data = disk(2 * MiB);
  const op = jobs.beginUpload('default', 'up', data.length, { format: 'qcow2' });
  const v = await jobs.receive('default', 'up', Readable.from([data.subarray(0, MiB), data.subarray(MiB)]), data.length) as { format: string; sizeBytes: number };
  assert.deepEqual(v, { name: 'up', format: 'qcow2', sizeBytes: 2 * MiB });
  assert.equal((await finished(op.id)).status, 'success');
  assert.deepEqual(poolFiles(), ['up.qcow2']);
  assert.equal((await qemuImgInfo(storage.volumePath('default/up'), { format: 'qcow2' })).virtualBytes, 2 * MiB);
});

test('an upload longer or shorter than declared, or sent twice, fails and leaves nothing', async () => {
  const long = jobs.beginUpload('default', 'long', MiB);
  await assert.rejects(jobs.receive('default', 'long', Readable.from([disk(MiB), Buffer.alloc(512)])), (e: HangarError) => /longer than the 1048576 bytes declared/.test(e.message));
  assert.equal((await finished(long.id)).status, 'failure');
  await assertNothingLeft('long');

  const short = jobs.beginUpload('default', 'short', 2 * MiB);
  await assert.rejects(jobs.receive('default', 'short', Readable.from([disk(MiB)])), (e: HangarError) => /ended after 1048576 of the 2097152 bytes/.test(e.message));
  assert.equal((await finished(short.id)).error?.code, 'INVALID_ARGUMENT');
  await assertNothingLeft('short');

  jobs.beginUpload('default', 'declared', MiB);
  await assert.rejects(jobs.receive('default', 'declared', Readable.from([disk(MiB)]), 5), (e: HangarError) => /declared as 1048576 bytes but the request carries 5/.test(e.message));
  await assertNothingLeft('declared');
  await assert.rejects(jobs.receive('default', 'declared', Readable.from([disk(MiB)])), (e: HangarError) => e.code === 'NOT_FOUND');
});

test('a cancelled or silent upload fails with the reason and frees name and quota', async () => {
  const c = jobs.beginUpload('default', 'cancel', 200 * MiB);
  assert.throws(() => jobs.beginUpload('default', 'other', 100 * MiB), (e: HangarError) => e.code === 'RESOURCE_EXHAUSTED', 'the declared size holds the quota');
  jobs.cancelUpload('default', 'cancel');
  assert.match((await finished(c.id)).error?.message ?? '', /cancelled/);
  await assertNothingLeft('cancel');

  const idle = jobs.beginUpload('default', 'idle', MiB);
  const f = await finished(idle.id);
  assert.equal(f.error?.code, 'TIMEOUT');
  await assertNothingLeft('idle');
  // Name and quota are free again.
  jobs.beginUpload('default', 'cancel', 200 * MiB);
  jobs.cancelUpload('default', 'cancel');
});

test('an uploaded qcow2 that names any backing file is refused (an upload names nothing on this host)', async () => {
  const own = path.join(dir, 'own.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', path.join(dir, 'storage', 'default', 'x.raw'), '-F', 'raw', own, '1M']);
  const data = fs.readFileSync(own);
  const op = jobs.beginUpload('default', 'backed', data.length);
  await assert.rejects(jobs.receive('default', 'backed', Readable.from([data])), (e: HangarError) => e.details?.reason === 'backing-outside-roots');
  assert.equal((await finished(op.id)).status, 'failure');
  await assertNothingLeft('backed');
});

test('a path import flattens a chain inside the import folder; a symlink and a chain reaching out are refused', async () => {
  fs.writeFileSync(path.join(importDir, 'base.raw'), disk(4 * MiB));
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', path.join(importDir, 'top.qcow2')]);
  const op = await jobs.importPath('default', 'flat', path.join(importDir, 'top.qcow2'));
  assert.equal((await finished(op.id)).status, 'success');
  const info = await qemuImgInfo(storage.volumePath('default/flat'), { format: 'qcow2' });
  assert.equal(info.backingFilename, undefined, 'the volume stands alone');
  assert.deepEqual(storage.requireVolume('default', 'flat').origin, { kind: 'import', source: path.join(importDir, 'top.qcow2') });

  fs.symlinkSync(path.join(importDir, 'base.raw'), path.join(importDir, 'link.raw'));
  await assert.rejects(jobs.importPath('default', 'linked', path.join(importDir, 'link.raw')), (e: HangarError) => /symbolic link/.test(e.message));
  // A chain into a pool is refused too: an import may only read what is in the import folders.
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', storage.volumePath('default/flat'), '-F', 'qcow2', path.join(importDir, 'into-pool.qcow2')]);
  await assert.rejects(jobs.importPath('default', 'sneaky', path.join(importDir, 'into-pool.qcow2')), (e: HangarError) => e.details?.reason === 'backing-outside-roots');
  assert.deepEqual(poolFiles(), ['flat.qcow2']);
});

test('a copy reports qemu-img progress and keeps the source busy meanwhile', async () => {
  await storage.createVolume({ name: 'src', sizeBytes: 32 * MiB, format: 'raw' });
  const seen: number[] = [];
  const orig = store.updateOperation.bind(store);
  store.updateOperation = (op) => { if (op.progress?.stage === 'copying' && op.progress.percent !== undefined) seen.push(op.progress.percent); orig(op); };
  const op = jobs.clone('default', 'dst', 'default/src', { format: 'qcow2' });
  await new Promise((r) => setImmediate(r));
  assert.throws(() => storage.deleteVolume('default', 'src'), (e: HangarError) => e.code === 'INVALID_STATE' && /busy/.test(e.message));
  assert.equal((await finished(op.id)).status, 'success');
  assert.ok(seen.length >= 2 && seen[0] === 0 && seen.at(-1) === 100, `progress went 0 → 100: ${seen.join(',')}`);
  storage.deleteVolume('default', 'src');
});
