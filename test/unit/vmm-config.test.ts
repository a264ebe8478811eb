/**
 * Validation of hangar-vmm's configuration objects (control API bodies and
 * config file), CPUID normalisation per vCPU, the control API routes with a
 * stub controller, and the micro engine's exit mapping.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseBootSource, parseConfigFile, parseDrive, parseMachineConfig, parseNet } from '../../src/vmm/config.js';
import { normaliseCpuid } from '../../src/vmm/boot/cpuid.js';
import { route } from '../../src/vmm/api.js';
import type { VmmController } from '../../src/vmm/controller.js';
import { vmExitFor } from '../../src/engines/micro/engine.js';
import { exitCodeFor, VMM_EXIT } from '../../src/vmm/exit-codes.js';

const invalid = (e: unknown) => (e as { code?: string }).code === 'INVALID_ARGUMENT';

test('machine-config: ranges, even MiB, unknown fields', () => {
  assert.deepEqual(parseMachineConfig({ vcpu_count: 2, mem_size_mib: 256 }), { vcpu_count: 2, mem_size_mib: 256 });
  for (const bad of [{ vcpu_count: 0, mem_size_mib: 64 }, { vcpu_count: 33, mem_size_mib: 64 }, { vcpu_count: 1, mem_size_mib: 8 },
    { vcpu_count: 1, mem_size_mib: 4096 }, { vcpu_count: 1, mem_size_mib: 63 }, { vcpu_count: 1.5, mem_size_mib: 64 }, { vcpu_count: 1, mem_size_mib: 64, x: 1 }, null, [], 'x']) {
    assert.throws(() => parseMachineConfig(bad), invalid, JSON.stringify(bad));
  }
});

test('boot-source, drives and network interfaces', () => {
  assert.deepEqual(parseBootSource({ kernel_image_path: '/k', boot_args: 'a b' }), { kernel_image_path: '/k', boot_args: 'a b' });
  assert.throws(() => parseBootSource({ boot_args: 'x' }), invalid);
  assert.throws(() => parseBootSource({ kernel_image_path: '/k', boot_args: 'a\nb' }), invalid);
  assert.deepEqual(parseDrive({ drive_id: 'd1', path_on_host: '/x', is_read_only: true }, 'd1'), { drive_id: 'd1', path_on_host: '/x', is_read_only: true });
  assert.throws(() => parseDrive({ drive_id: 'd1', path_on_host: '/x' }, 'd2'), invalid);
  assert.throws(() => parseDrive({ drive_id: '../x', path_on_host: '/x' }), invalid);
  assert.deepEqual(parseNet({ iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '02:00:00:00:00:01' }), { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '02:00:00:00:00:01' });
  assert.throws(() => parseNet({ iface_id: 'eth0', host_dev_name: 'tap with space' }), invalid);
  assert.throws(() => parseNet({ iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '02:00' }), invalid);
  const f = parseConfigFile({ 'boot-source': { kernel_image_path: '/k' }, drives: [{ drive_id: 'a', path_on_host: '/a' }] });
  assert.equal(f.drives?.length, 1);
  assert.throws(() => parseConfigFile({ 'machine-config': { vcpu_count: 1, mem_size_mib: 64 } }), invalid);
});

test('CPUID: APIC id and counts per vCPU; features nested KVM cannot emulate are masked', () => {
  const supported = [
    { function: 1, index: 0, flags: 0, eax: 0x800f12, ebx: 0x12345678, ecx: (1 << 26) | (1 << 28) | (1 << 13) | (1 << 0), edx: 0 },
    { function: 7, index: 0, flags: 1, eax: 0, ebx: (1 << 5) | (1 << 20) | (1 << 3), ecx: 0, edx: 0 },
    { function: 0xd, index: 0, flags: 1, eax: 7, ebx: 0, ecx: 0, edx: 0 },
    { function: 0xb, index: 1, flags: 1, eax: 0, ebx: 0, ecx: 0, edx: 0 },
  ];
  const c = normaliseCpuid(supported, { vcpuIndex: 3, vcpuCount: 4 });
  const l1 = c.find((e) => e.function === 1)!;
  assert.equal(l1.ebx >>> 24, 3);
  assert.equal((l1.ebx >>> 16) & 0xff, 4);
  assert.equal(l1.ecx & ((1 << 26) | (1 << 28) | (1 << 13)), 0, 'XSAVE, AVX, CX16 masked');
  assert.equal(l1.ecx & 1, 1, 'SSE3 kept');
  assert.ok((l1.ecx >>> 31) === 1, 'hypervisor bit');
  assert.equal((l1.edx >>> 28) & 1, 1, 'HTT with 4 vCPUs');
  const l7 = c.find((e) => e.function === 7)!;
  assert.equal(l7.ebx, 1 << 3, 'AVX2 and SMAP masked, BMI1 kept');
  assert.equal(c.find((e) => e.function === 0xd), undefined, 'XSAVE leaf dropped');
  assert.equal(c.find((e) => e.function === 0xb)!.edx, 3);
  const full = normaliseCpuid(supported, { vcpuIndex: 0, vcpuCount: 1, conservative: false });
  assert.ok(full.find((e) => e.function === 0xd));
  assert.equal(full.find((e) => e.function === 1)!.ecx & (1 << 26), 1 << 26);
});

test('control API routes: validation errors and unknown paths', async () => {
  const calls: string[] = [];
  const ctl = {
    instanceInfo: () => ({ state: 'Not started' }), vmInfo: () => ({}), metrics: () => ({}), machineConfig: {},
    setMachineConfig: () => calls.push('mc'), setBootSource: () => calls.push('bs'), putDrive: () => calls.push('drive'),
    putNet: () => calls.push('net'), setEntropy: () => calls.push('rng'), action: async (a: string) => { calls.push(a); },
  } as unknown as VmmController;
  assert.equal((await route(ctl, 'GET', '/', undefined)).status, 200);
  assert.equal((await route(ctl, 'PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 64 })).status, 204);
  assert.equal((await route(ctl, 'PUT', '/drives/a', { drive_id: 'a', path_on_host: '/a' })).status, 204);
  assert.equal((await route(ctl, 'PUT', '/actions', { action_type: 'Pause' })).status, 204);
  assert.equal((await route(ctl, 'PATCH', '/vm', { state: 'Resumed' })).status, 204);
  assert.equal((await route(ctl, 'DELETE', '/vm', undefined)).status, 405);
  await assert.rejects(route(ctl, 'GET', '/nope', undefined), (e: { code?: string }) => e.code === 'NOT_FOUND');
  await assert.rejects(route(ctl, 'PUT', '/actions', {}), invalid);
  await assert.rejects(route(ctl, 'PATCH', '/vm', { state: 'Gone' }), invalid);
  assert.deepEqual(calls, ['mc', 'drive', 'Pause', 'Resume']);
});

test('exit codes and the micro engine mapping', () => {
  assert.equal(exitCodeFor('poweroff'), 0);
  assert.equal(vmExitFor(0, null, null, false).reason, 'poweroff');
  assert.equal(vmExitFor(VMM_EXIT.REBOOT, null, null, false).reason, 'reboot');
  assert.equal(vmExitFor(VMM_EXIT.CRASHED, null, { code: 4, reason: 'crashed', detail: 'emulation failure' }, false).detail, 'emulation failure');
  assert.equal(vmExitFor(VMM_EXIT.STOPPED, null, null, false).reason, 'stopped');
  assert.equal(vmExitFor(VMM_EXIT.ERROR, null, null, false).reason, 'crashed');
  assert.equal(vmExitFor(null, 'SIGKILL', null, true).reason, 'killed');
  assert.equal(vmExitFor(null, null, { code: 0, reason: 'poweroff', detail: 'x' }, false).reason, 'poweroff', 'adopted: exit record');
  assert.equal(vmExitFor(null, null, null, false).reason, 'crashed');
});

test('one schema per body: validation messages quote its rule, and GET /openapi.json carries the same schemas', async () => {
  const { VmmMachineConfig, VmmDrive, VmmNetworkInterface } = await import('../../src/api/vmm.js');
  assert.throws(() => parseMachineConfig({ vcpu_count: 99, mem_size_mib: 64 }), /machine-config: "vcpu_count" must be a whole number from 1 to 32/);
  assert.throws(() => parseMachineConfig({ vcpu_count: 1 }), /machine-config: field "mem_size_mib" is required/);
  assert.throws(() => parseMachineConfig({ vcpu_count: 1, mem_size_mib: 64, turbo: true }), /machine-config: unknown field "turbo"/);
  assert.throws(() => parseConfigFile({ 'boot-source': { kernel_image_path: '/k' }, drives: [{ drive_id: 'a', path_on_host: '/a', x: 1 }] }), /config: "drives\[0\]" unknown field "x"/);
  const ctl = {} as VmmController;
  const r = await route(ctl, 'GET', '/openapi.json', undefined);
  assert.equal(r.status, 200);
  const doc = r.body as { openapi: string; paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: unknown }> } }>> };
  assert.match(doc.openapi, /^3\./);
  const bodyOf = (p: string, m: string) => doc.paths[p]?.[m]?.requestBody?.content['application/json']?.schema;
  assert.deepEqual(bodyOf('/machine-config', 'put'), JSON.parse(JSON.stringify(VmmMachineConfig)));
  assert.deepEqual(bodyOf('/drives/{drive_id}', 'put'), JSON.parse(JSON.stringify(VmmDrive)));
  assert.deepEqual(bodyOf('/network-interfaces/{iface_id}', 'put'), JSON.parse(JSON.stringify(VmmNetworkInterface)));
  for (const p of ['/', '/vm', '/metrics', '/boot-source', '/entropy', '/actions', '/snapshot/create', '/snapshot/load']) assert.ok(doc.paths[p], `${p} documented`);
});

test('the drive-id rule is one rule: the API and the virtio factory refuse the same ids', async () => {
  const { createVirtioDevices } = await import('../../src/vmm/virtio/index.js');
  const { DEVICE_ID_PATTERN } = await import('../../src/api/names.js');
  const host = { log: { child: () => host.log, info() {}, warn() {} } } as unknown as Parameters<typeof createVirtioDevices>[0];
  for (const id of ['a.b', 'x'.repeat(65), '', 'a/b', '..']) {
    assert.equal(new RegExp(DEVICE_ID_PATTERN).test(id), false, id);
    assert.throws(() => parseDrive({ drive_id: id, path_on_host: '/x' }), invalid, `API: ${id}`);
    assert.throws(() => createVirtioDevices(host, { drives: [{ drive_id: id, path_on_host: '/x' }], nets: [] }), invalid, `factory: ${id}`);
  }
});

test('the VMM checks bodies against the TypeBox schemas: generated JSON equals them, and its checker agrees with Value.Check', async () => {
  const api = await import('../../src/api/vmm.js');
  const { VMM_SCHEMA_JSON } = await import('../../src/api/vmm-schemas.generated.js');
  const { firstSchemaError } = await import('../../src/vmm/schema-check.js');
  const { Value } = await import('typebox/value');
  const fsm = await import('node:fs');
  const { projectRoot } = await import('../../src/common/paths.js');
  const generated = fsm.readFileSync(`${projectRoot()}/src/api/vmm-schemas.generated.ts`, 'utf8');
  assert.equal(generated, api.vmmSchemasModule(), 'src/api/vmm-schemas.generated.ts is stale: npm run build && node scripts/gen-vmm-schemas.mjs');
  assert.deepEqual(VMM_SCHEMA_JSON, JSON.parse(JSON.stringify(api.VMM_BODY_SCHEMAS)));
  // Differential: random bodies, valid ones bent in random ways; both checkers must agree on each.
  const { Rng } = await import('../helpers/fuzz.js');
  const r = new Rng(12345);
  const rnd = (n: number) => r.int(n);
  const atoms: unknown[] = [null, true, false, 0, 1, -1, 1.5, 2, 15, 16, 17, 32, 33, 129, 1023, 3072, 3074, '', '/', '/a', 'a', 'a\nb', '/a\u0000', 'x'.repeat(4001), 'tap0', '..', 'a.b', 'd1', '02:00:00:00:00:01', '01:00:00:00:00:0g', 'Paused', 'InstanceStart', 'é', 'ok serial', 'x'.repeat(21), [], {}];
  const samples: Record<string, unknown> = {
    machineConfig: { vcpu_count: 2, mem_size_mib: 256, smt: false, track_dirty_pages: true, conservative_cpuid: true },
    bootSource: { kernel_image_path: '/k', initrd_path: '/i', boot_args: 'console=ttyS0' },
    drive: { drive_id: 'd1', path_on_host: '/d', is_root_device: false, is_read_only: true, serial: 'abc' },
    networkInterface: { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '02:00:00:00:00:01' },
    entropy: {},
    action: { action_type: 'Pause' },
    vmStatePatch: { state: 'Resumed' },
    configFile: { 'machine-config': { vcpu_count: 1, mem_size_mib: 64 }, 'boot-source': { kernel_image_path: '/k' }, drives: [{ drive_id: 'a', path_on_host: '/a' }], 'network-interfaces': [], entropy: {} },
    snapshotCreate: { snapshot_path: '/s', mem_file_path: '/m', snapshot_type: 'Full' },
    snapshotLoad: { snapshot_path: '/s', mem_file_path: '/m', resume_vm: true },
  };
  let agreed = 0, valid = 0;
  for (const [name, schema] of Object.entries(api.VMM_BODY_SCHEMAS)) {
    for (let i = 0; i < 1500; i++) {
      const v = JSON.parse(JSON.stringify(samples[name])) as Record<string, unknown>;
      const keys = Object.keys(v);
      for (let k = rnd(3); k > 0; k--) {
        const op = rnd(4);
        if (op === 0 && keys.length) delete v[keys[rnd(keys.length)]!];
        else if (op === 1 && keys.length) v[keys[rnd(keys.length)]!] = atoms[rnd(atoms.length)];
        else if (op === 2) v[['extra', 'smt', 'serial', 'drives', 'state'][rnd(5)]!] = atoms[rnd(atoms.length)];
      }
      const body = rnd(10) === 0 ? atoms[rnd(atoms.length)] : v;
      const tb = Value.Check(schema, body);
      const ours = firstSchemaError(VMM_SCHEMA_JSON[name as keyof typeof VMM_SCHEMA_JSON] as never, body) === null;
      assert.equal(ours, tb, `${name} ${JSON.stringify(body)}: ours ${ours}, TypeBox ${tb}`);
      agreed++;
      if (tb) valid++;
    }
  }
  assert.ok(valid > 100 && valid < agreed - 100, `both verdicts exercised: ${valid} valid of ${agreed}`);
});
