/**
 * hangar-vmm's control API on its Unix socket: configuration and its
 * validation, InstanceStart, GET /vm and /metrics, pause/resume of a running
 * guest (its counter stops while paused), Stop and SIGTERM with their exit
 * codes, and a configured drive placed in the first virtio-mmio slot.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { VMM_EXIT } from '../../src/vmm/exit-codes.js';
import { api, bootGuest, buildGuest, ConsoleClient, kvmUsable, startVmm } from '../helpers/vmm.js';

const skip = kvmUsable ? false : 'no usable /dev/kvm';
let counterElf = '';
let helloElf = '';

before(() => {
  if (skip) return;
  counterElf = buildGuest('counter');
  helloElf = buildGuest('hello');
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const lastTick = (text: string): number => {
  const all = [...text.matchAll(/tick (\d+)\n/g)];
  return all.length ? Number(all[all.length - 1]![1]) : -1;
};

test('configuration is validated and only accepted before start', { skip }, async () => {
  const vmm = await startVmm();
  try {
    let r = await api(vmm.apiSock, 'GET', '/');
    assert.equal(r.status, 200);
    assert.deepEqual((r.body as { state: string; app_name: string }).state, 'Not started');
    r = await api(vmm.apiSock, 'PUT', '/machine-config', { vcpu_count: 0, mem_size_mib: 64 });
    assert.equal(r.status, 400);
    assert.match((r.body as { fault_message: string }).fault_message, /vcpu_count/);
    r = await api(vmm.apiSock, 'PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 64, bogus: 1 });
    assert.equal(r.status, 400);
    r = await api(vmm.apiSock, 'PUT', '/drives/root', { drive_id: 'other', path_on_host: '/tmp/x' });
    assert.equal(r.status, 400, 'drive id must match the path');
    r = await api(vmm.apiSock, 'PUT', '/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: 'nonsense' });
    assert.equal(r.status, 400);
    r = await api(vmm.apiSock, 'PUT', '/actions', { action_type: 'Pause' });
    assert.equal(r.status, 409, 'cannot pause before start');
    r = await api(vmm.apiSock, 'PUT', '/actions', { action_type: 'InstanceStart' });
    assert.equal(r.status, 409, 'cannot start without a boot source');
    r = await api(vmm.apiSock, 'PUT', '/actions', { action_type: 'Explode' });
    assert.equal(r.status, 400);
    r = await api(vmm.apiSock, 'GET', '/nothing-here');
    assert.equal(r.status, 404);
    r = await api(vmm.apiSock, 'PUT', '/boot-source', { kernel_image_path: '/nonexistent/kernel' });
    assert.equal(r.status, 204);
    r = await api(vmm.apiSock, 'PUT', '/actions', { action_type: 'InstanceStart' });
    assert.equal(r.status, 404, 'missing kernel file is NOT_FOUND');
    assert.match((r.body as { fault_message: string }).fault_message, /nonexistent/);
    // The failed start left the VMM configurable.
    r = await api(vmm.apiSock, 'GET', '/vm');
    assert.equal((r.body as { state: string }).state, 'Not started');
  } finally {
    await vmm.cleanup();
  }
});

test('pause stops the guest counter, resume continues it; Stop ends with exit 5', { skip }, async () => {
  const vmm = await startVmm();
  try {
    const con = await ConsoleClient.connect(vmm.consoleSock);
    await bootGuest(vmm, counterElf, { vcpus: 1 });
    await con.waitFor(/tick 3\n/);
    let r = await api(vmm.apiSock, 'PUT', '/actions', { action_type: 'Pause' });
    assert.equal(r.status, 204);
    r = await api(vmm.apiSock, 'GET', '/vm');
    assert.equal((r.body as { state: string }).state, 'Paused');
    await sleep(100); // let output already in flight drain
    const atPause = lastTick(con.text);
    const lenAtPause = con.text.length;
    await sleep(600); // a running guest prints a tick every ~15 ms
    assert.equal(con.text.length, lenAtPause, 'no console output while paused');
    assert.equal(lastTick(con.text), atPause);
    r = await api(vmm.apiSock, 'PATCH', '/vm', { state: 'Resumed' });
    assert.equal(r.status, 204);
    r = await api(vmm.apiSock, 'GET', '/vm');
    assert.equal((r.body as { state: string }).state, 'Running');
    await con.waitFor(new RegExp(`tick ${atPause + 3}\\n`));
    r = await api(vmm.apiSock, 'GET', '/metrics');
    const met = r.body as { vm: { vcpus: Array<{ pioExits: number }> }; timing_ms: { first_console_byte: number } };
    assert.ok(met.vm.vcpus[0]!.pioExits > 0);
    assert.ok(met.timing_ms.first_console_byte > 0);
    r = await api(vmm.apiSock, 'PUT', '/actions', { action_type: 'Stop' });
    assert.equal(r.status, 204);
    assert.equal((await vmm.exited).code, VMM_EXIT.STOPPED);
    assert.match(vmm.stderr(), /stopped: stopped by API action/);
    con.close();
  } finally {
    await vmm.cleanup();
  }
});

test('SIGTERM stops a running VM with exit 5; a paused VM stops too', { skip }, async () => {
  const vmm = await startVmm();
  try {
    const con = await ConsoleClient.connect(vmm.consoleSock);
    await bootGuest(vmm, counterElf, { vcpus: 2 });
    await con.waitFor(/tick 1\n/);
    assert.equal((await api(vmm.apiSock, 'PUT', '/actions', { action_type: 'Pause' })).status, 204);
    vmm.child.kill('SIGTERM');
    assert.equal((await vmm.exited).code, VMM_EXIT.STOPPED);
    assert.equal(JSON.parse(fs.readFileSync(vmm.exitFile, 'utf8')).reason, 'stopped');
    con.close();
  } finally {
    await vmm.cleanup();
  }
});

test('--config starts at once; a configured drive gets the first virtio-mmio slot', { skip }, async () => {
  const img = `${process.env.TMPDIR ?? '/tmp'}/hangar-vmm-api-disk-${process.pid}.img`;
  fs.writeFileSync(img, Buffer.alloc(1 << 20));
  const vmm = await startVmm([], {
    config: {
      'machine-config': { vcpu_count: 1, mem_size_mib: 32 },
      'boot-source': { kernel_image_path: helloElf, boot_args: 'console=ttyS0' },
      drives: [{ drive_id: 'scratch', path_on_host: img, is_root_device: false }],
    },
  });
  try {
    const { code } = await vmm.exited;
    assert.equal(code, VMM_EXIT.POWEROFF);
    const log = fs.readFileSync(vmm.consoleLog, 'latin1');
    assert.match(log, /ram: 32 MiB/);
    // The drive becomes a virtio-mmio device in slot 0, which the DSDT describes: the command line stays the guest's own.
    const cmdline = /cmdline: (.*)\n/.exec(log)?.[1] ?? '';
    assert.match(cmdline, /^console=ttyS0$/);
  } finally {
    await vmm.cleanup();
    fs.rmSync(img, { force: true });
  }
});
