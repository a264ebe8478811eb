/**
 * A guest OS from its own disk, through the QEMU engine: the debian-12
 * image's GPT disk (ESP with systemd-boot for UEFI and syslinux for BIOS,
 * ext4 root) boots as a qcow2 overlay with OVMF and with SeaBIOS, until the
 * kernel has started and systemd runs — then the VM is killed (a full Debian
 * boot under TCG costs minutes). Skipped when the image is not built.
 *
 * Timings (launch → boot loader / kernel / systemd, from the serial log)
 * are printed as diagnostics; nothing is asserted about time.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { projectRoot } from '../../src/common/paths.js';
import { createLogger } from '../../src/common/log.js';
import type { EngineVmConfig, VmHandle } from '../../src/engines/engine.js';
import { QemuEngine } from '../../src/engines/qemu/engine.js';
import { processAlive, processArgs } from '../../src/engines/base/procfs.js';
import { probeKvm } from '../../src/kvm/probe.js';
import { readPicture, isBlank } from '../helpers/framebuffer.js';

const imageDir = process.env.HANGAR_IMAGE_DIR ?? path.join(projectRoot(), '.cache', 'images');
const base = path.join(imageDir, 'debian-12', 'disk.qcow2');
const skip = fs.existsSync(base) ? false : `the debian-12 image is not built (${base})`;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hg-fwdisk-'));
const engine = new QemuEngine({ logger: createLogger('test', process.env.HANGAR_LOG_LEVEL ?? 'warn'), kvm: probeKvm });
const pids = new Set<number>();

after(() => {
  for (const pid of pids) {
    if (processAlive(pid) && processArgs(pid)?.some((a) => a.includes(tmp))) process.kill(pid, 'SIGKILL');
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** What the serial log shows, in boot order. The boot loaders' own lines: syslinux (SERIAL in its config), OVMF starting a boot entry. */
const MARKS = {
  loader: /SYSLINUX|BdsDxe: (loading|starting) Boot/,
  kernel: /Linux version \d/,
  systemd: /systemd\[1\]|Welcome to .*Debian/,
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function bootDisk(kind: 'bios' | 'uefi'): Promise<Record<keyof typeof MARKS, number | null>> {
  const runDir = path.join(tmp, kind);
  fs.mkdirSync(runDir, { recursive: true });
  const overlay = path.join(runDir, 'root.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', overlay]);
  const accel = (await engine.capabilities()).defaultAccel ?? 'tcg';
  const config: EngineVmConfig = {
    id: `id-fwdisk-${kind}`,
    name: `disk-${kind}`,
    cpus: 1,
    memoryBytes: 512 * 1024 * 1024,
    firmware: { kind },
    vnc: { socket: path.join(runDir, 'vnc.sock') },
    disks: [{ id: 'root', path: overlay, format: 'qcow2' }],
    nics: [],
    accel,
    runDir,
    consoleLog: path.join(runDir, 'console.log'),
  };
  const t0 = Date.now();
  const h: VmHandle = await engine.start(config);
  pids.add(h.pid);
  const seen: Record<keyof typeof MARKS, number | null> = { loader: null, kernel: null, systemd: null };
  let log = '';
  try {
    const end = Date.now() + 170_000;
    while (seen.systemd === null && Date.now() < end) {
      await sleep(250);
      try { log = fs.readFileSync(config.consoleLog, 'latin1'); } catch { log = ''; }
      for (const k of Object.keys(MARKS) as Array<keyof typeof MARKS>) {
        if (seen[k] === null && MARKS[k].test(log)) seen[k] = (Date.now() - t0) / 1000;
      }
    }
    assert.ok(seen.kernel !== null, `${kind}: the kernel never started; serial log ends ${JSON.stringify(log.slice(-800))}`);
    assert.ok(seen.systemd !== null, `${kind}: systemd never ran; serial log ends ${JSON.stringify(log.slice(-800))}`);
    // The kernel came from the disk's boot loader: its command line is the one the ESP gives, with the disk's root.
    assert.match(log, /Command line: .*root=/);
    if (kind === 'uefi') assert.match(log, /efi: EFI v\d/, 'the kernel was started by UEFI firmware');
    else assert.doesNotMatch(log, /efi: EFI v\d/, 'no UEFI under SeaBIOS');
    // The display shows something (the firmware's or the kernel's text).
    const shot = path.join(runDir, 'screen.ppm');
    await h.screendump!(shot, 'ppm');
    assert.ok(!isBlank(readPicture(fs.readFileSync(shot))), `${kind}: the display is blank`);
    if (kind === 'uefi') assert.ok(fs.existsSync(path.join(runDir, 'uefi-vars.fd')), 'the VM has its own variable store');
  } finally {
    await h.kill();
  }
  return seen;
}

test('the debian-12 disk boots with UEFI (OVMF → systemd-boot → kernel → systemd)', { skip, timeout: 200_000 }, async (t) => {
  const s = await bootDisk('uefi');
  t.diagnostic(`uefi: boot loader ${s.loader ?? '-'} s, kernel ${s.kernel} s, systemd ${s.systemd} s after start`);
});

test('the debian-12 disk boots with BIOS (SeaBIOS → syslinux → kernel → systemd)', { skip, timeout: 200_000 }, async (t) => {
  const s = await bootDisk('bios');
  t.diagnostic(`bios: boot loader ${s.loader ?? '-'} s, kernel ${s.kernel} s, systemd ${s.systemd} s after start`);
});
