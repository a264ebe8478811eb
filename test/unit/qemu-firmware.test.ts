/**
 * Firmware boot in the QEMU argv (SeaBIOS, OVMF pflash, CD-ROM by
 * descriptor, boot order, VGA + VNC), the checks in front of it, the per-VM
 * UEFI variable store, and the ISO 9660 check.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildQemuArgs, CDROM_FD } from '../../src/engines/qemu/cmdline.js';
import { ensureVarsFile, findOvmf, requireOvmf, vmVarsFile } from '../../src/engines/qemu/firmware.js';
import { openCdrom } from '../../src/engines/qemu/cdrom.js';
import { isIso9660 } from '../../src/common/iso.js';
import type { EngineVmConfig } from '../../src/engines/engine.js';
import { isHangarError } from '../../src/common/errors.js';

function config(over: Partial<EngineVmConfig> = {}): EngineVmConfig {
  return {
    id: 'vm-1',
    name: 'inst',
    cpus: 1,
    memoryBytes: 512 * 1024 * 1024,
    disks: [{ id: 'root', path: '/var/lib/hangar/storage/default/inst-root', format: 'qcow2' }, { id: 'data', path: '/d/data.raw', format: 'raw' }],
    nics: [],
    accel: 'tcg',
    runDir: '/var/lib/hangar/vms/inst',
    consoleLog: '/var/lib/hangar/vms/inst/console.log',
    ...over,
  };
}
const valuesOf = (args: string[], flag: string): string[] => args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
const invalid = (re: RegExp) => (e: unknown) => isHangarError(e) && e.code === 'INVALID_ARGUMENT' && re.test(e.message);

test('bios: no kernel, SeaBIOS (no pflash), the root disk is first in boot order; no display unless asked', () => {
  const a = buildQemuArgs(config({ firmware: { kind: 'bios' }, boot: { kernel: '/img/vmlinuz' } }));
  assert.ok(!a.includes('-kernel') && !a.includes('-append') && !a.includes('-initrd'), 'firmware boot ignores a kernel');
  assert.ok(!valuesOf(a, '-drive').some((d) => d.includes('pflash')));
  const devs = valuesOf(a, '-device');
  const root = devs.find((d) => d.includes('id=dev-disk-root'));
  const data = devs.find((d) => d.includes('id=dev-disk-data'));
  assert.match(root ?? '', /^virtio-blk-pci,.*,bootindex=1$/, devs.join('\n'));
  assert.ok(data && !data.includes('bootindex'), 'only the root disk boots');
  assert.ok(!a.includes('-vnc') && !devs.some((d) => d.startsWith('VGA')));
  assert.equal(valuesOf(a, '-display')[0], 'none', 'never a window on the host');
});

test('uefi: OVMF code read-only and the VM\'s own variable store as pflash', () => {
  const a = buildQemuArgs(config({ firmware: { kind: 'uefi', varsFile: '/var/lib/hangar/vms/inst/uefi-vars.fd' } }), { ovmfCode: '/usr/share/OVMF/OVMF_CODE_4M.fd' });
  assert.deepEqual(valuesOf(a, '-drive').filter((d) => d.includes('pflash')), [
    'if=pflash,unit=0,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd',
    'if=pflash,unit=1,format=raw,file=/var/lib/hangar/vms/inst/uefi-vars.fd',
  ]);
  // Without a named store: the one in the runDir.
  const b = buildQemuArgs(config({ firmware: { kind: 'uefi' } }), { ovmfCode: '/o/code.fd' });
  assert.ok(valuesOf(b, '-drive').includes('if=pflash,unit=1,format=raw,file=/var/lib/hangar/vms/inst/uefi-vars.fd'));
});

test('CD-ROM: an ide-cd read through the inherited descriptor, booted first; VNC on the given socket with VGA and a tablet', () => {
  const a = buildQemuArgs(config({ firmware: { kind: 'bios' }, cdrom: '/var/lib/hangar/import/debian,netinst.iso', vnc: { socket: '/var/lib/hangar/vms/inst/vnc.sock' } }));
  assert.ok(valuesOf(a, '-add-fd').includes(`fd=${CDROM_FD},set=2,opaque=cdrom`));
  assert.ok(valuesOf(a, '-drive').includes('if=none,id=cdrom,media=cdrom,readonly=on,format=raw,file=/dev/fdset/2'));
  assert.ok(!a.join(' ').includes('netinst'), 'the ISO path is not on the command line: QEMU reads the descriptor');
  const devs = valuesOf(a, '-device');
  assert.ok(devs.includes('ide-cd,drive=cdrom,bus=ide.0,id=dev-cdrom,bootindex=0'));
  assert.ok(devs.includes('VGA,id=video'));
  assert.ok(devs.includes('usb-tablet,bus=usb.0,id=tablet'));
  assert.deepEqual(valuesOf(a, '-vnc'), ['unix:/var/lib/hangar/vms/inst/vnc.sock']);
  // A comma in a socket path is doubled, as everywhere in QEMU options.
  const c = buildQemuArgs(config({ firmware: { kind: 'bios' }, runDir: '/r,x', consoleLog: '/r,x/c.log', vnc: { socket: '/r,x/vnc.sock' } }));
  assert.deepEqual(valuesOf(c, '-vnc'), ['unix:/r,,x/vnc.sock']);
  // A kernel-booted VM may carry a CD-ROM too; it just does not boot from it.
  const k = buildQemuArgs(config({ boot: { kernel: '/k' }, cdrom: '/i.iso' }));
  assert.ok(valuesOf(k, '-device').includes('ide-cd,drive=cdrom,bus=ide.0,id=dev-cdrom'));
  assert.ok(!valuesOf(k, '-device').some((d) => d.includes('bootindex')));
});

test('checks: something to boot, firmware kinds, paths, socket length, q35 only', () => {
  assert.throws(() => buildQemuArgs(config()), invalid(/needs a kernel to boot or firmware/));
  assert.throws(() => buildQemuArgs(config({ firmware: { kind: 'coreboot' as 'bios' } })), invalid(/firmware must be bios or uefi/));
  assert.throws(() => buildQemuArgs(config({ firmware: { kind: 'uefi', varsFile: 'vars.fd' } })), invalid(/UEFI variable store must be an absolute path/));
  assert.throws(() => buildQemuArgs(config({ firmware: { kind: 'bios' }, cdrom: 'x.iso' })), invalid(/cdrom must be an absolute path/));
  assert.throws(() => buildQemuArgs(config({ firmware: { kind: 'bios' }, vnc: { socket: `/${'v'.repeat(120)}.sock` } })), invalid(/too long for a Unix socket path/));
  for (const over of [{ firmware: { kind: 'bios' as const } }, { boot: { kernel: '/k' }, cdrom: '/i.iso' }, { boot: { kernel: '/k' }, vnc: { socket: '/v.sock' } }]) {
    assert.throws(() => buildQemuArgs(config(over), { machine: 'microvm' }), invalid(/need machine q35/));
  }
});

test('the UEFI variable store: made once from the template, 0600, kept afterwards; no OVMF is a clear error', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hg-ovmf-'));
  const saved = process.env.HANGAR_OVMF_DIR;
  try {
    process.env.HANGAR_OVMF_DIR = path.join(tmp, 'ovmf');
    assert.equal(findOvmf(), null);
    assert.throws(() => requireOvmf(), (e: unknown) => isHangarError(e) && e.code === 'UNAVAILABLE' && /install the Debian package "ovmf"/.test(e.message));
    fs.mkdirSync(path.join(tmp, 'ovmf'));
    fs.writeFileSync(path.join(tmp, 'ovmf', 'OVMF_CODE_4M.fd'), 'code');
    fs.writeFileSync(path.join(tmp, 'ovmf', 'OVMF_VARS_4M.fd'), 'empty-vars');
    const ovmf = requireOvmf();
    const vars = vmVarsFile(path.join(tmp, 'vm'));
    assert.equal(vars, path.join(tmp, 'vm', 'uefi-vars.fd'));
    ensureVarsFile(vars, ovmf);
    assert.equal(fs.readFileSync(vars, 'utf8'), 'empty-vars');
    assert.equal(fs.statSync(vars).mode & 0o777, 0o600);
    fs.writeFileSync(vars, 'saved-boot-entries');
    ensureVarsFile(vars, ovmf);
    assert.equal(fs.readFileSync(vars, 'utf8'), 'saved-boot-entries', 'what the guest saved is kept');
    assert.deepEqual(fs.readdirSync(path.join(tmp, 'vm')), ['uefi-vars.fd'], 'no temporary file left');
  } finally {
    if (saved === undefined) delete process.env.HANGAR_OVMF_DIR; else process.env.HANGAR_OVMF_DIR = saved;
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('ISO 9660: "CD001" after the type byte of sector 16; the engine opens only regular ISO files, never through a symlink', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hg-iso-'));
  try {
    const iso = path.join(tmp, 'a.iso');
    const b = Buffer.alloc(40_000);
    b.write('\x01CD001\x01', 32768, 'latin1');
    fs.writeFileSync(iso, b);
    const notIso = path.join(tmp, 'b.iso');
    const c = Buffer.from(b);
    c.write('CD002', 32769, 'latin1');
    fs.writeFileSync(notIso, c);
    const short = path.join(tmp, 'c.iso');
    fs.writeFileSync(short, b.subarray(0, 32770));
    const check = (p: string) => { const fd = fs.openSync(p, 'r'); try { return isIso9660(fd); } finally { fs.closeSync(fd); } };
    assert.equal(check(iso), true);
    assert.equal(check(notIso), false);
    assert.equal(check(short), false);

    const fd = openCdrom(iso);
    fs.closeSync(fd);
    const link = path.join(tmp, 'link.iso');
    fs.symlinkSync(iso, link);
    const failed = (re: RegExp) => (e: unknown) => isHangarError(e) && e.code === 'ENGINE_FAILED' && re.test(e.message);
    assert.throws(() => openCdrom(link), failed(/cannot open the CD-ROM image/));
    assert.throws(() => openCdrom(notIso), failed(/no longer an ISO 9660 image/));
    assert.throws(() => openCdrom(tmp), failed(/not a regular file/));
    assert.throws(() => openCdrom(path.join(tmp, 'missing.iso')), failed(/cannot open/));
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
