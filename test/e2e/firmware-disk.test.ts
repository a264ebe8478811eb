/**
 * A guest OS from its own disk: the debian-12 image's GPT disk (ESP with
 * systemd-boot for UEFI and syslinux for BIOS, ext4 root) boots with OVMF
 * and with SeaBIOS until the kernel has started and systemd runs — then the
 * VM is killed (a full Debian boot under TCG costs minutes).
 *
 * Through the daemon (`hangar launch debian-12 … --boot uefi|bios`: its root
 * volume is a qcow2 overlay of the image's base disk) when the daemon knows
 * the image with its disk; otherwise through the QEMU engine directly, with
 * an overlay made here. Skipped when the image is not built.
 *
 * Timings (start → boot loader / kernel / systemd, from the serial log)
 * are printed as diagnostics; nothing is asserted about time.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { projectRoot } from '../../src/common/paths.js';
import { createLogger } from '../../src/common/log.js';
import type { EngineVmConfig, VmHandle } from '../../src/engines/engine.js';
import { QemuEngine } from '../../src/engines/qemu/engine.js';
import { processAlive, processArgs } from '../../src/engines/base/procfs.js';
import { probeKvm } from '../../src/kvm/probe.js';
import { readPicture, isBlank, litPixels } from '../helpers/framebuffer.js';
import { startDaemon, waitOperation, type TestDaemon } from '../helpers/daemon.js';

const imageDir = process.env.HANGAR_IMAGE_DIR ?? path.join(projectRoot(), '.cache', 'images');
const base = path.join(imageDir, 'debian-12', 'disk.qcow2');
const skip = fs.existsSync(base) ? false : `the debian-12 image is not built (${base})`;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hg-fwdisk-'));
const engine = new QemuEngine({ logger: createLogger('test', process.env.HANGAR_LOG_LEVEL ?? 'warn'), kvm: probeKvm });
const pids = new Set<number>();

/** A daemon that knows debian-12 with its base disk, or null (then the engine is driven directly). */
let d: TestDaemon | null = null;

before(async () => {
  if (skip) return;
  const daemon = await startDaemon();
  const img = await daemon.request('GET', '/1.0/images/debian-12');
  if (img.status === 200 && img.body.metadata.disk) d = daemon;
  else await daemon.cleanup();
});

after(async () => {
  await d?.cleanup();
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

/** A booting VM as the test watches it: its serial log, its display, and the end. */
interface Booting {
  log(): Promise<string>;
  screenshot(): Promise<Buffer>;
  varsFile: string;
  end(): Promise<void>;
}

/** Through the daemon: launch from the image with --boot; the root volume is an overlay of its base disk. */
async function launchViaDaemon(daemon: TestDaemon, kind: 'bios' | 'uefi'): Promise<Booting> {
  const name = `deb-${kind}`;
  const op = await waitOperation(daemon, await daemon.request('POST', '/1.0/vms', { name, image: 'debian-12', boot: kind, memory: '512M' }));
  assert.equal(op.status, 'success', JSON.stringify(op));
  const vm = (await daemon.request('GET', `/1.0/vms/${name}`)).body.metadata;
  assert.equal(vm.spec.boot, kind);
  assert.equal(vm.spec.disks[0]?.volume, `default/${name}-root`);
  assert.ok(vm.display, 'a firmware-booted VM has a display');
  const vmDir = path.join(daemon.dataDir, 'vms', name);
  return {
    log: async () => String((await daemon.request('GET', `/1.0/vms/${name}/logs`)).body),
    screenshot: async () => {
      const shot = path.join(tmp, `${name}.ppm`);
      const r = await new Promise<Buffer>((resolve, reject) => {
        http.get({ socketPath: daemon.socket, path: `/1.0/vms/${name}/screenshot?format=ppm` }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => (res.statusCode === 200 ? resolve(Buffer.concat(chunks)) : reject(new Error(`screenshot: HTTP ${res.statusCode}`))));
        }).on('error', reject);
      });
      fs.writeFileSync(shot, r);
      return r;
    },
    varsFile: path.join(vmDir, 'uefi-vars.fd'),
    end: async () => {
      const del = await waitOperation(daemon, await daemon.request('DELETE', `/1.0/vms/${name}?force=true`));
      assert.equal(del.status, 'success', JSON.stringify(del));
    },
  };
}

async function bootDisk(kind: 'bios' | 'uefi'): Promise<Record<keyof typeof MARKS, number | null>> {
  const t0 = Date.now();
  const vm = d ? await launchViaDaemon(d, kind) : await startViaEngine(kind);
  const seen: Record<keyof typeof MARKS, number | null> = { loader: null, kernel: null, systemd: null };
  let log = '';
  try {
    const end = Date.now() + 170_000;
    while (seen.systemd === null && Date.now() < end) {
      await sleep(500);
      log = await vm.log();
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
    const pic = readPicture(await vm.screenshot());
    assert.ok(!isBlank(pic) && litPixels(pic) > 2000, `${kind}: the display is blank`);
    if (kind === 'uefi') assert.ok(fs.existsSync(vm.varsFile), 'the VM has its own variable store');
  } finally {
    await vm.end();
  }
  return seen;
}

/** Straight to the engine: a qcow2 overlay of the base disk made here. */
async function startViaEngine(kind: 'bios' | 'uefi'): Promise<Booting> {
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
  const h: VmHandle = await engine.start(config);
  pids.add(h.pid);
  return {
    log: async () => { try { return fs.readFileSync(config.consoleLog, 'latin1'); } catch { return ''; } },
    screenshot: async () => {
      const shot = path.join(runDir, 'screen.ppm');
      await h.screendump!(shot, 'ppm');
      return fs.readFileSync(shot);
    },
    varsFile: path.join(runDir, 'uefi-vars.fd'),
    end: () => h.kill(),
  };
}

test('the debian-12 disk boots with UEFI (OVMF → systemd-boot → kernel → systemd)', { skip, timeout: 200_000 }, async (t) => {
  const s = await bootDisk('uefi');
  t.diagnostic(`uefi (${d ? "through the daemon" : "engine only"}): boot loader ${s.loader ?? '-'} s, kernel ${s.kernel} s, systemd ${s.systemd} s after start`);
});

test('the debian-12 disk boots with BIOS (SeaBIOS → syslinux → kernel → systemd)', { skip, timeout: 200_000 }, async (t) => {
  const s = await bootDisk('bios');
  t.diagnostic(`bios (${d ? "through the daemon" : "engine only"}): boot loader ${s.loader ?? '-'} s, kernel ${s.kernel} s, systemd ${s.systemd} s after start`);
});
