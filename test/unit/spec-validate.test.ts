import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildVmSpec, type SpecContext } from '../../src/host/spec.js';
import { HangarError } from '../../src/common/errors.js';
import { QEMU_LIMITS } from '../../src/engines/qemu/limits.js';
import { MICRO_LIMITS } from '../../src/engines/micro/limits.js';
import { MAX_RAM, MAX_VCPUS, MIN_RAM } from '../../src/vmm/layout.js';
import type { VmCreateRequest } from '../../src/host/api/schemas.js';

const qemu: SpecContext = { imageNames: ['tiny'], engine: { name: 'qemu', limits: QEMU_LIMITS } };
const micro: SpecContext = { imageNames: ['tiny'], engine: { name: 'micro', limits: MICRO_LIMITS } };

function error(fn: () => unknown): HangarError {
  try { fn(); } catch (e) { assert.ok(e instanceof HangarError, String(e)); return e; }
  assert.fail('expected an error');
}
const code = (fn: () => unknown): string => error(fn).code;
const onMicro = (r: Partial<VmCreateRequest>): VmCreateRequest => ({ name: 'a', image: 'tiny', engine: 'micro', ...r });

test('defaults: qemu engine, 1 cpu, 256M, empty cmdline', () => {
  assert.deepEqual(buildVmSpec({ name: 'a', image: 'tiny' }, qemu), { image: 'tiny', engine: 'qemu', cpus: 1, memoryBytes: 256 * 1024 ** 2, cmdline: '', disks: [] });
});

test('sizes are parsed strictly', () => {
  assert.equal(buildVmSpec({ name: 'a', image: 'tiny', memory: '128M' }, qemu).memoryBytes, 128 * 1024 ** 2);
  assert.equal(buildVmSpec({ name: 'a', image: 'tiny', memory: 1024 ** 3 }, qemu).memoryBytes, 1024 ** 3);
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'tiny', memory: '12XB' }, qemu)), 'INVALID_ARGUMENT');
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'tiny', memory: '-1G' }, qemu)), 'INVALID_ARGUMENT');
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'tiny', memory: '1.5K' }, qemu)), 'INVALID_ARGUMENT');
});

test('micro: memory in whole 2 MiB units between the VMM layout\'s MIN_RAM and MAX_RAM, the rule named', () => {
  assert.equal(buildVmSpec(onMicro({ memory: '128M' }), micro).memoryBytes, 128 * 1024 ** 2);
  const odd = error(() => buildVmSpec(onMicro({ memory: '129M' }), micro));
  assert.equal(odd.code, 'INVALID_ARGUMENT');
  assert.equal(odd.message, 'memory must be a multiple of 2 MiB for engine micro, got 129M');
  const big = error(() => buildVmSpec(onMicro({ memory: '4G' }), micro));
  assert.equal(big.code, 'INVALID_ARGUMENT');
  assert.equal(big.message, 'memory must be at most 3 GiB for engine micro, got 4G');
  assert.equal(buildVmSpec(onMicro({ memory: MAX_RAM }), micro).memoryBytes, MAX_RAM);
  assert.equal(buildVmSpec(onMicro({ memory: MIN_RAM }), micro).memoryBytes, MIN_RAM);
  assert.match(error(() => buildVmSpec(onMicro({ memory: MIN_RAM - 2 * 1024 ** 2 }), micro)).message, /^memory must be at least 16 MiB for engine micro/);
});

test('micro: vCPUs up to the VMM\'s MAX_VCPUS, whatever the host has', () => {
  assert.equal(buildVmSpec(onMicro({ cpus: MAX_VCPUS }), micro).cpus, MAX_VCPUS);
  assert.equal(error(() => buildVmSpec(onMicro({ cpus: MAX_VCPUS + 1 }), micro)).message, `cpus must be between 1 and ${MAX_VCPUS} for engine micro, got ${MAX_VCPUS + 1}`);
});

test('qemu: whole MiB, 16 MiB up to 1 TiB, 1..255 vCPUs', () => {
  assert.equal(buildVmSpec({ name: 'a', image: 'tiny', memory: '129M' }, qemu).memoryBytes, 129 * 1024 ** 2, '129M is fine for QEMU');
  assert.equal(buildVmSpec({ name: 'a', image: 'tiny', memory: '64G' }, qemu).memoryBytes, 64 * 1024 ** 3, 'more than this host has: the budget decides at start');
  assert.equal(error(() => buildVmSpec({ name: 'a', image: 'tiny', memory: '1000K' }, qemu)).message, 'memory must be a multiple of 1 MiB for engine qemu, got 1000K');
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'tiny', memory: '15M' }, qemu)), 'INVALID_ARGUMENT');
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'tiny', memory: '2T' }, qemu)), 'INVALID_ARGUMENT');
  assert.equal(buildVmSpec({ name: 'a', image: 'tiny', cpus: 255 }, qemu).cpus, 255);
  for (const cpus of [0, -1, 256, 10000, 1.5]) {
    assert.equal(code(() => buildVmSpec({ name: 'a', image: 'tiny', cpus }, qemu)), 'INVALID_ARGUMENT', String(cpus));
  }
});

test('the image must exist; names and cmdline are checked', () => {
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'nope' }, qemu)), 'NOT_FOUND');
  assert.equal(code(() => buildVmSpec({ name: 'Bad_Name', image: 'tiny' }, qemu)), 'INVALID_ARGUMENT');
  assert.equal(code(() => buildVmSpec({ name: 'a', image: 'tiny', cmdline: 'x\ny' }, qemu)), 'INVALID_ARGUMENT');
  assert.equal(buildVmSpec({ name: 'a', image: 'tiny', engine: 'micro', cmdline: 'quiet' }, micro).engine, 'micro');
});
