/**
 * Start-of-daemon reconcile of ISO volume uses, with a real SQLite store and
 * storage service: a VM whose spec names an ISO volume gets its `cdrom` use
 * recorded (so the volume cannot be deleted under it), and a `cdrom` use the
 * spec no longer names is dropped; disk uses are left alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HangarError } from '../../src/common/errors.js';
import { Store, type VmRecord } from '../../src/host/store.js';
import { StorageService } from '../../src/host/storage/service.js';
import { reconcileIsoVolumes } from '../../src/host/iso-media.js';

function vm(name: string, iso?: string): VmRecord {
  return {
    id: `id-${name}`, name, state: 'stopped', pid: null, accel: null, startedAt: null, lastExit: null, createdAt: new Date(0).toISOString(),
    spec: { image: 'tiny', engine: 'qemu', cpus: 1, memoryBytes: 256 * 2 ** 20, cmdline: '', disks: [], ...(iso ? { iso } : {}) } as VmRecord['spec'],
  };
}

test('ISO volume uses are recorded for the VMs that name them and dropped where no VM does', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-iso-reconcile-'));
  const store = new Store(dir);
  t.after(() => { store.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  const storage = new StorageService({ store, dataDir: dir });
  for (const name of ['installer', 'old', 'data']) await storage.createVolume({ name, format: 'raw', sizeBytes: 1024 * 1024 });

  // "a" names default/installer but has no record (made before uses were tracked);
  // "b" has a stale record for default/old (ejected by hand) and a disk use of default/data;
  // "c" names a volume that is gone; "d" names an ISO by path.
  store.insertVm(vm('a', 'default/installer'));
  store.insertVm(vm('b'));
  store.insertVm(vm('c', 'default/vanished'));
  store.insertVm(vm('d', '/srv/isos/x.iso'));
  storage.attach('default/old', { vm: 'b', device: 'cdrom', readOnly: true });
  storage.attach('default/data', { vm: 'b', device: 'vdb', readOnly: false });

  const fixes = reconcileIsoVolumes(store, storage);
  assert.deepEqual(fixes.sort(), ['a: recorded use of default/installer', 'b: dropped stale use of default/old']);
  assert.deepEqual(storage.attachmentsOfVm('a').map((x) => [x.pool, x.volume, x.device, x.readOnly]), [['default', 'installer', 'cdrom', true]]);
  assert.deepEqual(storage.attachmentsOfVm('b').map((x) => [x.volume, x.device]), [['data', 'vdb']], 'the disk use stays');
  assert.throws(() => storage.deleteVolume('default', 'installer'), (e: unknown) => e instanceof HangarError && /in use|used/i.test(e.message));
  storage.deleteVolume('default', 'old');
  // A second pass has nothing left to do.
  assert.deepEqual(reconcileIsoVolumes(store, storage), []);
});
