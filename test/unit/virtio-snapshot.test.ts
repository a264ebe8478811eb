import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { REG, STATUS, VirtioMmioDevice, type VirtioMmioSnapshot } from '../../src/vmm/virtio/mmio.js';
import { VirtioBlock, VIRTIO_BLK_T } from '../../src/vmm/virtio/blk.js';
import { DATA_BASE, RecordingIrq, TestDriver, TestMemory } from '../helpers/virtio-fixtures.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-virtio-snap-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const disk = path.join(dir, 'd.img');
const content = randomBytes(256 * 1024);
fs.writeFileSync(disk, content);

/** Posts one 512-byte read of `sector` and returns what came back in the used ring. */
function read(drv: TestDriver, mem: TestMemory, sector: number): Array<{ id: number; len: number }> {
  mem.writeU32(DATA_BASE, VIRTIO_BLK_T.IN);
  mem.writeU64(DATA_BASE + 8, BigInt(sector));
  drv.addChain(0, [{ addr: DATA_BASE, len: 16 }, { addr: DATA_BASE + 0x1000, len: 512, write: true }, { addr: DATA_BASE + 0x100, len: 1, write: true }]);
  drv.kick(0);
  return drv.takeUsed(0);
}

function running() {
  const mem = new TestMemory(1 << 20);
  const irq = new RecordingIrq();
  const dev = new VirtioMmioDevice(new VirtioBlock({ id: 'vda', path: disk }), mem, irq);
  const drv = new TestDriver(dev, mem);
  drv.start(1, 8);
  for (let i = 0; i < 11; i++) read(drv, mem, i); // the ring wraps once
  return { mem, irq, dev, drv };
}

test('a restored transport continues the rings where the snapshot left them', () => {
  const a = running();
  const snap = JSON.parse(JSON.stringify(a.dev.snapshot())) as VirtioMmioSnapshot;
  assert.equal(snap.queues[0]!.usedIdx, 11);
  a.dev.close();

  // "Restore": guest memory copied, a new device on the same file, the driver carrying on.
  const mem = new TestMemory(1 << 20);
  mem.bytes.set(a.mem.bytes);
  const irq = new RecordingIrq();
  const dev = new VirtioMmioDevice(new VirtioBlock({ id: 'vda', path: disk }), mem, irq);
  dev.restore(snap);
  assert.equal(irq.level, snap.interruptStatus !== 0);
  const drv = new TestDriver(dev, mem);
  drv.queues[0] = { ...a.drv.queues[0]! };
  assert.equal(drv.read(REG.STATUS), snap.status);
  const used = read(drv, mem, 100);
  assert.equal(used.length, 1);
  assert.equal(mem.readU16(drv.queues[0]!.used + 2), 12);
  assert.ok(Buffer.from(mem.slice(DATA_BASE + 0x1000, 512)).equals(content.subarray(100 * 512, 101 * 512)));
  assert.equal(mem.bytes[DATA_BASE + 0x100], 0);
  dev.close();
});

test('restore refuses a snapshot that does not fit and leaves the device reset', () => {
  const a = running();
  const snap = a.dev.snapshot();
  a.dev.close();
  const mem = new TestMemory(64 * 1024); // smaller guest: the rings at 0x10000 are outside it
  const dev = new VirtioMmioDevice(new VirtioBlock({ id: 'vda', path: disk }), mem, new RecordingIrq());
  assert.throws(() => dev.restore(snap), { code: 'INVALID_ARGUMENT' });
  const d = new Uint8Array(4);
  dev.mmioRead(REG.STATUS, d);
  assert.equal(d[0], 0);
  assert.throws(() => dev.restore({ ...snap, kind: 'virtio-rng' }), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => dev.restore({ ...snap, driverFeatures: '0xffffffffffffffff' }), { code: 'INVALID_ARGUMENT' });
  dev.close();
});

test('restore only into a device the guest has not touched', () => {
  const a = running();
  assert.throws(() => a.dev.restore(a.dev.snapshot()), { code: 'INVALID_STATE' });
  assert.ok(a.drv.read(REG.STATUS) & STATUS.DRIVER_OK);
  a.dev.close();
});
