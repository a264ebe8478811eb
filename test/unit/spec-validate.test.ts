import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildVmSpec, type SpecContext } from '../../src/host/spec.js';
import { HangarError } from '../../src/common/errors.js';

const ctx: SpecContext = { hostCpus: 2, hostMemoryBytes: 24 * 1024 ** 3, imageNames: ['tiny'] };

function code(fn: () => unknown): string {
  try { fn(); } catch (e) { assert.ok(e instanceof HangarError, String(e)); return e.code; }
  assert.fail('expected an error');
}

test('defaults: qemu engine, 1 cpu, 256M, empty cmdline', () => {
  assert.deepEqual(buildVmSpec({ name: 'a', image: 'tiny' }, ctx), { image: 'tiny', engine: 'qemu', cpus: 1, memoryBytes: 256 * 1024 ** 2, cmdline: '' });
});

test('sizes are parsed strictly', () => {
  assert.equal(buildVmSpec({ name: 'a', image: 'tiny', memory: '128M' }, ctx).memoryBytes, 128 * 1024 ** 2);
  assert.equal(buildVmSpec({ name: 'a', image: 'tiny', memory: 1024 ** 3 }, ctx).memoryBytes, 1024 ** 3);
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'tiny', memory: '12XB' }, ctx)), 'INVALID_ARGUMENT');
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'tiny', memory: '-1G' }, ctx)), 'INVALID_ARGUMENT');
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'tiny', memory: '1.5K' }, ctx)), 'INVALID_ARGUMENT');
});

test('memory bounds: at least 64M, at most the host total', () => {
  assert.equal(buildVmSpec({ name: 'a', image: 'tiny', memory: '64M' }, ctx).memoryBytes, 64 * 1024 ** 2);
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'tiny', memory: '63M' }, ctx)), 'INVALID_ARGUMENT');
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'tiny', memory: '25G' }, ctx)), 'INVALID_ARGUMENT');
  assert.equal(buildVmSpec({ name: 'a', image: 'tiny', memory: '24G' }, ctx).memoryBytes, 24 * 1024 ** 3);
});

test('cpus between 1 and the host CPU count', () => {
  assert.equal(buildVmSpec({ name: 'a', image: 'tiny', cpus: 2 }, ctx).cpus, 2);
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'tiny', cpus: 0 }, ctx)), 'INVALID_ARGUMENT');
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'tiny', cpus: 3 }, ctx)), 'INVALID_ARGUMENT');
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'tiny', cpus: 10000 }, ctx)), 'INVALID_ARGUMENT');
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'tiny', cpus: -1 }, ctx)), 'INVALID_ARGUMENT');
});

test('the image must exist; names and cmdline are checked', () => {
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'nope' }, ctx)), 'NOT_FOUND');
  assert.equal(code(() => buildVmSpec({ name: 'Bad_Name', image: 'tiny' }, ctx)), 'INVALID_ARGUMENT');
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'tiny', cmdline: 'x\ny' }, ctx)), 'INVALID_ARGUMENT');
  assert.equal(buildVmSpec({ name: 'a', image: 'tiny', engine: 'micro', cmdline: 'quiet' }, ctx).engine, 'micro');
});
