/**
 * ISO media after create (`hangar iso insert|eject`, PUT/DELETE
 * /1.0/vms/{name}/iso) on running QEMU VMs of the tiny image, booted by
 * kernel (seconds): what QEMU's drive holds is read back with query-block
 * (GET .../iso, `drive`). An ISO kept in a storage volume is in use while a
 * VM has it, from create or from an insert: the volume cannot be deleted
 * until the ISO is ejected or changed, or the VM is gone. Then the refusals.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startDaemon, waitOperation, type TestDaemon } from '../helpers/daemon.js';
import { runHangar, expectOk } from '../helpers/cli.js';
import { buildTestIso } from '../helpers/test-iso.js';
import { projectRoot } from '../../src/common/paths.js';

process.env.HANGAR_IMAGE_DIR ??= path.join(projectRoot(), '.cache', 'images');
const { ensureImage } = await import('../../src/host/images/index.js');

let d: TestDaemon;
let iso: string;
let volFile: string;

before(async () => {
  const tiny = await ensureImage('tiny');
  d = await startDaemon();
  iso = buildTestIso(tiny, path.join(d.dataDir, 'import', 'media.iso'));
  const imp = await waitOperation(d, await d.request('POST', '/1.0/storage-pools/default/volumes', { name: 'media-iso', format: 'raw', source: { type: 'path', path: iso } }));
  assert.equal(imp.status, 'success', JSON.stringify(imp));
  volFile = path.join((await d.request('GET', '/1.0/storage-pools/default')).body.metadata.path, 'media-iso.raw');
});

after(async () => {
  await d?.cleanup();
});

const hangar = (args: string[]) => runHangar(args, { env: d.env });
const drive = async (vm: string) => (await d.request('GET', `/1.0/vms/${vm}/iso`)).body.metadata;
const usedBy = async () => (await d.request('GET', '/1.0/storage-pools/default/volumes/media-iso')).body.metadata.usedBy;
const deleteVolume = () => d.request('DELETE', '/1.0/storage-pools/default/volumes/media-iso');

async function launch(body: Record<string, unknown>): Promise<void> {
  const op = await waitOperation(d, await d.request('POST', '/1.0/vms', { image: 'tiny', memory: '128M', boot: 'kernel', ...body }));
  assert.equal(op.status, 'success', JSON.stringify(op));
}

test('eject, insert a volume, change, stop/start: QEMU\'s drive follows; the volume is in use while in the drive', { timeout: 180_000 }, async () => {
  await launch({ name: 'media', iso });
  let st = await drive('media');
  assert.equal(st.iso, iso);
  assert.equal(st.drive.inserted, true, JSON.stringify(st));

  expectOk(await hangar(['iso', 'eject', 'media']), 'hangar iso eject');
  st = await drive('media');
  assert.equal(st.iso, null);
  assert.equal(st.drive.inserted, false, 'QEMU\'s drive is empty');
  assert.equal((await d.request('GET', '/1.0/vms/media')).body.metadata.spec.iso, undefined);

  // The volume goes in: QEMU opens it, and the volume is in use.
  const ins = expectOk(await hangar(['iso', 'insert', 'media', 'default/media-iso']), 'hangar iso insert');
  assert.match(ins.stdout, /Inserted default\/media-iso into media/);
  st = await drive('media');
  assert.equal(st.drive.inserted, true);
  assert.equal(fs.realpathSync(st.drive.file), fs.realpathSync(volFile));
  assert.deepEqual(await usedBy(), [{ vm: 'media', device: 'cdrom', readOnly: true }]);
  let del = await deleteVolume();
  assert.equal(del.status, 409, JSON.stringify(del.body));
  assert.match(del.body.error.message, /used by VM media \(cdrom\)/);

  // Changed for the path ISO: the volume is free again (and stays: it is not deleted here).
  expectOk(await hangar(['iso', 'insert', 'media', iso]), 'hangar iso insert (change)');
  st = await drive('media');
  assert.equal(st.drive.file, iso);
  assert.deepEqual(await usedBy(), []);

  // Back to the volume, then stop and start: the spec kept it, the new QEMU has it from the start.
  expectOk(await hangar(['iso', 'insert', 'media', 'default/media-iso']), 'hangar iso insert (again)');
  expectOk(await hangar(['stop', 'media', '--force']), 'stop');
  st = await drive('media');
  assert.equal(st.iso, 'default/media-iso');
  assert.equal(st.drive, null, 'a stopped VM has no drive to report');
  expectOk(await hangar(['start', 'media']), 'start');
  st = await drive('media');
  assert.equal(st.drive.inserted, true);
  assert.equal((await deleteVolume()).status, 409);

  // The VM goes: so does its use of the volume.
  assert.equal((await waitOperation(d, await d.request('DELETE', '/1.0/vms/media?force=true'))).status, 'success');
  assert.deepEqual(await usedBy(), []);
});

test('an ISO volume given at create is in use from then on; a stopped VM takes an insert into its spec', { timeout: 120_000 }, async () => {
  await launch({ name: 'made-with', iso: 'default/media-iso', start: false });
  assert.deepEqual(await usedBy(), [{ vm: 'made-with', device: 'cdrom', readOnly: true }]);
  assert.equal((await deleteVolume()).status, 409);
  const r = JSON.parse(expectOk(await hangar(['iso', 'eject', 'made-with', '--json']), 'eject (stopped)').stdout);
  assert.deepEqual(r, { vm: 'made-with', iso: null, live: false });
  assert.deepEqual(await usedBy(), []);
  const ins = expectOk(await hangar(['iso', 'insert', 'made-with', 'default/media-iso']), 'insert (stopped)');
  assert.match(ins.stdout, /used from its next start/);
  assert.deepEqual(await usedBy(), [{ vm: 'made-with', device: 'cdrom', readOnly: true }]);
  assert.equal((await waitOperation(d, await d.request('DELETE', '/1.0/vms/made-with'))).status, 'success');
  assert.deepEqual(await usedBy(), []);
});

test('refusals: not an ISO, outside the import folders, nothing to eject, a running VM without a drive', { timeout: 120_000 }, async () => {
  await launch({ name: 'nodrive' });
  // Kernel boot without an ISO: QEMU has no drive, and none can be added while it runs.
  let r = await d.request('PUT', '/1.0/vms/nodrive/iso', { iso });
  assert.equal(r.status, 409, JSON.stringify(r.body));
  assert.match(r.body.error.message, /started without a CD-ROM drive/);
  assert.equal((await d.request('GET', '/1.0/vms/nodrive')).body.metadata.spec.iso, undefined, 'nothing changed');
  const ej = await hangar(['iso', 'eject', 'nodrive']);
  assert.equal(ej.code, 4, ej.stderr);
  assert.match(ej.stderr, /has no ISO to eject/);
  const fake = path.join(d.dataDir, 'import', 'fake.iso');
  fs.writeFileSync(fake, Buffer.alloc(64 * 1024, 0x41));
  r = await d.request('PUT', '/1.0/vms/nodrive/iso', { iso: fake });
  assert.equal(r.status, 400);
  assert.match(r.body.error.message, /not an ISO 9660 image/);
  r = await d.request('PUT', '/1.0/vms/nodrive/iso', { iso: '/etc/shadow' });
  assert.equal(r.status, 400);
  assert.match(r.body.error.message, /is not a file inside the daemon's import folders/);
  r = await d.request('PUT', '/1.0/vms/no-such-vm/iso', { iso });
  assert.equal(r.status, 404);
  assert.equal((await waitOperation(d, await d.request('DELETE', '/1.0/vms/nodrive?force=true'))).status, 'success');
  assert.equal((await deleteVolume()).status, 200, 'the volume, used by nobody now, can go');
});
