/**
 * A built image whose base disk VMs' root volumes are overlays of is not
 * rebuilt under them (startImageBuild refuses before any operation starts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startImageBuild } from '../../src/host/images/build-op.js';
import { isHangarError } from '../../src/common/errors.js';
import type { OperationManager } from '../../src/host/operations.js';
import type { ImageProvider } from '../../src/host/vms.js';

function provider(images: Array<{ name: string; status: string; disk?: string }>): { images: ImageProvider; builds: string[] } {
  const builds: string[] = [];
  const p = {
    listImages: async () => images,
    isBuiltIn: () => true,
    buildImage: async (name: string) => { builds.push(name); },
  } as unknown as ImageProvider;
  return { images: p, builds };
}

/** Runs the operation's body at once, as the real manager would in the background. */
const operations = {
  run: (_description: string, _vms: string[], body: (progress: () => void) => Promise<unknown>) => {
    void body(() => {});
    return { id: 'op-1', status: 'running' };
  },
} as unknown as OperationManager;

test('a disk image VMs are made from is not rebuilt; the error names them', async () => {
  const { images, builds } = provider([{ name: 'debian-12', status: 'ready', disk: '/img/debian-12/disk.qcow2' }]);
  await assert.rejects(startImageBuild(operations, images, 'debian-12', {}, () => ['web', 'db']), (e: unknown) =>
    isHangarError(e) && e.code === 'INVALID_STATE' && /web, db/.test(e.message));
  assert.deepEqual(builds, []);
});

test('the same image without users, a kernel-only image with users, and a first build all go ahead', async () => {
  const unused = provider([{ name: 'debian-12', status: 'ready', disk: '/img/debian-12/disk.qcow2' }]);
  await startImageBuild(operations, unused.images, 'debian-12', {}, () => []);
  const kernelOnly = provider([{ name: 'tiny', status: 'ready' }]);
  await startImageBuild(operations, kernelOnly.images, 'tiny', {}, () => ['web']);
  const missing = provider([{ name: 'debian-12', status: 'missing' }]);
  await startImageBuild(operations, missing.images, 'debian-12', {}, () => ['web']);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual([...unused.builds, ...kernelOnly.builds, ...missing.builds], ['debian-12', 'tiny', 'debian-12']);
});
