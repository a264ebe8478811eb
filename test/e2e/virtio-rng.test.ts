/**
 * virtio-rng end to end: guests/virtio-rng.c asks the device for random
 * bytes under the real hangar-vmm, configured through its control API
 * (PUT /entropy adds the device, as in Firecracker).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { buildGuest, guestTestsUnavailable, startVmmConsole, tempDir, vmmApi, type VmmConsoleProcess } from '../helpers/vmm.js';

const skip = guestTestsUnavailable() ?? false;
const dir = tempDir('virtio-rng-e2e');
let vmm: VmmConsoleProcess | null = null;
after(async () => {
  if (vmm) {
    vmm.kill();
    await vmm.done;
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('guest receives random bytes from virtio-rng', { skip }, async () => {
  const kernel = buildGuest('virtio-rng');
  vmm = startVmmConsole(null, dir);
  const put = async (p: string, body: object) => {
    const r = await vmmApi(dir, 'PUT', p, body);
    assert.equal(r.status, 204, `PUT ${p}: ${r.status} ${r.body}`);
  };
  await put('/machine-config', { vcpu_count: 1, mem_size_mib: 64 });
  await put('/boot-source', { kernel_image_path: kernel });
  await put('/entropy', {});
  await put('/actions', { action_type: 'InstanceStart' });
  const r = await vmm.done;
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const m = /vrng: a=([0-9a-f]{64}) b=([0-9a-f]{64})/.exec(r.stdout);
  assert.ok(m, r.stdout);
  assert.notEqual(m[1], m[2], 'two requests give different bytes');
  assert.notEqual(m[1], '0'.repeat(64));
  const big = /vrng: big len=(\d+) distinct=(\d+)/.exec(r.stdout);
  assert.ok(big);
  assert.equal(Number(big[1]), 4096);
  // 4096 uniform bytes miss any given value with probability ~1e-7: nearly all 256 appear.
  assert.ok(Number(big[2]) >= 250, `distinct byte values: ${big[2]}`);
  assert.match(r.stdout, /vrng: done/);
});
