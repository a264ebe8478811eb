/**
 * virtio-rng end to end: guests/virtio-rng.c asks the device for random
 * bytes under the real hangar-vmm. The config asks for the device with
 * Firecracker's name for it, "entropy".
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { buildGuest, guestConfig, guestTestsUnavailable, runVmm, tempDir } from './virtio-harness.js';

const skip = guestTestsUnavailable() ?? false;
const dir = tempDir('virtio-rng-e2e');
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('guest receives random bytes from virtio-rng', { skip }, async (t) => {
  const kernel = buildGuest('virtio-rng');
  const r = await runVmm({ ...guestConfig(kernel), entropy: {} }, dir);
  if (r.code === 1 && /unknown field "entropy"/.test(r.stderr)) {
    t.skip('hangar-vmm config has no "entropy" device yet');
    return;
  }
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
