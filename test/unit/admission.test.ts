/**
 * The admission budget's arithmetic and its settings: defaults for a host,
 * the config file and flags (flags win), and the refusals with numbers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Admission, defaultMemoryReserve, defaultSettings, loadAdmissionSettings, type Usage } from '../../src/host/admission.js';
import { HangarError } from '../../src/common/errors.js';

const GiB = 1024 ** 3;
const HOST = { memoryBytes: 24 * GiB, cpus: 2 };

function error(fn: () => unknown): HangarError {
  try { fn(); } catch (e) { assert.ok(e instanceof HangarError, String(e)); return e; }
  assert.fail('expected an error');
}

function admission(committed: Usage, defined = 0, settings = defaultSettings(HOST)): Admission {
  return new Admission({ settings, host: HOST, committed: () => committed, defined: () => defined });
}

test('defaults: reserve the larger of 1 GiB and 10 % (at most half), memory ratio 1, 4 vCPUs per CPU, 1000 VMs', () => {
  assert.equal(defaultMemoryReserve(24 * GiB), Math.floor(2.4 * GiB));
  assert.equal(defaultMemoryReserve(4 * GiB), GiB);
  assert.equal(defaultMemoryReserve(1 * GiB), GiB / 2);
  const lim = admission({ cpus: 0, memoryBytes: 0 }).limits();
  assert.equal(lim.memoryBytes, 24 * GiB - Math.floor(2.4 * GiB));
  assert.equal(lim.cpus, 8);
  assert.equal(lim.vms, 1000);
});

test('the audit\'s case: a 23 GiB VM on a 24 GiB host is refused at create, with the numbers', () => {
  const e = error(() => admission({ cpus: 0, memoryBytes: 0 }).checkCreate('big', { cpus: 2, memoryBytes: 23 * GiB }));
  assert.equal(e.code, 'RESOURCE_EXHAUSTED');
  assert.match(e.message, /^cannot create VM "big": it needs 23G of memory, 0B of 21\.6G admitted are committed/);
  assert.deepEqual(e.details, { resource: 'memory', requested: 23 * GiB, committed: 0, limit: 24 * GiB - Math.floor(2.4 * GiB) });
});

test('start: fits up to the limit exactly, one byte or one vCPU more is refused', () => {
  const lim = admission({ cpus: 0, memoryBytes: 0 }).limits();
  const half = { cpus: 4, memoryBytes: lim.memoryBytes / 2 };
  admission(half).checkStart('b', { cpus: 4, memoryBytes: lim.memoryBytes - half.memoryBytes });
  const mem = error(() => admission(half).checkStart('b', { cpus: 1, memoryBytes: lim.memoryBytes - half.memoryBytes + 1 }));
  assert.equal(mem.code, 'RESOURCE_EXHAUSTED');
  assert.equal((mem.details as { resource: string }).resource, 'memory');
  const cpu = error(() => admission(half).checkStart('b', { cpus: 5, memoryBytes: 1 }));
  assert.equal(cpu.message, 'cannot start VM "b": it needs 5 vCPUs, 4 of 8 admitted are committed to running VMs (4 free)');
});

test('the VM count cap refuses a create', () => {
  const e = error(() => admission({ cpus: 0, memoryBytes: 0 }, 1000).checkCreate('x', { cpus: 1, memoryBytes: 1 }));
  assert.equal(e.code, 'RESOURCE_EXHAUSTED');
  assert.match(e.message, /1000 VMs are defined and this daemon admits at most 1000/);
  admission({ cpus: 0, memoryBytes: 0 }, 999).checkCreate('x', { cpus: 1, memoryBytes: 1 });
});

test('settings: hangard.json, then flags; bad values are named', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-adm-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  assert.deepEqual(loadAdmissionSettings(dir, {}, HOST), defaultSettings(HOST), 'no file, no flags: defaults');
  fs.writeFileSync(path.join(dir, 'hangard.json'), JSON.stringify({ admission: { memoryReserve: '2G', memoryRatio: 1.5, maxVms: 10 } }));
  assert.deepEqual(loadAdmissionSettings(dir, {}, HOST), { memoryReserveBytes: 2 * GiB, memoryRatio: 1.5, cpuRatio: 4, maxVms: 10 });
  assert.deepEqual(loadAdmissionSettings(dir, { maxVms: '20', cpuRatio: '2' }, HOST), { memoryReserveBytes: 2 * GiB, memoryRatio: 1.5, cpuRatio: 2, maxVms: 20 });
  assert.match(error(() => loadAdmissionSettings(dir, { cpuRatio: '-1' }, HOST)).message, /^flags: cpuRatio must be a number above 0/);
  assert.match(error(() => loadAdmissionSettings(dir, { maxVms: '0' }, HOST)).message, /^flags: maxVms must be a whole number of at least 1/);
  fs.writeFileSync(path.join(dir, 'hangard.json'), JSON.stringify({ admission: { memRatio: 2 } }));
  assert.match(error(() => loadAdmissionSettings(dir, {}, HOST)).message, /hangard\.json: unknown admission setting "memRatio"/);
  fs.writeFileSync(path.join(dir, 'hangard.json'), '{ not json');
  assert.match(error(() => loadAdmissionSettings(dir, {}, HOST)).message, /hangard\.json is not valid JSON/);
});
