import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createVirtioDevices } from '../../src/vmm/virtio/index.js';
import { REG } from '../../src/vmm/virtio/mmio.js';
import { virtioMmioSlot } from '../../src/vmm/layout.js';
import { RecordingIrq, TestMemory } from './virtio-fixtures.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-virtio-factory-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const disk = path.join(dir, 'a.img');
fs.writeFileSync(disk, Buffer.alloc(1 << 20));

const slots = [0, 1, 2].map(virtioMmioSlot);
const deps = () => {
  const irqs = new Map<number, RecordingIrq>();
  return { memory: new TestMemory(1 << 20), slots, irq: (gsi: number) => { const l = new RecordingIrq(gsi); irqs.set(gsi, l); return l; }, irqs };
};

function reg(dev: { mmioRead(o: number, d: Uint8Array): void }, off: number): number {
  const d = new Uint8Array(4);
  dev.mmioRead(off, d);
  return new DataView(d.buffer).getUint32(0, true);
}

test('places drives then rng in layout slots, with their IRQs and a Linux command line', () => {
  const d = deps();
  const set = createVirtioDevices({ drives: [{ id: 'root', path: disk }, { id: 'data', path: disk, readOnly: true }], nics: [], rng: true }, d);
  try {
    assert.deepEqual(set.devices.map((x) => [x.kind, x.id, x.slot.base, x.slot.irq]), [
      ['blk', 'root', slots[0]!.base, slots[0]!.irq],
      ['blk', 'data', slots[1]!.base, slots[1]!.irq],
      ['rng', 'rng', slots[2]!.base, slots[2]!.irq],
    ]);
    assert.deepEqual([...d.irqs.keys()], slots.map((s) => s.irq));
    assert.equal(reg(set.devices[0]!.device, REG.DEVICE_ID), 2);
    assert.equal(reg(set.devices[2]!.device, REG.DEVICE_ID), 4);
    assert.equal(set.cmdline, slots.map((s) => `virtio_mmio.device=4K@0x${s.base.toString(16)}:${s.irq}`).join(' '));
  } finally {
    set.close();
  }
});

test('refuses too many devices, duplicate or odd ids, and missing files, as a whole', () => {
  const d = deps();
  assert.throws(() => createVirtioDevices({ drives: [1, 2, 3].map((i) => ({ id: `d${i}`, path: disk })), nics: [], rng: true }, d), { code: 'RESOURCE_EXHAUSTED' });
  assert.throws(() => createVirtioDevices({ drives: [{ id: 'a', path: disk }, { id: 'a', path: disk }], nics: [] }, d), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => createVirtioDevices({ drives: [{ id: 'a/b', path: disk }], nics: [] }, d), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => createVirtioDevices({ drives: [{ id: 'a', path: disk }, { id: 'b', path: path.join(dir, 'missing') }], nics: [] }, d), { code: 'NOT_FOUND' });
});
