import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VirtioMmioDevice } from '../../src/vmm/virtio/mmio.js';
import { VirtioRng, RNG_MAX_REQUEST } from '../../src/vmm/virtio/rng.js';
import { DATA_BASE, RecordingIrq, TestDriver, TestMemory } from '../helpers/virtio-fixtures.js';

function rig() {
  const mem = new TestMemory(1 << 20);
  const dev = new VirtioMmioDevice(new VirtioRng(), mem, new RecordingIrq());
  const drv = new TestDriver(dev, mem);
  drv.start(1, 16);
  return { mem, dev, drv };
}

test('fills writable buffers with random bytes and reports their length', () => {
  const { mem, drv, dev } = rig();
  drv.addChain(0, [{ addr: DATA_BASE, len: 64, write: true }, { addr: DATA_BASE + 0x1000, len: 4096, write: true }]);
  drv.kick(0);
  assert.deepEqual(drv.takeUsed(0).map((u) => u.len), [64 + 4096]);
  const a = mem.slice(DATA_BASE, 64);
  const b = mem.slice(DATA_BASE + 0x1000, 4096);
  assert.ok(a.some((x) => x !== 0));
  // 4096 random bytes: every byte value is expected ~16 times; all 256 values missing a few is fine, a constant buffer is not.
  assert.ok(new Set(b).size > 200);
  assert.equal(dev.metrics().bytes, 64 + 4096);
});

test('two requests never get the same bytes', () => {
  const { mem, drv } = rig();
  drv.addChain(0, [{ addr: DATA_BASE, len: 32, write: true }]);
  drv.addChain(0, [{ addr: DATA_BASE + 32, len: 32, write: true }]);
  drv.kick(0);
  assert.equal(drv.takeUsed(0).length, 2);
  assert.notDeepEqual([...mem.slice(DATA_BASE, 32)], [...mem.slice(DATA_BASE + 32, 32)]);
});

test('readable-only chains get nothing; huge buffers are capped per request', () => {
  const { drv } = rig();
  drv.addChain(0, [{ addr: DATA_BASE, len: 32 }]);
  drv.addChain(0, [{ addr: DATA_BASE, len: RNG_MAX_REQUEST * 2, write: true }]);
  drv.kick(0);
  assert.deepEqual(drv.takeUsed(0).map((u) => u.len), [0, RNG_MAX_REQUEST]);
});
