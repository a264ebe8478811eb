/** The qemu-system-x86_64 argv built from an EngineVmConfig, and the config checks in front of it. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BALLOON_QOM_PATH } from '../../src/engines/qemu/device-counters.js';
import { buildQemuArgs, optValue, runFiles } from '../../src/engines/qemu/cmdline.js';
import type { EngineVmConfig } from '../../src/engines/engine.js';
import { isHangarError } from '../../src/common/errors.js';

function config(over: Partial<EngineVmConfig> = {}): EngineVmConfig {
  return {
    id: 'vm-1',
    name: 'web',
    cpus: 1,
    memoryBytes: 256 * 1024 * 1024,
    boot: { kernel: '/img/vmlinuz', initrd: '/img/initrd.img', cmdline: 'console=ttyS0 panic=-1' },
    disks: [],
    nics: [],
    accel: 'tcg',
    runDir: '/run/hangar/vms/web',
    consoleLog: '/var/lib/hangar/vms/web/console.log',
    ...over,
  };
}

/** The value following `flag`, for flags that appear once. */
function valueOf(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}
function valuesOf(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
}

test('base argv: no defaults, q35, tcg, memory in MiB, kernel boot, sockets in runDir', () => {
  const a = buildQemuArgs(config());
  for (const f of ['-nodefaults', '-no-user-config', '-no-reboot']) assert.ok(a.includes(f), f);
  assert.equal(valueOf(a, '-display'), 'none');
  assert.equal(valueOf(a, '-accel'), 'tcg');
  assert.equal(valueOf(a, '-machine'), 'q35');
  assert.equal(valueOf(buildQemuArgs(config(), { machine: 'microvm' }), '-machine'), 'microvm,acpi=on');
  assert.equal(valueOf(a, '-smp'), '1');
  assert.equal(valueOf(a, '-m'), '256M');
  assert.equal(valueOf(a, '-kernel'), '/img/vmlinuz');
  assert.equal(valueOf(a, '-initrd'), '/img/initrd.img');
  assert.equal(valueOf(a, '-append'), 'console=ttyS0 panic=-1');
  assert.equal(valueOf(a, '-name'), 'guest=web,debug-threads=on');
  assert.equal(valueOf(a, '-pidfile'), '/run/hangar/vms/web/qemu.pid');
  const chardevs = valuesOf(a, '-chardev');
  assert.deepEqual(chardevs, [
    'socket,id=console,path=/run/hangar/vms/web/console.sock,server=on,wait=off,logfile=/dev/fdset/1,logappend=on',
    'socket,id=qmp,path=/run/hangar/vms/web/qmp.sock,server=on,wait=off',
  ]);
  // The console log goes through the pipe the engine passes as fd 3 (the rotating writer's).
  assert.equal(valueOf(a, '-add-fd'), 'fd=3,set=1,opaque=console-log');
  assert.equal(valueOf(a, '-serial'), 'chardev:console');
  assert.equal(valueOf(a, '-mon'), 'chardev=qmp,mode=control');
  assert.ok(!a.includes('-daemonize'), 'the engine spawns QEMU detached itself and keeps its pid');
  assert.deepEqual(runFiles('/r'), { qmpSocket: '/r/qmp.sock', consoleSocket: '/r/console.sock', pidFile: '/r/qemu.pid', processLog: '/r/qemu.log' });
});

test('kvm uses the host CPU; several vCPUs under tcg use multi-threaded TCG', () => {
  const k = buildQemuArgs(config({ accel: 'kvm', cpus: 2 }));
  assert.equal(valueOf(k, '-accel'), 'kvm');
  assert.equal(valueOf(k, '-cpu'), 'host');
  const t = buildQemuArgs(config({ cpus: 4 }));
  assert.equal(valueOf(t, '-accel'), 'tcg,thread=multi');
  assert.equal(valueOf(t, '-smp'), '4');
  assert.equal(valueOf(t, '-cpu'), undefined);
});

test('memory is rounded up to whole MiB', () => {
  assert.equal(valueOf(buildQemuArgs(config({ memoryBytes: 512 * 1024 * 1024 + 1 })), '-m'), '513M');
  assert.equal(valueOf(buildQemuArgs(config({ memoryBytes: 2 * 1024 ** 3 })), '-m'), '2048M');
});

test('disks and nics become virtio-mmio devices on microvm and virtio-pci on q35', () => {
  const c = config({
    disks: [
      { id: 'root', path: '/pool/web-root.qcow2', format: 'qcow2', serial: 'hangar-root' },
      { id: 'seed', path: '/pool/seed,1.img', format: 'raw', readOnly: true },
    ],
    nics: [{ id: 'eth0', tap: 'hg-web0', mac: '52:54:00:AB:cd:01' }],
  });
  const a = buildQemuArgs(c, { machine: 'microvm' });
  const nodes = valuesOf(a, '-blockdev').map((j) => JSON.parse(j) as Record<string, unknown>);
  assert.deepEqual(nodes.map((n) => [n.driver, n['node-name'], n['read-only']]), [
    ['file', 'file-root', false], ['qcow2', 'disk-root', false],
    ['file', 'file-seed', true], ['raw', 'disk-seed', true],
  ]);
  // JSON, not QEMU's comma syntax: a comma in a path needs no escaping.
  assert.equal(nodes[2]!.filename, '/pool/seed,1.img');
  assert.equal(nodes[1]!.file, 'file-root');
  assert.deepEqual(valuesOf(a, '-netdev'), ['tap,id=net-eth0,ifname=hg-web0,script=no,downscript=no']);
  assert.deepEqual(valuesOf(a, '-device'), [
    'virtio-blk-device,drive=disk-root,id=dev-disk-root,serial=hangar-root',
    'virtio-blk-device,drive=disk-seed,id=dev-disk-seed',
    'virtio-net-device,netdev=net-eth0,id=dev-net-eth0,mac=52:54:00:ab:cd:01',
    'virtio-balloon-device,id=balloon0,free-page-reporting=on',
  ]);
  const q = buildQemuArgs(c);
  assert.equal(valueOf(q, '-machine'), 'q35');
  // Each disk behind a PCIe root port of its own, and spare ports for hot-plug.
  const devices = valuesOf(q, '-device');
  assert.deepEqual(devices.filter((d) => d.startsWith('pcie-root-port')), [1, 2, 3, 4, 5, 6].map((i) => `pcie-root-port,id=disk-port${i},chassis=${i}`));
  assert.deepEqual(devices.filter((d) => d.startsWith('virtio-blk')), [
    'virtio-blk-pci,drive=disk-root,id=dev-disk-root,bus=disk-port1,serial=hangar-root',
    'virtio-blk-pci,drive=disk-seed,id=dev-disk-seed,bus=disk-port2',
  ]);
  assert.ok(devices.every((d) => /^(pcie-root-port|virtio-blk-pci|virtio-net-pci|virtio-balloon-pci),/.test(d)));
});

test('disk cache and I/O: flushes always honoured; O_DIRECT + native AIO where the file takes it, else writeback + threads', () => {
  const c = config({ disks: [{ id: 'a', path: '/p/a', format: 'raw' }, { id: 'b', path: '/p/b', format: 'qcow2' }] });
  const nodes = valuesOf(buildQemuArgs(c, { diskIo: { a: 'direct', b: 'buffered' } }), '-blockdev').map((j) => JSON.parse(j) as Record<string, any>);
  const [fa, da, fb, db] = nodes;
  assert.equal(fa.aio, 'native');
  assert.deepEqual(fa.cache, { direct: true, 'no-flush': false });
  assert.deepEqual(da.cache, { direct: true, 'no-flush': false });
  assert.equal(fb.aio, 'threads');
  assert.deepEqual(fb.cache, { direct: false, 'no-flush': false });
  for (const n of nodes) assert.equal(n.discard, 'unmap');
  assert.equal(da['detect-zeroes'], 'unmap');
  assert.equal(db['detect-zeroes'], 'unmap');
  // Nothing said: the mode that works on every filesystem.
  const dflt = JSON.parse(valuesOf(buildQemuArgs(c), '-blockdev')[0]!) as Record<string, any>;
  assert.equal(dflt.aio, 'threads');
  assert.equal(dflt.cache.direct, false);
});

test('no -drive: every disk is a -blockdev pair', () => {
  assert.deepEqual(valuesOf(buildQemuArgs(config({ disks: [{ id: 'a', path: '/p/a', format: 'raw' }] })), '-drive'), []);
});

test('commas in option values are doubled', () => {
  assert.equal(optValue('a,b,,c'), 'a,,b,,,,c');
  const a = buildQemuArgs(config({ runDir: '/run/x,y' }));
  assert.match(valuesOf(a, '-chardev')[0]!, /path=\/run\/x,,y\/console\.sock,/);
});

// Sizes (cpus, memory) are not the argv's business: the daemon checks them against
// the engine's limits once, at create (test/unit/spec-validate.test.ts).
test('bad configs are INVALID_ARGUMENT before anything runs', () => {
  const bad: Array<[string, Partial<EngineVmConfig>]> = [
    ['relative kernel', { boot: { kernel: 'vmlinuz' } }],
    ['newline in cmdline', { boot: { kernel: '/k', cmdline: 'a\nb' } }],
    ['bad name', { name: 'a,b' }],
    ['bad accel', { accel: 'hvf' as never }],
    ['runDir too long for sockets', { runDir: '/' + 'x'.repeat(120) }],
    ['disk id with comma', { disks: [{ id: 'a,b', path: '/d', format: 'raw' }] }],
    ['duplicate disk ids', { disks: [{ id: 'a', path: '/d', format: 'raw' }, { id: 'a', path: '/e', format: 'raw' }] }],
    ['bad disk format', { disks: [{ id: 'a', path: '/d', format: 'vmdk' as never }] }],
    ['long serial', { disks: [{ id: 'a', path: '/d', format: 'raw', serial: 'x'.repeat(21) }] }],
    ['bad mac', { nics: [{ id: 'n', tap: 't0', mac: '52:54:00:00:00' }] }],
    ['multicast mac', { nics: [{ id: 'n', tap: 't0', mac: '01:00:5e:00:00:01' }] }],
    ['tap name too long', { nics: [{ id: 'n', tap: 'a'.repeat(16), mac: '52:54:00:00:00:01' }] }],
    ['tap name with comma', { nics: [{ id: 'n', tap: 'a,script=/x', mac: '52:54:00:00:00:01' }] }],
  ];
  for (const [what, over] of bad) {
    assert.throws(() => buildQemuArgs(config(over)), (e: unknown) => isHangarError(e) && e.code === 'INVALID_ARGUMENT', what);
  }
});

test('balloon: the last device on q35 (so no other device changes slot), at the QOM path the counters read', () => {
  const devices = valuesOf(buildQemuArgs(config({ vnc: { socket: '/run/hangar/vms/web/vnc.sock' } })), '-device');
  assert.equal(devices.at(-1), 'virtio-balloon-pci,id=balloon0,free-page-reporting=on');
  assert.equal(BALLOON_QOM_PATH, '/machine/peripheral/balloon0');
});

test('guest agent: a virtio-serial controller and the org.qemu.guest_agent.0 port on a socket; none without guestAgent', () => {
  const socket = '/run/hangar/vms/web/qga.sock';
  const a = buildQemuArgs(config({ guestAgent: { socket } }));
  const devices = valuesOf(a, '-device');
  assert.ok(devices.includes('virtio-serial-pci,id=vser0'), devices.join(' '));
  assert.ok(devices.includes('virtserialport,bus=vser0.0,chardev=qga,name=org.qemu.guest_agent.0'));
  assert.ok(valuesOf(a, '-chardev').includes(`socket,id=qga,path=${socket},server=on,wait=off`));
  assert.ok(valuesOf(buildQemuArgs(config({ guestAgent: { socket } }), { machine: 'microvm' }), '-device').includes('virtio-serial-device,id=vser0'));
  const none = buildQemuArgs(config());
  assert.ok(!valuesOf(none, '-device').some((d) => d.startsWith('virtio-serial')));
  assert.ok(!valuesOf(none, '-chardev').some((d) => d.includes('id=qga')));
  assert.throws(() => buildQemuArgs(config({ guestAgent: { socket: 'qga.sock' } })), /guest agent socket must be an absolute path/);
  assert.throws(() => buildQemuArgs(config({ guestAgent: { socket: `/${'x'.repeat(120)}/qga.sock` } })), /too long for a Unix socket path/);
});
