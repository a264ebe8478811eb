/**
 * virtio-blk's fast path (src/vmm/virtio/blk-fast.ts): the request queue served by a second
 * VirtioBlock, as a vCPU thread does, over the transport's shared queue state. Here both sides
 * run on one thread; what is checked is the sharing, the batching, the on/off rules, the
 * interrupt decision and the handling of a hostile ring.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { REG, STATUS, VirtioMmioDevice } from '../../src/vmm/virtio/mmio.js';
import { VirtioBlock, VIRTIO_BLK_S, VIRTIO_BLK_T } from '../../src/vmm/virtio/blk.js';
import { BF_LOCK, BlkFastPath, BlkFastPathClient } from '../../src/vmm/virtio/blk-fast.js';
import { VIRTIO_F_EVENT_IDX, VIRTQ_AVAIL_F_NO_INTERRUPT, VirtqueueError } from '../../src/vmm/virtio/queue.js';
import { DATA_BASE, RecordingIrq, TestDriver, TestMemory } from '../helpers/virtio-fixtures.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-virtio-blk-fast-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const DISK_BYTES = 1 << 20;
const NOTIFY_ADDR = 0xd0000000 + REG.QUEUE_NOTIFY;

let n = 0;
function rig() {
  const file = path.join(dir, `disk${n++}.img`);
  const content = randomBytes(DISK_BYTES);
  fs.writeFileSync(file, content);
  const mem = new TestMemory(4 << 20);
  const blk = new VirtioBlock({ id: 'vda', path: file });
  const irq = new RecordingIrq();
  const dev = new VirtioMmioDevice(blk, mem, irq);
  const drv = new TestDriver(dev, mem);
  const share = blk.fastShare(NOTIFY_ADDR);
  assert.ok(share, 'the fast path is on by default');
  const client = new BlkFastPathClient(share, mem);
  /** Posts a 4 KiB read of `sector` into request slot `slot` (no notify). */
  const postRead = (slot: number, sector: number): void => {
    const hdr = DATA_BASE + slot * 0x20;
    const status = DATA_BASE + 0x800 + slot;
    const buf = DATA_BASE + 0x10000 + slot * 0x1000;
    mem.writeU32(hdr, VIRTIO_BLK_T.IN);
    mem.writeU32(hdr + 4, 0);
    mem.writeU64(hdr + 8, BigInt(sector));
    mem.bytes[status] = 0xee;
    drv.addChain(0, [{ addr: hdr, len: 16 }, { addr: buf, len: 4096, write: true }, { addr: status, len: 1, write: true }]);
  };
  const statusOf = (slot: number) => mem.bytes[DATA_BASE + 0x800 + slot]!;
  const dataOf = (slot: number) => Buffer.from(mem.slice(DATA_BASE + 0x10000 + slot * 0x1000, 4096));
  return { content, mem, blk, irq, dev, drv, client, postRead, statusOf, dataOf };
}

test('one notify serves every available request, in the shared ring the device thread sees', () => {
  const r = rig();
  r.drv.start(1, 64);
  for (let s = 0; s < 16; s++) r.postRead(s, s * 8 + 1);
  const res = r.client.notify(0);
  assert.deepEqual(res, { kind: 'served', interrupt: true });
  const used = r.drv.takeUsed(0);
  assert.equal(used.length, 16, 'all 16 requests in one batch');
  for (let s = 0; s < 16; s++) {
    assert.equal(r.statusOf(s), VIRTIO_BLK_S.OK);
    assert.ok(r.dataOf(s).equals(r.content.subarray((s * 8 + 1) * 512, (s * 8 + 1) * 512 + 4096)), `slot ${s} holds its sectors`);
  }
  // The device thread's view of the queue moved with it (snapshots read it there).
  const snap = r.dev.snapshot();
  assert.equal(snap.queues[0]!.lastAvail, 16);
  assert.equal(snap.queues[0]!.usedIdx, 16);
  // Counters are shared too, and the transport counts the notify.
  const m = r.dev.metrics();
  assert.equal(m.read_requests, 16);
  assert.equal(m.notifications, 1);
  // A device-thread notify afterwards continues from the same position.
  r.postRead(0, 5);
  r.drv.kick(0);
  assert.equal(r.drv.takeUsed(0).length, 1);
  assert.equal(r.dev.snapshot().queues[0]!.lastAvail, 17);
  r.dev.close();
});

test('the driver\'s NO_INTERRUPT flag suppresses the interrupt; an empty notify asks for none', () => {
  const r = rig();
  r.drv.start(1, 16, (f) => f & ~(1n << VIRTIO_F_EVENT_IDX)); // the flag counts only without EVENT_IDX
  r.mem.writeU16(r.drv.queues[0]!.avail, VIRTQ_AVAIL_F_NO_INTERRUPT);
  r.postRead(0, 0);
  assert.deepEqual(r.client.notify(0), { kind: 'served', interrupt: false });
  assert.equal(r.dev.metrics().suppressed_interrupts, 1);
  assert.deepEqual(r.client.notify(0), { kind: 'served', interrupt: false }, 'nothing new: nothing to tell');
  r.dev.close();
});

test('off until DRIVER_OK, off again after a reset and after close: the notify is forwarded', () => {
  const r = rig();
  assert.equal(r.blk.fast!.on, false);
  assert.deepEqual(r.client.notify(0), { kind: 'forward' });
  r.drv.start(1, 16);
  assert.equal(r.blk.fast!.on, true);
  assert.deepEqual(r.client.notify(1), { kind: 'forward' }, 'another queue index goes to the device thread');
  r.drv.write(REG.STATUS, 0);
  assert.equal(r.blk.fast!.on, false);
  assert.deepEqual(r.client.notify(0), { kind: 'forward' });
  r.drv.start(1, 16);
  r.postRead(0, 0);
  assert.equal(r.client.notify(0).kind, 'served');
  r.dev.close();
  assert.deepEqual(r.client.notify(0), { kind: 'forward' });
  assert.equal(Atomics.load(r.blk.fast!.control, BF_LOCK), 0, 'the lock is free');
});

test('a hostile ring: the fast path stops at once and reports; the device thread then marks the device broken', () => {
  const r = rig();
  r.drv.start(1, 16);
  // A descriptor pointing far outside guest RAM.
  r.drv.writeDesc(0, 0, { addr: 1n << 40n, len: 4096, flags: 0, next: 0 });
  r.drv.publish(0, 0);
  const res = r.client.notify(0);
  assert.equal(res.kind, 'failed');
  assert.equal(res.kind === 'failed' && res.details.reason, 'buffer-outside-memory');
  assert.equal(r.blk.fast!.on, false, 'no further request is served on the vCPU thread');
  assert.deepEqual(r.client.notify(0), { kind: 'forward' });
  // What the runner does with the message:
  if (res.kind === 'failed') r.dev.fail(new VirtqueueError(res.message, res.details));
  assert.ok(r.dev.broken);
  assert.ok(r.drv.read(REG.STATUS) & STATUS.DEVICE_NEEDS_RESET);
  assert.equal(r.dev.metrics().device_errors, 1);
  r.dev.close();
});

test('fastPathUsed raises the used-buffer interrupt only while the device runs', () => {
  const r = rig();
  r.drv.start(1, 16);
  r.dev.fastPathUsed();
  assert.equal(r.irq.level, true);
  assert.equal(r.drv.ackInterrupts() & 1, 1);
  assert.equal(r.irq.level, false);
  r.drv.write(REG.STATUS, 0);
  r.dev.fastPathUsed();
  assert.equal(r.irq.level, false);
  r.dev.close();
});

test('the device-thread lock is reentrant and always released', () => {
  const f = new BlkFastPath();
  f.acquire();
  f.acquire();
  assert.equal(Atomics.load(f.control, BF_LOCK), 1);
  f.release();
  assert.equal(Atomics.load(f.control, BF_LOCK), 1, 'still held by the outer acquire');
  f.release();
  assert.equal(Atomics.load(f.control, BF_LOCK), 0);
  assert.throws(() => f.release());
});

test('HANGAR_VIRTIO_BLK_FAST=0 turns the fast path off', () => {
  const file = path.join(dir, 'off.img');
  fs.writeFileSync(file, Buffer.alloc(4096));
  process.env.HANGAR_VIRTIO_BLK_FAST = '0';
  try {
    const blk = new VirtioBlock({ id: 'vdb', path: file });
    assert.equal(blk.fast, undefined);
    assert.equal(blk.fastShare(NOTIFY_ADDR), undefined);
    blk.close();
  } finally {
    delete process.env.HANGAR_VIRTIO_BLK_FAST;
  }
});
