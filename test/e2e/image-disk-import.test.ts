/**
 * Disk images (`hangar image import NAME --disk FILE`): a user's bootable
 * disk becomes an image whose base disk VMs overlay, booted by firmware.
 *
 * The bootable disk is made cheaply: grub-mkrescue's output around the tiny
 * image's kernel is a hybrid image, an ISO that is also a disk with an MBR
 * (BIOS boot code) and an EFI system partition. As a qcow2 it is uploaded
 * through the CLI and boots with SeaBIOS; as a raw file in the daemon's
 * import folder it is imported by path and boots with OVMF. Both reach
 * GRUB, then the tiny shell. Then: the image is listed, cannot be deleted
 * while a VM uses it, its name cannot be taken twice, and hostile disks (a
 * qcow2 whose backing file is /etc/shadow, one that is corrupt, one over the
 * quota) are refused with a clear error and leave nothing behind.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { startDaemon, waitOperation, ConsoleSession, type TestDaemon } from '../helpers/daemon.js';
import { runHangar, expectOk } from '../helpers/cli.js';
import { buildTestIso, GRUB_ENTRY } from '../helpers/test-iso.js';
import { projectRoot } from '../../src/common/paths.js';

process.env.HANGAR_IMAGE_DIR ??= path.join(projectRoot(), '.cache', 'images');
const { ensureImage } = await import('../../src/host/images/index.js');
const { TINY_PROMPT, TINY_BANNER } = await import('../../src/host/images/tiny.js');

let d: TestDaemon;
let importDir: string;
/** The hybrid disk, raw (in the import folder) and as a qcow2 (outside it: the CLI uploads it). */
let rawDisk: string;
let qcowDisk: string;
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'hg-diskimg-'));

before(async () => {
  const tiny = await ensureImage('tiny');
  d = await startDaemon();
  importDir = path.join(d.dataDir, 'import');
  rawDisk = buildTestIso(tiny, path.join(importDir, 'bootable.img'));
  qcowDisk = path.join(scratch, 'bootable.qcow2');
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rawDisk, qcowDisk]);
});

after(async () => {
  await d?.cleanup();
  fs.rmSync(scratch, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

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

/** What the imported-image store holds besides finished images: work folders an import left. */
function leftovers(): string[] {
  const root = path.join(d.dataDir, 'local-images');
  try { return fs.readdirSync(root).filter((n) => n.startsWith('.')); } catch { return []; }
}

/** Launches a VM from a disk image (no boot given: the image's firmware) and proves firmware → GRUB → kernel → shell. */
async function bootFromImage(vm: string, image: string, firmware: 'bios' | 'uefi'): Promise<number> {
  const t0 = Date.now();
  const op = await waitOperation(d, await d.request('POST', '/1.0/vms', { name: vm, image, memory: '256M' }));
  assert.equal(op.status, 'success', JSON.stringify(op));
  const got = (await d.request('GET', `/1.0/vms/${vm}`)).body.metadata;
  assert.equal(got.spec.boot, firmware, 'a disk image boots with the firmware it was imported for');
  // The root disk is an overlay of the image's base disk, not a copy.
  const vol = (await d.request('GET', `/1.0/storage-pools/default/volumes/${vm}-root`)).body.metadata;
  assert.equal(vol.format, 'qcow2');
  assert.equal(vol.backing, path.join(d.dataDir, 'local-images', image, 'disk.qcow2'));
  await waitForLog(vm, GRUB_ENTRY, 180_000);
  await waitForLog(vm, TINY_BANNER, 180_000);
  const con = await ConsoleSession.open(d, vm);
  try {
    await con.waitForPrompt(TINY_PROMPT, 60_000);
    assert.match(await con.run('ls /sys/firmware/efi >/dev/null 2>&1 && echo fw=uefi || echo fw=bios'), new RegExp(`fw=${firmware}`));
  } finally {
    await con.close();
  }
  return (Date.now() - t0) / 1000;
}

test('a qcow2 disk uploaded with hangar image import --disk boots with BIOS; listed; delete refused while used; name clash refused', { timeout: 400_000 }, async (t) => {
  const imp = expectOk(await runHangar(['image', 'import', 'bootdisk', '--disk', qcowDisk, '--description', 'hybrid test disk', '--json'], { env: d.env }), 'hangar image import --disk');
  const img = JSON.parse(imp.stdout);
  assert.equal(img.name, 'bootdisk');
  assert.equal(img.origin, 'imported');
  assert.deepEqual(img.boot, ['bios']);
  assert.equal(img.kernel, undefined, 'a disk image brings no kernel');
  assert.equal(img.disk, path.join(d.dataDir, 'local-images', 'bootdisk', 'disk.qcow2'));
  assert.equal(fs.statSync(img.disk).mode & 0o077, 0, 'the base disk is private');
  // Hangar's own standalone qcow2: no backing file, no data file.
  const info = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', img.disk], { encoding: 'utf8' }));
  assert.equal(info.format, 'qcow2');
  assert.equal(info['backing-filename'], undefined);
  assert.equal(info['format-specific']?.data?.['data-file'], undefined);

  const list = expectOk(await runHangar(['image', 'list'], { env: d.env }), 'hangar image list');
  assert.match(list.stdout, /^bootdisk\s+ready\s+\S+.*hybrid test disk$/m);

  const clash = await runHangar(['image', 'import', 'bootdisk', '--disk', qcowDisk], { env: d.env });
  assert.notEqual(clash.code, 0);
  assert.match(clash.stderr, /an image named "bootdisk" already exists/);
  const clashPath = await d.request('POST', '/1.0/images', { name: 'bootdisk', disk: rawDisk });
  assert.equal(clashPath.status, 409, JSON.stringify(clashPath.body));

  const s = await bootFromImage('disk-bios', 'bootdisk', 'bios');
  t.diagnostic(`bios: launch → tiny shell from the imported disk in ${s.toFixed(1)} s`);

  const del = await runHangar(['image', 'delete', 'bootdisk'], { env: d.env });
  assert.notEqual(del.code, 0);
  assert.match(del.stderr, /image "bootdisk" is used by VM disk-bios/);
  assert.ok(fs.existsSync(img.disk));
  assert.equal((await waitOperation(d, await d.request('DELETE', '/1.0/vms/disk-bios?force=true'))).status, 'success');
  expectOk(await runHangar(['image', 'delete', 'bootdisk'], { env: d.env }), 'hangar image delete');
  assert.ok(!fs.existsSync(path.dirname(img.disk)));
  assert.deepEqual(leftovers(), []);
});

test('a raw disk from the import folder (hangar image import --from-daemon-dir --boot uefi) boots with UEFI', { timeout: 400_000 }, async (t) => {
  const imp = expectOk(await runHangar(['image', 'import', 'efidisk', '--disk', rawDisk, '--boot', 'uefi', '--format', 'raw', '--from-daemon-dir', '--json'], { env: d.env }), 'hangar image import --from-daemon-dir');
  const img = JSON.parse(imp.stdout);
  assert.deepEqual(img.boot, ['uefi']);
  const s = await bootFromImage('disk-uefi', 'efidisk', 'uefi');
  t.diagnostic(`uefi: launch → tiny shell from the imported disk in ${s.toFixed(1)} s`);
  assert.equal((await waitOperation(d, await d.request('DELETE', '/1.0/vms/disk-uefi?force=true'))).status, 'success');
  assert.equal((await d.request('DELETE', '/1.0/images/efidisk')).status, 200);
});

test('hostile disks are refused with a clear error and leave nothing behind', { timeout: 120_000 }, async () => {
  const before = (await d.request('GET', '/1.0/images')).body.metadata.map((i: { name: string }) => i.name);
  const noImage = async (name: string) => {
    assert.equal((await d.request('GET', `/1.0/images/${name}`)).status, 404, `no image ${name} was made`);
    assert.deepEqual(leftovers(), [], 'no work folder is left');
  };

  // A qcow2 whose backing file is /etc/shadow: a VM booted from it would read the host's password hashes.
  const evil = path.join(importDir, 'evil.qcow2');
  execFileSync('qemu-img', ['create', '-f', 'qcow2', '-u', '-b', '/etc/shadow', '-F', 'raw', evil, '64M'], { stdio: 'ignore' });
  let r = await d.request('POST', '/1.0/images', { name: 'evil', disk: evil });
  assert.equal(r.status, 400, JSON.stringify(r.body));
  assert.equal(r.body.error.details.reason, 'backing-outside-roots');
  assert.match(r.body.error.message, /\/etc\/shadow/);
  await noImage('evil');
  // The same file uploaded: an upload may name no file on the host at all.
  const up = await runHangar(['image', 'import', 'evil', '--disk', evil], { env: d.env });
  assert.notEqual(up.code, 0);
  assert.match(up.stderr, /backing file/);
  await noImage('evil');
  // A json: backing name (QEMU would parse it as options) is refused before anything opens it.
  const jsonEvil = path.join(importDir, 'json.qcow2');
  execFileSync('qemu-img', ['create', '-f', 'qcow2', '-u', '-b', 'json:{"file":{"driver":"file","filename":"/etc/shadow"}}', '-F', 'raw', jsonEvil, '64M'], { stdio: 'ignore' });
  r = await d.request('POST', '/1.0/images', { name: 'evil', disk: jsonEvil });
  assert.equal(r.status, 400, JSON.stringify(r.body));
  assert.equal(r.body.error.details.reason, 'backing-protocol');
  await noImage('evil');

  // A qcow2 cut short: its tables point past its end.
  const cut = path.join(importDir, 'cut.qcow2');
  fs.copyFileSync(qcowDisk, cut);
  fs.truncateSync(cut, 64 * 1024);
  r = await d.request('POST', '/1.0/images', { name: 'cut', disk: cut });
  assert.equal(r.status, 400, JSON.stringify(r.body));
  await noImage('cut');

  // Over the image quota (10 GiB by default): a 1 TiB sparse qcow2.
  const huge = path.join(importDir, 'huge.qcow2');
  execFileSync('qemu-img', ['create', '-f', 'qcow2', huge, '1T'], { stdio: 'ignore' });
  r = await d.request('POST', '/1.0/images', { name: 'huge', disk: huge });
  assert.equal(r.status, 422, JSON.stringify(r.body));
  assert.equal(r.body.error.code, 'RESOURCE_EXHAUSTED');
  assert.match(r.body.error.message, /image storage quota/);
  await noImage('huge');

  // Outside the import folders, a wrong declared format, a disk with a kernel.
  r = await d.request('POST', '/1.0/images', { name: 'x', disk: qcowDisk });
  assert.equal(r.status, 400);
  assert.match(r.body.error.message, /is not a file inside the daemon's import folders/);
  r = await d.request('POST', '/1.0/images', { name: 'x', disk: rawDisk, format: 'qcow2' });
  assert.equal(r.status, 400);
  assert.equal(r.body.error.details.reason, 'format-mismatch');
  r = await d.request('POST', '/1.0/images', { name: 'x', disk: rawDisk, kernel: rawDisk });
  assert.equal(r.status, 400);
  await noImage('x');
  const after = (await d.request('GET', '/1.0/images')).body.metadata.map((i: { name: string }) => i.name);
  assert.deepEqual(after, before);
});
