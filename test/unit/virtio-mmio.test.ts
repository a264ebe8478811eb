import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HANGAR_VIRTIO_VENDOR, INT_CONFIG, INT_VRING, REG, STATUS, VIRTIO_ID, VIRTIO_MMIO_MAGIC, VirtioMmioDevice } from '../../src/vmm/virtio/mmio.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1, VIRTQ_DESC_F_NEXT } from '../../src/vmm/virtio/queue.js';
import { VirtioRng, RNG_QUEUE_SIZE } from '../../src/vmm/virtio/rng.js';
import { DATA_BASE, RecordingIrq, TestDriver, TestMemory } from '../helpers/virtio-fixtures.js';

function rig(opts: { irqMode?: 'level' | 'edge' } = {}) {
  const mem = new TestMemory(1 << 20);
  const irq = new RecordingIrq();
  const dev = new VirtioMmioDevice(new VirtioRng(), mem, irq, opts);
  return { mem, irq, dev, drv: new TestDriver(dev, mem) };
}

test('identification registers', () => {
  const { drv } = rig();
  assert.equal(drv.read(REG.MAGIC), VIRTIO_MMIO_MAGIC);
  assert.equal(drv.read(REG.VERSION), 2);
  assert.equal(drv.read(REG.DEVICE_ID), VIRTIO_ID.RNG);
  assert.equal(drv.read(REG.VENDOR_ID), HANGAR_VIRTIO_VENDOR);
  assert.ok(drv.deviceFeatures() & (1n << VIRTIO_F_VERSION_1));
  drv.write(REG.QUEUE_SEL, 0);
  assert.equal(drv.read(REG.QUEUE_NUM_MAX), RNG_QUEUE_SIZE);
  drv.write(REG.QUEUE_SEL, 1);
  assert.equal(drv.read(REG.QUEUE_NUM_MAX), 0, 'no such queue');
});

test('register accesses of the wrong width or alignment are ignored', () => {
  const { dev, drv } = rig();
  const two = new Uint8Array(2);
  dev.mmioRead(REG.MAGIC, two);
  assert.deepEqual([...two], [0, 0]);
  dev.mmioWrite(REG.STATUS, Uint8Array.of(1, 0));
  dev.mmioWrite(REG.STATUS + 1, Uint8Array.of(1, 0, 0, 0));
  assert.equal(drv.read(REG.STATUS), 0);
  assert.ok(dev.metrics().bad_register_accesses! >= 2);
});

test('feature negotiation: VERSION_1 required, unknown bits refused', () => {
  const { drv } = rig();
  assert.equal(drv.negotiate((f) => f & ~(1n << VIRTIO_F_VERSION_1)), false, 'legacy driver is refused');
  assert.equal(drv.negotiate((f) => f | (1n << 50n)), false, 'bits we did not offer are refused');
  assert.equal(drv.negotiate(1n << VIRTIO_F_VERSION_1), true);
  // Features are frozen once FEATURES_OK is set.
  drv.write(REG.DRIVER_FEATURES_SEL, 0);
  drv.write(REG.DRIVER_FEATURES, 0xffffffff);
  drv.write(REG.STATUS, STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK | STATUS.DRIVER_OK);
  assert.equal(drv.read(REG.STATUS), STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.FEATURES_OK | STATUS.DRIVER_OK);
});

test('status transitions: no clearing bits, DRIVER_OK needs FEATURES_OK, 0 resets', () => {
  const { drv } = rig();
  drv.write(REG.STATUS, STATUS.ACKNOWLEDGE | STATUS.DRIVER);
  drv.write(REG.STATUS, STATUS.ACKNOWLEDGE);
  assert.equal(drv.read(REG.STATUS), STATUS.ACKNOWLEDGE | STATUS.DRIVER, 'a driver cannot clear a bit');
  drv.write(REG.STATUS, STATUS.ACKNOWLEDGE | STATUS.DRIVER | STATUS.DRIVER_OK);
  assert.equal(drv.read(REG.STATUS) & STATUS.DRIVER_OK, 0, 'DRIVER_OK before FEATURES_OK is refused');
  drv.start(1, 8);
  drv.write(REG.QUEUE_SEL, 0);
  assert.equal(drv.read(REG.QUEUE_READY), 1);
  drv.write(REG.STATUS, 0);
  assert.equal(drv.read(REG.STATUS), 0);
  assert.equal(drv.read(REG.QUEUE_READY), 0, 'reset unreadies queues');
});

test('queue registers are frozen while the queue is ready', () => {
  const { drv, mem } = rig();
  drv.start(1, 8);
  drv.write(REG.QUEUE_SEL, 0);
  drv.write(REG.QUEUE_DESC_LOW, 0x5000); // ignored
  const h = drv.addChain(0, [{ addr: DATA_BASE, len: 32, write: true }]);
  drv.kick(0);
  assert.deepEqual(drv.takeUsed(0), [{ id: h, len: 32 }]);
  assert.ok(mem.bytes.subarray(DATA_BASE, DATA_BASE + 32).some((b) => b !== 0));
});

test('notifications before DRIVER_OK are ignored', () => {
  const { drv } = rig();
  drv.negotiate();
  drv.setupQueue(0, 8);
  drv.addChain(0, [{ addr: DATA_BASE, len: 8, write: true }]);
  drv.kick(0);
  assert.deepEqual(drv.takeUsed(0), []);
  drv.driverOk();
  drv.kick(0);
  assert.equal(drv.takeUsed(0).length, 1);
});

test('interrupt line: level follows interrupt status until acknowledged', () => {
  const { drv, irq } = rig();
  drv.start(1, 8);
  drv.addChain(0, [{ addr: DATA_BASE, len: 8, write: true }]);
  drv.kick(0);
  assert.equal(irq.level, true);
  assert.equal(drv.read(REG.INTERRUPT_STATUS), INT_VRING);
  drv.write(REG.INTERRUPT_ACK, INT_VRING);
  assert.equal(irq.level, false);
  assert.equal(drv.read(REG.INTERRUPT_STATUS), 0);
});

test('interrupt line: edge mode pulses once per interrupt', () => {
  const { drv, irq } = rig({ irqMode: 'edge' });
  drv.start(1, 8, (f) => f & ~(1n << VIRTIO_F_EVENT_IDX)); // with EVENT_IDX, used_event 0 would ask for one interrupt only
  for (let i = 0; i < 3; i++) {
    drv.addChain(0, [{ addr: DATA_BASE, len: 8, write: true }]);
    drv.kick(0);
  }
  assert.equal(irq.pulses, 3);
});

test('a malformed chain breaks the device (NEEDS_RESET + config interrupt), never throws; reset recovers', () => {
  const { drv, dev, irq } = rig();
  drv.start(1, 8);
  drv.writeDesc(0, 0, { addr: DATA_BASE, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 1 });
  drv.writeDesc(0, 1, { addr: DATA_BASE, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 0 });
  drv.publish(0, 0);
  drv.kick(0); // must not throw
  assert.ok(drv.read(REG.STATUS) & STATUS.DEVICE_NEEDS_RESET);
  assert.equal(drv.read(REG.INTERRUPT_STATUS) & INT_CONFIG, INT_CONFIG);
  assert.equal(irq.level, true);
  assert.equal(dev.lastError?.details?.reason, 'chain-loop');
  assert.equal(dev.metrics().device_errors, 1);
  assert.equal(dev.metrics().broken, 1);
  // Further kicks do nothing while broken.
  drv.addChain(0, [{ addr: DATA_BASE, len: 8, write: true }]);
  drv.kick(0);
  assert.deepEqual(drv.takeUsed(0), []);
  // The driver can clear DEVICE_NEEDS_RESET only by resetting; then all is well again.
  drv.start(1, 8);
  assert.equal(drv.read(REG.STATUS) & STATUS.DEVICE_NEEDS_RESET, 0);
  drv.addChain(0, [{ addr: DATA_BASE, len: 8, write: true }]);
  drv.kick(0);
  assert.equal(drv.takeUsed(0).length, 1);
});

test('a ring placed outside guest memory breaks the device when made ready', () => {
  const { drv, dev } = rig();
  drv.negotiate();
  drv.setupQueue(0, 8, { used: (1 << 20) - 8 });
  assert.ok(drv.read(REG.STATUS) & STATUS.DEVICE_NEEDS_RESET);
  assert.equal(drv.read(REG.QUEUE_READY), 0);
  assert.equal(dev.lastError?.details?.reason, 'ring-outside-memory');
});

test('a queue size beyond the maximum is refused', () => {
  const { drv, dev } = rig();
  drv.negotiate();
  drv.setupQueue(0, RNG_QUEUE_SIZE * 2);
  assert.equal(dev.lastError?.details?.reason, 'queue-size');
});

test('reads of config space beyond its size return zeros', () => {
  const { drv } = rig();
  assert.deepEqual([...drv.readConfig(0, 4)], [0, 0, 0, 0]);
  assert.equal(drv.read(REG.CONFIG_GENERATION), 0);
});
