/** The disks of a create/attach request, checked before any storage is touched (src/host/disks/plan.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planDisks, qualifyVolume, diskSize, MAX_DISKS } from '../../src/host/disks/plan.js';
import { buildVmSpec, type SpecContext } from '../../src/host/spec.js';
import { HangarError } from '../../src/common/errors.js';
import { QEMU_LIMITS } from '../../src/engines/qemu/limits.js';

function error(fn: () => unknown): HangarError {
  try { fn(); } catch (e) { assert.ok(e instanceof HangarError, String(e)); return e; }
  assert.fail('expected an error');
}

test('new volumes are <pool>/<vm>-<name>; existing ones are qualified with their pool', () => {
  const p = planDisks('web', [{ name: 'data', size: '50G' }, { volume: 'shared' }, { volume: 'fast/logs', readOnly: true }, { size: 1048576, pool: 'fast' }]);
  assert.deepEqual(p.map((d) => [d.name, d.volume, d.create, d.readOnly ?? false, d.serial]), [
    ['data', 'default/web-data', true, false, 'data'],
    ['disk1', 'default/shared', false, false, 'disk1'],
    ['disk2', 'fast/logs', false, true, 'disk2'],
    ['disk3', 'fast/web-disk3', true, false, 'disk3'],
  ]);
  assert.equal(p[0]!.create && p[0]!.sizeBytes, 50 * 1024 ** 3);
});

test('default names skip names already taken; an explicit serial wins; a long name gets no serial', () => {
  const p = planDisks('vm', [{ size: '1M' }, { size: '1M', serial: 'ABC-1' }, { name: 'a-name-longer-than-twenty', size: '1M' }], ['disk1']);
  assert.deepEqual(p.map((d) => [d.name, d.serial]), [['disk2', 'disk2'], ['disk3', 'ABC-1'], ['a-name-longer-than-twenty', undefined]]);
});

test('bad disk requests are INVALID_ARGUMENT naming the disk', () => {
  const bad: Array<[string, Parameters<typeof planDisks>[1], RegExp]> = [
    ['both size and volume', [{ size: '1G', volume: 'x' }], /either size .* or volume/],
    ['neither', [{ name: 'x' }], /either size/],
    ['bad name', [{ name: 'a b', size: '1G' }], /disk name "a b"/],
    ['root reserved', [{ name: 'root', size: '1G' }], /root disk's name/],
    ['duplicate name', [{ name: 'a', size: '1G' }, { name: 'a', size: '2G' }], /used twice/],
    ['same volume twice', [{ volume: 'v' }, { volume: 'default/v' }], /given twice/],
    ['tiny size', [{ size: '20' }], /at least 1M/],
    ['odd size', [{ size: 1048577 }], /multiple of 512/],
    ['bad unit', [{ size: '2X' }], /unknown unit/],
    ['bad serial', [{ size: '1M', serial: 'has space' }], /serial/],
    ['pool mismatch', [{ volume: 'a/v', pool: 'b' }], /names pool "a"/],
  ];
  for (const [what, reqs, msg] of bad) {
    const e = error(() => planDisks('vm', reqs));
    assert.equal(e.code, 'INVALID_ARGUMENT', what);
    assert.match(e.message, msg, what);
    assert.match(String(e.details?.field), /^disks\[\d\]/, what);
  }
  const many = Array.from({ length: MAX_DISKS }, () => ({ size: '1M' }));
  assert.match(error(() => planDisks('vm', many, ['root'])).message, /at most 16 disks/);
});

test('qualifyVolume and diskSize', () => {
  assert.equal(qualifyVolume('v'), 'default/v');
  assert.equal(qualifyVolume('v', 'p'), 'p/v');
  assert.equal(qualifyVolume('p/v', 'p'), 'p/v');
  assert.equal(diskSize('20G', 'rootSize'), 20 * 1024 ** 3);
  assert.equal(error(() => diskSize('1K', 'rootSize')).details?.field, 'rootSize');
});

test('the spec records the disks (no root disk for an image without a base disk); rootSize is checked', () => {
  const ctx: SpecContext = { imageNames: ['tiny'], engine: { name: 'qemu', limits: QEMU_LIMITS } };
  const spec = buildVmSpec({ name: 'w', image: 'tiny', disks: [{ name: 'data', size: '2G' }, { volume: 'pool2/v', readOnly: true }] }, ctx);
  assert.deepEqual(spec.disks, [
    { name: 'data', volume: 'default/w-data', serial: 'data' },
    { name: 'disk1', volume: 'pool2/v', readOnly: true, serial: 'disk1' },
  ]);
  assert.equal(error(() => buildVmSpec({ name: 'w', image: 'tiny', rootSize: '5' }, ctx)).details?.field, 'rootSize');
  assert.match(error(() => buildVmSpec({ name: 'w', image: 'tiny', disks: [{ name: 'root', size: '1G' }] }, ctx)).message, /root disk/);
});
