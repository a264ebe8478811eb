/**
 * The built-in debian-12 image, as built (or found cached) in HANGAR_IMAGE_DIR:
 * its disk is read with the same tools that made it (sfdisk, mtools, debugfs;
 * no mounts, no loop devices) to check the layout other parts of Hangar rely
 * on: GPT, ESP with both boot loaders and the kernel, ext4 root labelled
 * rootfs with the cloud configuration and without baked-in host keys.
 * Booting it is other tests' business.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { projectRoot } from '../../src/common/paths.js';

process.env.HANGAR_IMAGE_DIR ??= path.join(projectRoot(), '.cache', 'images');
const { ensureImage, listImages } = await import('../../src/host/images/index.js');
const { ESP_TYPE, ROOT_X86_64_TYPE, BOOT_FILES } = await import('../../src/host/images/debian12/disk.js');
const { PACKAGES } = await import('../../src/host/images/debian12/rootfs.js');

const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8', env: { ...process.env, MTOOLS_SKIP_CHECK: '1', LC_ALL: 'C' }, maxBuffer: 64 << 20 });

let tmp: string;
let raw: string;
let img: Awaited<ReturnType<typeof ensureImage>>;
let espOffset = 0;
let rootOffset = 0;

before(async () => {
  // The first build takes minutes (scripts/build-images.mjs normally did it already).
  img = await ensureImage('debian-12');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-deb12-'));
  raw = path.join(tmp, 'disk.raw');
  sh('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', img.disk!, raw]);
}, { timeout: 30 * 60_000 });

after(() => { if (tmp) fs.rmSync(tmp, { recursive: true, force: true }); });

const debugfs = (req: string): string => sh('debugfs', ['-R', req, `${raw}?offset=${rootOffset}`]);
const mtype = (file: string): string => sh('mtype', ['-i', `${raw}@@${espOffset}`, `::${file}`]);

test('image.json and the image record name the disk, the boot methods and cloud-init', () => {
  const dir = path.dirname(img.disk!);
  assert.equal(path.basename(img.disk!), 'disk.qcow2');
  assert.deepEqual(img.boot, ['kernel', 'bios', 'uefi']);
  assert.equal(img.cloudInit, true);
  assert.match(img.cmdline!, /^root=LABEL=rootfs ro .*console=ttyS0$/);
  assert.equal(img.kernel, path.join(dir, 'vmlinuz'));
  assert.equal(img.initrd, path.join(dir, 'initrd.img'));
  const meta = JSON.parse(fs.readFileSync(path.join(dir, 'image.json'), 'utf8'));
  assert.equal(meta.disk, 'disk.qcow2');
  assert.equal(meta.cloudInit, true);
  assert.equal(meta.cmdline, img.cmdline);
  const info = JSON.parse(sh('qemu-img', ['info', '--output=json', img.disk!]));
  assert.equal(info.format, 'qcow2');
  assert.equal(info['backing-filename'], undefined, 'the base disk stands alone');
  assert.equal(info['virtual-size'], 2 * 1024 ** 3);
  const listed = listImages().find((i) => i.name === 'debian-12');
  assert.equal(listed?.status, 'ready');
  assert.equal(listed?.disk, img.disk);
  assert.deepEqual(listed?.boot, ['kernel', 'bios', 'uefi']);
});

test('packages.txt pins every installed package, the requested ones among them', () => {
  const lines = fs.readFileSync(path.join(path.dirname(img.disk!), 'packages.txt'), 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
  assert.ok(lines.length > 150, `${lines.length} packages`);
  for (const l of lines) assert.match(l, /^[a-z0-9][a-z0-9+.-]*=\S+$/);
  const names = new Set(lines.map((l) => l.split('=')[0]));
  for (const p of PACKAGES) assert.ok(names.has(p), `${p} is installed`);
  assert.ok([...names].some((n) => /^linux-image-\d.*-cloud-amd64$/.test(n)), 'the versioned kernel package is listed');
});

test('GPT: ESP first (legacy-BIOS-bootable), ext4 root second; gptmbr.bin in sector 0', () => {
  const t = JSON.parse(sh('sfdisk', ['--json', raw])).partitiontable;
  assert.equal(t.label, 'gpt');
  assert.equal(t.partitions.length, 2);
  const [esp, root] = t.partitions;
  assert.equal(esp.type, ESP_TYPE);
  assert.equal(esp.name, 'ESP');
  assert.match(esp.attrs ?? '', /LegacyBIOSBootable/);
  assert.equal(root.type, ROOT_X86_64_TYPE);
  assert.equal(root.name, 'rootfs');
  assert.ok(root.start > esp.start + esp.size - 1, 'no overlap');
  espOffset = esp.start * 512;
  rootOffset = root.start * 512;
  sh('sfdisk', ['--verify', raw]);
  const mbr = fs.readFileSync(BOOT_FILES.gptmbr);
  const fd = fs.openSync(raw, 'r');
  const head = Buffer.alloc(512);
  fs.readSync(fd, head, 0, 512, 0);
  fs.closeSync(fd);
  assert.deepEqual(head.subarray(0, mbr.length), mbr, 'BIOS boot code');
  assert.equal(head.readUInt16LE(510), 0xaa55);
  assert.equal(head[450], 0xee, 'protective MBR entry');
});

test('ESP: FAT labelled ESP with syslinux, systemd-boot and the same kernel and initrd', () => {
  assert.ok(espOffset > 0, 'the GPT test ran first');
  assert.match(sh('minfo', ['-i', `${raw}@@${espOffset}`, '::']), /disk label="ESP\s*"/);
  const files = sh('mdir', ['-i', `${raw}@@${espOffset}`, '-/', '-b', '-a', '::/']).split('\n').map((l) => l.trim().replace(/^::/, '')).filter(Boolean);
  for (const f of ['/vmlinuz', '/initrd.img', '/ldlinux.sys', '/ldlinux.c32', '/syslinux.cfg', '/EFI/BOOT/BOOTX64.EFI', '/loader/loader.conf', '/loader/entries/linux.conf']) {
    assert.ok(files.includes(f), `${f} on the ESP (has: ${files.join(' ')})`);
  }
  assert.match(mtype('/syslinux.cfg'), /APPEND root=LABEL=rootfs ro .*console=ttyS0/);
  assert.match(mtype('/loader/entries/linux.conf'), /options root=LABEL=rootfs ro .*console=ttyS0/);
  assert.match(mtype('/loader/loader.conf'), /timeout 0/);
  for (const [onEsp, local] of [['/vmlinuz', img.kernel], ['/initrd.img', img.initrd!], ['/EFI/BOOT/BOOTX64.EFI', BOOT_FILES.systemdBoot]] as const) {
    const out = path.join(tmp, path.basename(onEsp));
    sh('mcopy', ['-i', `${raw}@@${espOffset}`, '-n', `::${onEsp}`, out]);
    assert.ok(fs.readFileSync(out).equals(fs.readFileSync(local)), `${onEsp} is ${local}`);
  }
});

test('root: ext4 labelled rootfs, cloud-ready, no host keys or machine id baked in', () => {
  assert.ok(rootOffset > 0, 'the GPT test ran first');
  const stats = debugfs('stats');
  assert.match(stats, /Filesystem volume name:\s+rootfs/);
  assert.match(stats, /Filesystem features:.*extent/);
  const ssh = debugfs('ls -l /etc/ssh');
  assert.match(ssh, /sshd_config/);
  assert.doesNotMatch(ssh, /ssh_host_/, 'no host keys in the image');
  assert.match(debugfs('stat /etc/machine-id'), /Size: 0\b/);
  assert.match(debugfs('cat /etc/fstab'), /^LABEL=rootfs\s+\/\s+ext4/m);
  assert.match(debugfs('cat /etc/fstab'), /^LABEL=ESP\s+\/boot\/efi\s+vfat/m);
  const cloudCfg = debugfs('cat /etc/cloud/cloud.cfg.d/90_hangar.cfg');
  assert.match(cloudCfg, /datasource_list: \[ NoCloud, None \]/);
  assert.match(cloudCfg, /^locale: C.UTF-8$/m, 'a locale that needs no generating');
  assert.match(debugfs('cat /etc/cloud/cloud.cfg'), /default_user:\s*\n\s*name: debian/);
  assert.match(debugfs('ls /etc/systemd/system/getty.target.wants'), /serial-getty@ttyS0\.service/);
  assert.match(debugfs('cat /etc/systemd/system.conf.d/hangar-device-timeout.conf'), /^DefaultDeviceTimeoutSec=600s$/m);
  assert.doesNotMatch(debugfs('ls /etc/systemd/system/timers.target.wants'), /apt-daily|e2scrub/);
  assert.doesNotMatch(debugfs('ls /etc/systemd/system/multi-user.target.wants'), /e2scrub_reap/);
  assert.match(debugfs('ls /etc/systemd/system/multi-user.target.wants'), /ssh\.service/);
  assert.match(debugfs('cat /etc/shadow'), /^root:\*:/m, 'root has no password');
  assert.match(debugfs('cat /etc/apt/sources.list'), /^deb http:\/\/deb\.debian\.org\/debian bookworm main/m);
  assert.match(debugfs('stat /usr/bin/growpart'), /Type: regular/);
  assert.match(debugfs('stat /etc/kernel/postinst.d/zz-hangar-esp'), /Mode:\s+0755/);
  assert.match(debugfs('ls /boot/efi'), /\.\s/, '/boot/efi exists (the ESP mount point)');
});
