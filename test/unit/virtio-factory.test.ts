import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createVirtioDevices } from '../../src/vmm/virtio/index.js';
import { REG } from '../../src/vmm/virtio/mmio.js';
import { virtioMmioSlot, virtioMmioCmdline, VIRTIO_MMIO_SLOTS, type MmioSlot } from '../../src/vmm/layout.js';
import { MmioBus } from '../../src/vmm/bus.js';
import type { DeviceHost } from '../../src/vmm/devices/host.js';
import type { IrqLine, MmioDevice } from '../../src/vmm/devices/device.js';
import { createLogger } from '../../src/common/log.js';
import { RecordingIrq, TestMemory } from '../helpers/virtio-fixtures.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-virtio-factory-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const disk = path.join(dir, 'a.img');
fs.writeFileSync(disk, Buffer.alloc(1 << 20));

/** The parts of the VMM's DeviceHost the factory uses, over a real MMIO bus. */
function fakeHost(opts: { ioeventfd?: boolean } = {}) {
  const bus = new MmioBus();
  const cmdline: string[] = [];
  const irqs = new Map<number, RecordingIrq>();
  const eventfds: Array<{ addr: number; datamatch: number | undefined; fire: () => void; closed: boolean }> = [];
  let next = 0;
  const host: DeviceHost = {
    memory: new TestMemory(1 << 20),
    log: createLogger('test', 'silent'),
    irqLine: (gsi) => { const l = new RecordingIrq(gsi); irqs.set(gsi, l); return l; },
    attachVirtioMmio<D extends MmioDevice>(make: (slot: MmioSlot, irq: IrqLine) => D) {
      if (next >= VIRTIO_MMIO_SLOTS) throw new Error('no slot');
      const slot = virtioMmioSlot(next);
      const device = make(slot, host.irqLine(slot.irq));
      bus.register(slot.base, slot.size, device);
      next++;
      cmdline.push(virtioMmioCmdline(slot));
      return { device, slot };
    },
    addMmioDevice: () => {},
    addPioDevice: () => {},
    appendCmdline: (f) => cmdline.push(f),
    ...(opts.ioeventfd ? {
      ioEventFd: (addr: number, _len: number, datamatch: number | undefined, onEvent: () => void) => {
        const e = { addr, datamatch, fire: onEvent, closed: false };
        eventfds.push(e);
        return { close: () => { e.closed = true; } };
      },
    } : {}),
  };
  const reg = (base: number, off: number) => {
    const d = new Uint8Array(4);
    bus.read(base + off, d);
    return new DataView(d.buffer).getUint32(0, true);
  };
  return { host, bus, cmdline, irqs, eventfds, reg };
}

test('attaches drives, then NIC-less rng, in slot order with their IRQs and command line', () => {
  const h = fakeHost();
  const set = createVirtioDevices(h.host, {
    drives: [{ drive_id: 'root', path_on_host: disk }, { drive_id: 'data', path_on_host: disk, is_read_only: true, serial: 'S1' }],
    nets: [], rng: true,
  });
  try {
    const slots = [0, 1, 2].map(virtioMmioSlot);
    assert.deepEqual(set.devices.map((x) => [x.kind, x.id, x.base, x.irq]), [
      ['blk', 'root', slots[0]!.base, slots[0]!.irq],
      ['blk', 'data', slots[1]!.base, slots[1]!.irq],
      ['rng', 'rng', slots[2]!.base, slots[2]!.irq],
    ]);
    assert.equal(h.reg(slots[0]!.base, REG.MAGIC), 0x74726976);
    assert.equal(h.reg(slots[0]!.base, REG.DEVICE_ID), 2);
    assert.equal(h.reg(slots[2]!.base, REG.DEVICE_ID), 4);
    assert.deepEqual(h.cmdline, slots.map(virtioMmioCmdline));
    assert.deepEqual([...h.irqs.keys()], slots.map((s) => s.irq));
  } finally {
    set.close();
  }
});

test('ioeventfd is off by default', () => {
  const h = fakeHost({ ioeventfd: true });
  const set = createVirtioDevices(h.host, { drives: [{ drive_id: 'root', path_on_host: disk }], nets: [] }, { ioeventfd: false });
  assert.equal(h.eventfds.length, 0);
  set.close();
});

test('with ioeventfd, one notifier per queue at QUEUE_NOTIFY matching the queue index, closed on close()', () => {
  const h = fakeHost({ ioeventfd: true });
  const set = createVirtioDevices(h.host, { drives: [{ drive_id: 'root', path_on_host: disk }], nets: [], rng: true }, { ioeventfd: true });
  const base = virtioMmioSlot(0).base;
  assert.deepEqual(h.eventfds.map((e) => [e.addr, e.datamatch]), [[base + REG.QUEUE_NOTIFY, 0], [virtioMmioSlot(1).base + REG.QUEUE_NOTIFY, 0]]);
  h.eventfds[0]!.fire(); // before DRIVER_OK: counted, ignored, no throw
  assert.equal(set.devices[0]!.device.metrics().notifications, 1);
  set.close();
  assert.ok(h.eventfds.every((e) => e.closed));
});

test('refuses duplicate or odd ids and missing files, opening nothing', () => {
  const h = fakeHost();
  assert.throws(() => createVirtioDevices(h.host, { drives: [{ drive_id: 'a', path_on_host: disk }, { drive_id: 'a', path_on_host: disk }], nets: [] }), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => createVirtioDevices(h.host, { drives: [{ drive_id: 'a/b', path_on_host: disk }], nets: [] }), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => createVirtioDevices(h.host, { drives: [], nets: [{ iface_id: 'x', host_dev_name: 'bad name!' }] }), { code: 'INVALID_ARGUMENT' });
  assert.deepEqual(h.cmdline, []);
  assert.throws(() => createVirtioDevices(h.host, { drives: [{ drive_id: 'b', path_on_host: path.join(dir, 'missing') }], nets: [] }), { code: 'NOT_FOUND' });
});
