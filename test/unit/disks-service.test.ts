/**
 * DiskService with a real StorageService (SQLite, qemu-img, files in a
 * temporary data directory): root disks from an image's base disk (qcow2
 * overlay for QEMU, raw copy for micro), the checks on named volumes and
 * the pool quota, undo when a step fails, and what a VM delete does.
 */
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomFillSync } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { HangarError } from '../../src/common/errors.js';
import { createLogger } from '../../src/common/log.js';
import { Store } from '../../src/host/store.js';
import { StorageService } from '../../src/host/storage/service.js';
import { DiskService } from '../../src/host/disks/service.js';
import { planDisks } from '../../src/host/disks/plan.js';

const MiB = 1024 * 1024;
let dir: string;
let store: Store;
let storage: StorageService;
let disks: DiskService;
let base: string;
let baseRaw: Buffer;

const isCode = (code: string, re?: RegExp) => (e: unknown): boolean => e instanceof HangarError && e.code === code && (!re || re.test(e.message));

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-disks-'));
  store = new Store(dir);
  storage = new StorageService({ store, dataDir: dir, defaultQuotaBytes: 256 * MiB });
  disks = new DiskService(storage, createLogger('test', 'silent'));
  baseRaw = Buffer.alloc(16 * MiB);
  randomFillSync(baseRaw, 0, 2 * MiB);
  fs.writeFileSync(path.join(dir, 'base.raw'), baseRaw);
  base = path.join(dir, 'disk.qcow2');
  execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', path.join(dir, 'base.raw'), base]);
});

afterEach(() => {
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('QEMU: the root disk is a qcow2 overlay of the base, grown to rootSize; the engine gets the base as a read-only backing file', async () => {
  const root = disks.rootPlan('web', { name: 'img', disk: base }, 32 * MiB)!;
  const spec = await disks.provision('web', [root, ...planDisks('web', [{ name: 'data', size: '8M' }], ['root'])], 'qemu');
  assert.deepEqual(spec, [
    { name: 'root', volume: 'default/web-root', serial: 'root', owned: true },
    { name: 'data', volume: 'default/web-data', serial: 'data' },
  ]);
  const [r, d] = disks.attachments('web', spec, 'qemu');
  assert.equal(r!.format, 'qcow2');
  assert.deepEqual(r!.backingFiles, [fs.realpathSync(base)]);
  assert.equal(d!.backingFiles, undefined);
  const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', r!.path], { encoding: 'utf8' }));
  assert.equal(info['virtual-size'], 32 * MiB);
  assert.equal(info['backing-filename-format'], 'qcow2');
  assert.ok(fs.statSync(r!.path).size < MiB, 'thin: no copy of the base');
  assert.deepEqual(storage.requireVolume('default', 'web-root').attachments, [{ vm: 'web', device: 'root', readOnly: false }]);
});

test('a VM starts while another VM\'s root overlay is still being made (two launches of one image at once)', async () => {
  const root = disks.rootPlan('web', { name: 'img', disk: base }, 32 * MiB)!;
  const spec = await disks.provision('web', [root], 'qemu');
  // The other launch has claimed its overlay of the same base: recorded `creating`, no file yet.
  const claim = storage.claimVolume({ pool: 'default', name: 'other-root', format: 'qcow2', sizeBytes: 32 * MiB, backing: fs.realpathSync(base) });
  const [r] = disks.attachments('web', spec, 'qemu');
  assert.deepEqual(r!.backingFiles, [fs.realpathSync(base)]);
  claim.release();
});

test('micro: the root disk is a raw copy of the base (hangar-vmm reads raw only), grown to rootSize', async () => {
  const root = disks.rootPlan('m', { name: 'img', disk: base }, 24 * MiB)!;
  const spec = await disks.provision('m', [root], 'micro');
  const [r] = disks.attachments('m', spec, 'micro');
  assert.equal(r!.format, 'raw');
  assert.equal(r!.backingFiles, undefined);
  const copy = fs.readFileSync(r!.path);
  assert.equal(copy.length, 24 * MiB);
  assert.ok(copy.subarray(0, baseRaw.length).equals(baseRaw), 'the copy holds the base\'s bytes');
  assert.ok(copy.subarray(baseRaw.length).every((b) => b === 0));
  // New data volumes for micro are raw too.
  const [data] = await disks.provision('m', planDisks('m', [{ size: '4M' }], ['root']), 'micro');
  assert.equal(disks.attachments('m', [data!], 'micro')[0]!.format, 'raw');
});

test('rootSize: only for an image with a base disk, never smaller than it', () => {
  assert.throws(() => disks.rootPlan('v', { name: 'tiny' }, 32 * MiB), isCode('INVALID_ARGUMENT', /has no base disk/));
  assert.throws(() => disks.rootPlan('v', { name: 'img', disk: base }, 8 * MiB), isCode('INVALID_ARGUMENT', /smaller than image "img"'s disk \(16M\)/));
  assert.equal(disks.rootPlan('v', { name: 'tiny' }, undefined), null);
  assert.equal(disks.rootPlan('v', { name: 'img', disk: base }, undefined)!.sizeBytes, 16 * MiB);
});

test('named volumes: must exist, be free, suit the engine; new ones must fit the quota', async () => {
  await storage.createVolume({ name: 'q', format: 'qcow2', sizeBytes: 4 * MiB });
  await storage.createVolume({ name: 'r', format: 'raw', sizeBytes: 4 * MiB });
  assert.throws(() => disks.check('a', planDisks('a', [{ volume: 'nope' }]), 'qemu'), isCode('NOT_FOUND', /no volume "nope" in pool "default"/));
  assert.throws(() => disks.check('a', planDisks('a', [{ volume: 'q' }]), 'micro'), isCode('UNSUPPORTED', /qcow2, and the micro engine .* raw volumes only/));
  assert.throws(() => disks.check('a', planDisks('a', [{ size: '300M' }]), 'qemu'), isCode('RESOURCE_EXHAUSTED', /quota/));
  // Two disks that fit alone but not together.
  assert.throws(() => disks.check('a', planDisks('a', [{ size: '150M' }, { size: '150M' }]), 'qemu'), isCode('RESOURCE_EXHAUSTED'));
  assert.throws(() => disks.check('a', planDisks('a', [{ size: '1M', pool: 'nopool' }]), 'qemu'), isCode('NOT_FOUND'));
  await disks.provision('a', planDisks('a', [{ volume: 'r' }]), 'micro');
  assert.throws(() => disks.check('b', planDisks('b', [{ volume: 'default/r' }]), 'qemu'), isCode('INVALID_STATE', /already attached to VM a \(disk disk1\)/));
  // A new volume whose name is taken.
  await storage.createVolume({ name: 'c-data', sizeBytes: MiB });
  assert.throws(() => disks.check('c', planDisks('c', [{ name: 'data', size: '1M' }]), 'qemu'), isCode('ALREADY_EXISTS'));
});

test('a failure halfway undoes what was made: no volume, no attachment left', async () => {
  await storage.createVolume({ name: 'kept', format: 'raw', sizeBytes: MiB });
  // The third disk's volume vanished after the checks: the first two steps are undone.
  const plans = planDisks('v', [{ name: 'a', size: '2M' }, { volume: 'kept' }, { volume: 'gone' }]);
  await assert.rejects(disks.provision('v', plans, 'qemu'), isCode('NOT_FOUND'));
  assert.equal(storage.getVolume('default', 'v-a'), null);
  assert.equal(fs.readdirSync(path.join(dir, 'storage', 'default')).some((f) => f.startsWith('v-a')), false);
  assert.deepEqual(storage.requireVolume('default', 'kept').attachments, []);
});

test('VM delete: its own root volume goes, data volumes stay and are free again', async () => {
  const spec = await disks.provision('w', [disks.rootPlan('w', { name: 'img', disk: base }, undefined)!, ...planDisks('w', [{ name: 'data', size: '2M' }], ['root'])], 'qemu');
  const [root, data] = disks.attachments('w', spec, 'qemu');
  disks.releaseForDelete('w', spec);
  assert.equal(fs.existsSync(root!.path), false);
  assert.equal(storage.getVolume('default', 'w-root'), null);
  assert.equal(fs.existsSync(data!.path), true);
  assert.deepEqual(storage.requireVolume('default', 'w-data').attachments, []);
});

test('a volume taken between the check and the attach is refused, and nothing is left behind', async () => {
  await storage.createVolume({ name: 'shared', format: 'qcow2', sizeBytes: MiB });
  const plans = planDisks('late', [{ name: 'mine', size: '1M' }, { volume: 'shared' }]);
  disks.check('late', plans, 'qemu');
  await disks.provision('early', planDisks('early', [{ volume: 'shared' }]), 'qemu');
  await assert.rejects(disks.provision('late', plans, 'qemu'), isCode('INVALID_STATE', /already attached to VM early/));
  assert.equal(storage.getVolume('default', 'late-mine'), null);
  assert.deepEqual(storage.requireVolume('default', 'shared').attachments.map((a) => a.vm), ['early']);
});
