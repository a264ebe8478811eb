/**
 * The daemon's boot decisions (src/host/boot.ts): defaults, what each mode
 * needs, ISO checks against the import policy, and the engine settings a
 * start gets (kernel, or firmware with CD-ROM, variable store and display).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bootConfig, bootImageOf, checkIso, displayOf, isoFile, resolveBoot, type BootContext, type IsoVolumes } from '../../src/host/boot.js';
import { HangarError } from '../../src/common/errors.js';
import { configureImportPolicy } from '../../src/host/images/policy.js';
import { isHangarError, type ErrorCode } from '../../src/common/errors.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hg-boot-'));
const importDir = path.join(tmp, 'import');
fs.mkdirSync(importDir);
configureImportPolicy({ importDirs: [importDir] });
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const isoBytes = Buffer.alloc(36 * 1024);
isoBytes.write('\x01CD001', 32768, 'latin1');
const iso = path.join(importDir, 'inst.iso');
fs.writeFileSync(iso, isoBytes);

const tiny = { name: 'tiny', kernel: '/img/tiny/vmlinuz', initrd: '/img/tiny/initrd.img' };
const debian = { name: 'debian-12', kernel: '/img/d/vmlinuz', initrd: '/img/d/initrd.img', disk: '/img/d/disk.qcow2', boot: ['kernel', 'bios', 'uefi'] as Array<'kernel' | 'bios' | 'uefi'> };
const qemu = { name: 'qemu' as const, bootModes: ['kernel', 'bios', 'uefi'] as Array<'kernel' | 'bios' | 'uefi'> };
const ctx = (over: Partial<BootContext> = {}): BootContext => ({ engine: qemu, image: tiny, hasDisks: false, ...over });
const fails = (code: ErrorCode, re: RegExp) => (e: unknown) => isHangarError(e) && e.code === code && re.test(e.message);

test('defaults: kernel when the image brings one, bios with an ISO or an image without a kernel', () => {
  assert.deepEqual(resolveBoot({}, ctx()), { boot: 'kernel' });
  assert.deepEqual(resolveBoot({ iso }, ctx()), { boot: 'bios', iso });
  assert.deepEqual(resolveBoot({}, ctx({ image: { name: 'disk-only', disk: '/img/x/disk.qcow2' } })), { boot: 'bios' });
  // An image not built yet: what it brings is not known, so the default is the kernel.
  assert.deepEqual(resolveBoot({}, ctx({ image: undefined })), { boot: 'kernel' });
  assert.deepEqual(resolveBoot({ boot: 'uefi' }, ctx({ image: { ...debian, boot: [...debian.boot] } })), { boot: 'uefi' });
  assert.deepEqual(resolveBoot({ boot: 'bios' }, ctx({ hasDisks: true })), { boot: 'bios' });
});

test('refusals: modes the engine lacks (UEFI names the ovmf package), nothing to boot, modes the image does not list, no kernel', () => {
  assert.throws(() => resolveBoot({ boot: 'uefi', iso }, ctx({ engine: { name: 'qemu', bootModes: ['kernel', 'bios'] } })), fails('UNSUPPORTED', /needs OVMF.*"ovmf"/));
  assert.throws(() => resolveBoot({ boot: 'bios', iso }, ctx({ engine: { name: 'micro', bootModes: ['kernel'] } })), fails('UNSUPPORTED', /engine micro cannot boot bios \(it boots: kernel\)/));
  assert.throws(() => resolveBoot({ boot: 'bios' }, ctx()), fails('INVALID_ARGUMENT', /has neither: give an ISO/));
  assert.throws(() => resolveBoot({ boot: 'uefi' }, ctx({ image: { ...debian, boot: ['kernel', 'bios'] } })), fails('INVALID_ARGUMENT', /does not boot with uefi \(it boots: kernel, bios\)/));
  // An ISO brings its own boot loader, whatever the image lists.
  assert.deepEqual(resolveBoot({ boot: 'uefi', iso }, ctx({ image: { ...debian, boot: ['kernel'] } })), { boot: 'uefi', iso });
  assert.throws(() => resolveBoot({ boot: 'kernel' }, ctx({ image: { name: 'disk-only', disk: '/d' } })), fails('INVALID_ARGUMENT', /brings no kernel/));
});

test('ISOs: only inside the import folders, regular files, ISO 9660', () => {
  assert.equal(checkIso(iso), iso);
  const outside = path.join(tmp, 'outside.iso');
  fs.writeFileSync(outside, isoBytes);
  assert.throws(() => checkIso(outside), fails('INVALID_ARGUMENT', /is not a file inside the daemon's import folders/));
  assert.throws(() => checkIso(path.join(importDir, '..', 'outside.iso')), fails('INVALID_ARGUMENT', /import folders/));
  fs.symlinkSync(outside, path.join(importDir, 'link.iso'));
  assert.throws(() => checkIso(path.join(importDir, 'link.iso')), fails('INVALID_ARGUMENT', /symbolic link/));
  fs.writeFileSync(path.join(importDir, 'text.iso'), 'not an iso at all');
  assert.throws(() => checkIso(path.join(importDir, 'text.iso')), fails('INVALID_ARGUMENT', /not an ISO 9660 image/));
  assert.throws(() => checkIso('inst.iso'), fails('INVALID_ARGUMENT', /absolute path/));
  assert.throws(() => resolveBoot({ iso: outside }, ctx()), fails('INVALID_ARGUMENT', /import folders/));
});

test('engine settings for a start: the kernel headless, or firmware with the ISO, the variable store and VNC in the VM folder', () => {
  const dir = '/var/lib/hangar/vms/x';
  assert.deepEqual(bootConfig({ boot: 'kernel' }, tiny, dir, 'console=ttyS0'), { boot: { kernel: tiny.kernel, initrd: tiny.initrd, cmdline: 'console=ttyS0' } });
  assert.deepEqual(bootConfig({}, tiny, dir, undefined), { boot: { kernel: tiny.kernel, initrd: tiny.initrd } }, 'VMs made before boot modes boot their kernel');
  assert.deepEqual(bootConfig({ boot: 'bios', iso }, tiny, dir, 'ignored'), { firmware: { kind: 'bios' }, vnc: { socket: `${dir}/vnc.sock` }, cdrom: iso });
  assert.deepEqual(bootConfig({ boot: 'uefi' }, debian, dir, undefined), { firmware: { kind: 'uefi', varsFile: `${dir}/uefi-vars.fd` }, vnc: { socket: `${dir}/vnc.sock` }, cdromDrive: true });
  // The ISO is checked again at each start: it may have been replaced since the VM was made.
  fs.writeFileSync(path.join(importDir, 'later.iso'), isoBytes);
  fs.writeFileSync(path.join(importDir, 'later.iso'), 'replaced');
  assert.throws(() => bootConfig({ boot: 'bios', iso: path.join(importDir, 'later.iso') }, tiny, dir, undefined), fails('INVALID_ARGUMENT', /not an ISO 9660/));
  assert.equal(displayOf({ boot: 'kernel' }, dir), null);
  assert.equal(displayOf({}, dir), null);
  assert.deepEqual(displayOf({ boot: 'uefi' }, dir), { type: 'vnc', socket: `${dir}/vnc.sock` });
});

test('image list entries: boot facts only from ready images', () => {
  assert.equal(bootImageOf(undefined), undefined);
  assert.equal(bootImageOf({ name: 'tiny', status: 'missing' }), undefined);
  assert.deepEqual(bootImageOf({ name: 'debian-12', status: 'ready', kernel: '/k', disk: '/d', boot: ['bios'] }), { name: 'debian-12', kernel: '/k', disk: '/d', boot: ['bios'] });
});

test('ISOs in storage volumes: "pool/volume", raw, holding an ISO 9660 image; the spec keeps the name, the engine gets the file', () => {
  const files: Record<string, { format: 'raw' | 'qcow2'; file: string }> = {
    'default/netinst': { format: 'raw', file: iso },
    'default/q': { format: 'qcow2', file: iso },
    'isos/text': { format: 'raw', file: path.join(importDir, 'text.iso') },
  };
  const volumes = {
    requireVolume: (pool: string, name: string) => {
      const v = files[`${pool}/${name}`];
      if (!v) throw new HangarError('NOT_FOUND', `no volume "${name}" in pool "${pool}"`);
      return { format: v.format } as ReturnType<NonNullable<IsoVolumes>['requireVolume']>;
    },
    volumePath: (pool: string, name?: string) => files[`${pool}/${name}`]!.file,
  } as unknown as IsoVolumes;
  assert.equal(isoFile('default/netinst', volumes), iso);
  assert.deepEqual(resolveBoot({ iso: 'default/netinst' }, ctx({ volumes })), { boot: 'bios', iso: 'default/netinst' });
  assert.deepEqual(bootConfig({ boot: 'bios', iso: 'default/netinst' }, tiny, '/v', undefined, volumes).cdrom, iso);
  assert.throws(() => isoFile('default/missing', volumes), fails('NOT_FOUND', /no volume/));
  assert.throws(() => isoFile('default/q', volumes), fails('INVALID_ARGUMENT', /is qcow2: an ISO is a raw volume/));
  assert.throws(() => isoFile('isos/text', volumes), fails('INVALID_ARGUMENT', /volume isos\/text is not an ISO 9660 image/));
  assert.throws(() => isoFile('netinst', volumes), fails('INVALID_ARGUMENT', /absolute path .* or a storage volume/));
  assert.throws(() => isoFile('default/netinst', null), fails('UNSUPPORTED', /no storage/));
  assert.throws(() => isoFile('../x/y', volumes), fails('INVALID_ARGUMENT', /or a storage volume/));
});
