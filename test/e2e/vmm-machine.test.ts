/**
 * The Machine in-process (no control socket): ioeventfd on an MMIO address
 * takes a guest's stores off the exit path (KVM completes them and signals
 * an eventfd on the device thread), and devices registered through the
 * DeviceHost see the guest's MMIO with the right offsets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../src/common/log.js';
import { buildMachine } from '../../src/vmm/builder.js';
import type { Machine } from '../../src/vmm/machine.js';
import type { MmioDevice } from '../../src/vmm/devices/device.js';
import { VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE } from '../../src/vmm/layout.js';
import { buildGuest, kvmUsable } from '../helpers/vmm.js';

const skip = kvmUsable ? false : 'no usable /dev/kvm';
const log = createLogger('test', 'silent');
const N = 2000;
const SLOT7 = VIRTIO_MMIO_BASE + 7 * VIRTIO_MMIO_SIZE;

async function runExits(setup: (m: Machine) => void): Promise<{ m: Machine; out: string }> {
  let out = '';
  const m = await buildMachine({ vcpus: 1, memBytes: 32 * 2 ** 20, kernel: buildGuest('exits'), cmdline: `console=ttyS0 exits=${N}` }, log, (b) => { out += Buffer.from(b).toString('latin1'); });
  setup(m);
  await m.start();
  const e = await m.exited;
  assert.equal(e.reason, 'poweroff', e.detail);
  return { m, out };
}

test('guest MMIO stores reach a device registered on the MMIO bus, with offsets relative to its base', { skip }, async () => {
  const writes: Array<[number, number]> = [];
  const dev: MmioDevice = {
    name: 'recorder',
    mmioRead(_o, d) { d.fill(0); },
    mmioWrite(o, d) { writes.push([o, new DataView(d.buffer, d.byteOffset, d.byteLength).getUint32(0, true)]); },
    metrics: () => ({ writes: writes.length }),
  };
  const { m } = await runExits((mm) => mm.devices.addMmioDevice(SLOT7, VIRTIO_MMIO_SIZE, dev));
  try {
    assert.equal(writes.length, N);
    assert.deepEqual(writes[0], [0, 0]);
    assert.deepEqual(writes[N - 1], [0, N - 1]);
    assert.equal((m.metrics().devices as Record<string, { writes: number }>).recorder!.writes, N);
  } finally {
    m.close();
  }
});

test('ioeventfd: guest stores complete in KVM and wake the device thread through an eventfd', { skip }, async () => {
  let events = 0;
  let handle: { close(): void } | null = null;
  const { m } = await runExits((mm) => { handle = mm.devices.ioEventFd(SLOT7, 4, undefined, () => { events++; }); });
  try {
    if (handle === null) return; // this host's KVM has no ioeventfd: nothing to check
    await new Promise((r) => setTimeout(r, 50));
    const vcpu = (m.metrics().vcpus as Array<{ mmioExits: number }>)[0]!;
    assert.equal(vcpu.mmioExits, 0, 'no MMIO exit reached user space');
    assert.ok(events >= 1, 'the eventfd was signalled');
  } finally {
    (handle as { close(): void } | null)?.close();
    m.close();
  }
});
