/**
 * Firmware boot through the daemon: a test ISO (grub-mkrescue around the
 * tiny image's kernel) in the daemon's import folder boots with SeaBIOS and
 * with OVMF. GRUB's menu shows on the serial log, the kernel it loads reaches
 * the tiny shell, the display (screendump through the API) is not blank,
 * `hangar vnc` says how to reach the VNC socket, and the UEFI variable store
 * lives in the VM's folder and goes with it. The UEFI VM boots the ISO from a
 * storage volume it was imported into. Then the refusals: an ISO
 * outside the import folders, a file that is not an ISO, UEFI on a host
 * without OVMF, firmware with nothing to boot, a display for a headless VM.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { startDaemon, waitOperation, ConsoleSession, type TestDaemon } from '../helpers/daemon.js';
import { runHangar, expectOk } from '../helpers/cli.js';
import { buildTestIso, GRUB_ENTRY } from '../helpers/test-iso.js';
import { readPicture, isBlank, colourCount } from '../helpers/framebuffer.js';
import { projectRoot } from '../../src/common/paths.js';

process.env.HANGAR_IMAGE_DIR ??= path.join(projectRoot(), '.cache', 'images');
const { ensureImage } = await import('../../src/host/images/index.js');
const { TINY_PROMPT, TINY_BANNER } = await import('../../src/host/images/tiny.js');

let d: TestDaemon;
let iso: string;
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'hg-fw-'));

before(async () => {
  const tiny = await ensureImage('tiny');
  d = await startDaemon();
  // The daemon's default import folder: <data dir>/import (made 0700 at its start).
  iso = buildTestIso(tiny, path.join(d.dataDir, 'import', 'hangar-test.iso'));
});

after(async () => {
  await d?.cleanup();
  fs.rmSync(scratch, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** GET with the body as bytes (the test helper's request() decodes bodies as text). */
function getBytes(urlPath: string): Promise<{ status: number; type: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http.get({ socketPath: d.socket, path: urlPath }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body: Buffer.concat(chunks) }));
      res.on('error', reject);
    }).on('error', reject);
  });
}

/** Polls the VM's serial log (it keeps what came before anyone attached) until it holds `text`. */
async function waitForLog(name: string, text: string, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  let log = '';
  while (Date.now() < end) {
    log = String((await d.request('GET', `/1.0/vms/${name}/logs`)).body);
    if (log.includes(text)) return;
    await sleep(250);
  }
  throw new Error(`${name}: no ${JSON.stringify(text)} in the serial log within ${timeoutMs} ms; log ends ${JSON.stringify(log.slice(-600))}`);
}

/** Launches a VM from the ISO, proves GRUB → kernel → shell and a drawn display; returns the timings. */
async function bootIso(name: string, boot: 'bios' | 'uefi', isoRef: string): Promise<{ loaderS: number; shellS: number }> {
  const t0 = Date.now();
  const op = await waitOperation(d, await d.request('POST', '/1.0/vms', { name, image: 'tiny', memory: '256M', boot, iso: isoRef }));
  assert.equal(op.status, 'success', JSON.stringify(op));
  const vm = (await d.request('GET', `/1.0/vms/${name}`)).body.metadata;
  assert.equal(vm.state, 'running');
  assert.equal(vm.spec.boot, boot);
  assert.equal(vm.spec.iso, isoRef);
  assert.deepEqual(vm.display, { type: 'vnc', socket: path.join(d.dataDir, 'vms', name, 'vnc.sock') });

  // The firmware ran the ISO's boot loader (its menu entry is on the serial line) ...
  await waitForLog(name, GRUB_ENTRY, 120_000);
  const loaderS = (Date.now() - t0) / 1000;
  // ... which loaded the kernel from the ISO, up to the tiny shell.
  await waitForLog(name, TINY_BANNER, 120_000);
  const con = await ConsoleSession.open(d, name);
  try {
    await con.waitForPrompt(TINY_PROMPT, 60_000);
    const shellS = (Date.now() - t0) / 1000;
    // GRUB's command line, not the daemon's: the kernel came from the ISO, not from -kernel.
    const cmdline = await con.run('cat /proc/cmdline');
    assert.match(cmdline, /console=tty0 console=ttyS0/);
    assert.doesNotMatch(cmdline, /hangar\.hostname/);
    assert.match(await con.run('ls /sys/firmware/efi >/dev/null 2>&1 && echo fw=uefi || echo fw=bios'), new RegExp(`fw=${boot}`));

    // The display shows something (GRUB's menu, the kernel's text): not one flat colour.
    const png = await getBytes(`/1.0/vms/${name}/screenshot`);
    assert.equal(png.status, 200);
    assert.equal(png.type, 'image/png');
    const pic = readPicture(png.body);
    assert.ok(pic.width >= 320 && pic.height >= 200, `${pic.width}x${pic.height}`);
    assert.ok(!isBlank(pic), `the ${boot} display is blank`);
    const shot = path.join(scratch, `${name}.ppm`);
    expectOk(await runHangar(['screenshot', name, shot], { env: d.env }), 'hangar screenshot');
    const ppm = readPicture(fs.readFileSync(shot));
    assert.ok(colourCount(ppm) >= 2, 'the PPM screenshot is not blank either');

    // The VNC socket: in the VM's folder, which only root and the VM's own uid can enter.
    const sock = fs.statSync(vm.display.socket);
    assert.ok(sock.isSocket());
    assert.equal(fs.statSync(path.dirname(vm.display.socket)).mode & 0o007, 0, 'others cannot reach the VM folder');
    return { loaderS, shellS };
  } finally {
    await con.close();
  }
}

test('an ISO boots with SeaBIOS through the daemon: GRUB, kernel, shell, a display, hangar vnc', { timeout: 300_000 }, async (t) => {
  const times = await bootIso('fw-bios', 'bios', iso);
  t.diagnostic(`bios: GRUB on the serial line ${times.loaderS.toFixed(1)} s after the launch request, shell ${times.shellS.toFixed(1)} s`);

  const vnc = expectOk(await runHangar(['vnc', 'fw-bios'], { env: d.env }), 'hangar vnc');
  const socket = path.join(d.dataDir, 'vms', 'fw-bios', 'vnc.sock');
  assert.ok(vnc.stdout.includes(socket), vnc.stdout);
  assert.ok(vnc.stdout.includes(`socat TCP-LISTEN:5900,bind=127.0.0.1,reuseaddr,fork UNIX-CONNECT:${socket}`), vnc.stdout);
  assert.ok(vnc.stdout.includes(`ssh -N -L 5900:${socket}`), vnc.stdout);
  const j = JSON.parse(expectOk(await runHangar(['vnc', 'fw-bios', '--port', '5907', '--json'], { env: d.env }), 'hangar vnc --json').stdout);
  assert.equal(j.socket, socket);
  assert.equal(j.port, 5907);
  assert.equal(j.state, 'running');

  const del = await waitOperation(d, await d.request('DELETE', '/1.0/vms/fw-bios?force=true'));
  assert.equal(del.status, 'success', JSON.stringify(del));
});

test('an ISO kept in a storage volume boots with UEFI (OVMF) through the daemon; the VM keeps its own variable store', { timeout: 300_000 }, async (t) => {
  // The ISO imported into the default pool as a raw volume, and booted from there.
  const imp = await waitOperation(d, await d.request('POST', '/1.0/storage-pools/default/volumes', { name: 'hangar-test-iso', format: 'raw', source: { type: 'path', path: iso } }));
  assert.equal(imp.status, 'success', JSON.stringify(imp));
  const times = await bootIso('fw-uefi', 'uefi', 'default/hangar-test-iso');
  t.diagnostic(`uefi: GRUB on the serial line ${times.loaderS.toFixed(1)} s after the launch request, shell ${times.shellS.toFixed(1)} s`);
  const vmDir = path.join(d.dataDir, 'vms', 'fw-uefi');
  const vars = fs.statSync(path.join(vmDir, 'uefi-vars.fd'));
  assert.equal(vars.size, fs.statSync('/usr/share/OVMF/OVMF_VARS_4M.fd').size);
  assert.equal(vars.mode & 0o077, 0, 'the variable store is private');
  if (process.getuid?.() === 0) assert.notEqual(vars.uid, 0, 'lent to the confined VM user while it runs');

  const del = await waitOperation(d, await d.request('DELETE', '/1.0/vms/fw-uefi?force=true'));
  assert.equal(del.status, 'success', JSON.stringify(del));
  assert.ok(!fs.existsSync(vmDir), 'the variable store goes with the VM');
});

test('refusals: ISO outside the import folders, not an ISO, nothing to boot, no display, UEFI without OVMF', { timeout: 120_000 }, async () => {
  const create = (body: Record<string, unknown>) => d.request('POST', '/1.0/vms', { image: 'tiny', start: false, ...body });

  // A real ISO, but outside the daemon's import folders: refused, with the same answer whether or not it exists.
  const outside = path.join(scratch, 'elsewhere.iso');
  fs.copyFileSync(iso, outside);
  for (const p of [outside, path.join(scratch, 'missing.iso'), '/etc/shadow']) {
    const r = await create({ name: 'bad-iso', iso: p });
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(r.body.error.code, 'INVALID_ARGUMENT');
    assert.match(r.body.error.message, /is not a file inside the daemon's import folders/);
  }
  // Inside the folder but not an ISO 9660 image.
  const fake = path.join(d.dataDir, 'import', 'fake.iso');
  fs.writeFileSync(fake, Buffer.alloc(64 * 1024, 0x41));
  let r = await create({ name: 'bad-iso', iso: fake });
  assert.equal(r.status, 400);
  assert.match(r.body.error.message, /is not an ISO 9660 image/);
  // A relative path is refused too; a volume must exist, be raw and hold an ISO.
  r = await create({ name: 'bad-iso', iso: 'hangar-test.iso' });
  assert.equal(r.status, 400);
  assert.match(r.body.error.message, /absolute path inside the daemon's import folders or a storage volume/);
  r = await create({ name: 'bad-iso', iso: 'default/no-such-volume' });
  assert.equal(r.status, 404, JSON.stringify(r.body));
  assert.equal((await d.request('POST', '/1.0/storage-pools/default/volumes', { name: 'q', format: 'qcow2', size: '1M' })).status, 201);
  assert.equal((await d.request('POST', '/1.0/storage-pools/default/volumes', { name: 'blank', format: 'raw', size: '1M' })).status, 201);
  r = await create({ name: 'bad-iso', iso: 'default/q' });
  assert.equal(r.status, 400);
  assert.match(r.body.error.message, /is qcow2: an ISO is a raw volume/);
  r = await create({ name: 'bad-iso', iso: 'default/blank' });
  assert.equal(r.status, 400);
  assert.match(r.body.error.message, /volume default\/blank is not an ISO 9660 image/);
  // Firmware with neither an ISO nor a disk has nothing to boot.
  r = await create({ name: 'no-loader', boot: 'bios' });
  assert.equal(r.status, 400);
  assert.match(r.body.error.message, /boot bios runs the boot loader of an ISO or a disk/);
  assert.equal((await d.request('GET', '/1.0/vms')).body.metadata.length, 0, 'nothing was created');

  // A kernel-booted VM is headless: no display, no screenshot, hangar vnc says so (exit 4: conflicting state).
  r = await create({ name: 'headless' });
  assert.equal((await waitOperation(d, r)).status, 'success');
  const vm = (await d.request('GET', '/1.0/vms/headless')).body.metadata;
  assert.equal(vm.display, null);
  assert.equal(vm.spec.boot, 'kernel');
  assert.equal((await d.request('GET', '/1.0/vms/headless/screenshot')).status, 409);
  const vnc = await runHangar(['vnc', 'headless'], { env: d.env });
  assert.equal(vnc.code, 4, vnc.stderr);
  assert.match(vnc.stderr, /has no display/);
  // A firmware VM that is not running has no screen to show yet.
  r = await create({ name: 'idle-fw', iso });
  assert.equal((await waitOperation(d, r)).status, 'success');
  assert.equal((await d.request('GET', '/1.0/vms/idle-fw')).body.metadata.spec.boot, 'bios', 'an ISO implies firmware boot');
  const idle = await d.request('GET', '/1.0/vms/idle-fw/screenshot');
  assert.equal(idle.status, 409);
  assert.match(idle.body.error.message, /is stopped/);

  // A host without OVMF: UEFI is refused at create, saying what to install; BIOS still works there.
  const noOvmf = await startDaemon({ env: { HANGAR_OVMF_DIR: path.join(scratch, 'no-ovmf') } });
  try {
    fs.mkdirSync(path.join(noOvmf.dataDir, 'import'), { recursive: true });
    const noIso = path.join(noOvmf.dataDir, 'import', 'test.iso');
    fs.copyFileSync(iso, noIso);
    const u = await noOvmf.request('POST', '/1.0/vms', { name: 'want-uefi', image: 'tiny', boot: 'uefi', iso: noIso, start: false });
    assert.equal(u.status, 422, JSON.stringify(u.body));
    assert.equal(u.body.error.code, 'UNSUPPORTED');
    assert.match(u.body.error.message, /OVMF.*install the Debian package "ovmf"/);
    const qemu = (await noOvmf.request('GET', '/1.0')).body.metadata.engines.find((e: { name: string }) => e.name === 'qemu');
    assert.deepEqual(qemu.bootModes, ['kernel', 'bios']);
    const b = await noOvmf.request('POST', '/1.0/vms', { name: 'want-bios', image: 'tiny', boot: 'bios', iso: noIso, start: false });
    assert.equal((await waitOperation(noOvmf, b)).status, 'success');
  } finally {
    await noOvmf.cleanup();
  }
  const qemu = (await d.request('GET', '/1.0')).body.metadata.engines.find((e: { name: string }) => e.name === 'qemu');
  assert.deepEqual(qemu.bootModes, ['kernel', 'bios', 'uefi']);
});
