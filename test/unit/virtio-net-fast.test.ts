/**
 * virtio-net's transmit fast path (src/vmm/virtio/net-fast.ts): the transmit queue served by
 * the client a vCPU thread holds, over the transport's shared queue state, into the NIC's fd.
 * The fd here is a FIFO opened read/write (frames written with writev arrive back to back),
 * standing in for the TAP. Both sides run on one thread; what is checked is the sharing, the
 * on/off rules, the interrupt decision (raised through the callback, under the lock) and the
 * handling of a hostile ring.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { REG, STATUS, VirtioMmioDevice } from '../../src/vmm/virtio/mmio.js';
import { TapBackend, VirtioNet, VIRTIO_NET_HDR_BYTES } from '../../src/vmm/virtio/net.js';
import { BF_HOLD, NetFastPathClient } from '../../src/vmm/virtio/net-fast.js';
import { BF_LOCK } from '../../src/vmm/virtio/queue-fast-path.js';
import { VIRTIO_F_EVENT_IDX, VirtqueueError } from '../../src/vmm/virtio/queue.js';
import { DATA_BASE, RecordingIrq, TestDriver, TestMemory } from '../helpers/virtio-fixtures.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-virtio-net-fast-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const NOTIFY_ADDR = 0xd0001000 + REG.QUEUE_NOTIFY;
const RX = 0;
const TX = 1;

let n = 0;
function rig() {
  const fifo = path.join(dir, `tap${n++}`);
  execFileSync('mkfifo', [fifo]);
  // O_RDWR on a FIFO never blocks on Linux; reads of an empty one fail with EAGAIN.
  const fd = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  const mem = new TestMemory(4 << 20);
  const net = new VirtioNet({ id: 'eth0', mac: '52:54:00:12:34:56' }, new TapBackend('fifo', fd));
  const irq = new RecordingIrq();
  const dev = new VirtioMmioDevice(net, mem, irq);
  const drv = new TestDriver(dev, mem);
  const share = net.fastShare(NOTIFY_ADDR);
  assert.ok(share, 'the fast path is on by default for a TAP');
  const client = new NetFastPathClient(share, mem);
  let raised = 0;
  let lockHeldAtRaise = true;
  const raise = (): void => {
    raised++;
    lockHeldAtRaise &&= Atomics.load(net.fast!.control, BF_LOCK) === 1;
  };
  /** Puts a frame of `len` bytes (after the 12-byte header) into transmit slot `slot` (no notify). */
  const postFrame = (slot: number, len: number, fill: number): Buffer => {
    const at = DATA_BASE + slot * 0x1000;
    const frame = Buffer.alloc(len, fill);
    frame.writeUInt16BE(slot, 0);
    mem.bytes.fill(0, at, at + VIRTIO_NET_HDR_BYTES);
    mem.bytes.set(frame, at + VIRTIO_NET_HDR_BYTES);
    // Header and frame in two descriptors, as Linux often sends them.
    drv.addChain(TX, [{ addr: at, len: VIRTIO_NET_HDR_BYTES }, { addr: at + VIRTIO_NET_HDR_BYTES, len }]);
    return frame;
  };
  const wire = (): Buffer => {
    const b = Buffer.alloc(1 << 16);
    try {
      return b.subarray(0, fs.readSync(fd, b));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return Buffer.alloc(0);
      throw e;
    }
  };
  return { mem, net, irq, dev, drv, client, raise, raised: () => raised, lockHeldAtRaise: () => lockHeldAtRaise, postFrame, wire };
}

test('one transmit kick sends every available frame from the vCPU side, in the ring the device thread sees', () => {
  const r = rig();
  r.drv.start(2, 64);
  const frames = [r.postFrame(0, 60, 0xa1), r.postFrame(1, 1514, 0xb2), r.postFrame(2, 300, 0xc3)];
  assert.deepEqual(r.client.notify(TX, r.raise), { kind: 'served', interrupt: false }, 'raised here, nothing left for the device thread');
  assert.equal(r.raised(), 1, 'one interrupt for the batch');
  assert.ok(r.lockHeldAtRaise(), 'the interrupt goes up under the queue lock');
  assert.deepEqual(r.wire(), Buffer.concat(frames), 'the frames, without their headers, in order');
  const used = r.drv.takeUsed(TX);
  assert.equal(used.length, 3);
  assert.ok(used.every((u) => u.len === 0), 'transmit chains come back with nothing written');
  // The device thread's view moved with it, and the counters are shared.
  assert.equal(r.dev.snapshot().queues[TX]!.lastAvail, 3);
  const m = r.dev.metrics();
  assert.equal(m.tx_frames, 3);
  assert.equal(m.tx_bytes, 60 + 1514 + 300);
  assert.equal(m.tx_kicks_on_vcpu, 1);
  assert.equal(m.notifications, 1);
  // A device-thread kick afterwards continues from the same position.
  const f = r.postFrame(3, 100, 0xd4);
  r.drv.kick(TX);
  assert.deepEqual(r.wire(), f);
  assert.equal(r.drv.takeUsed(TX).length, 1);
  assert.equal(r.dev.metrics().tx_frames, 4);
  r.dev.close();
});

test('without a way to raise it here, the interrupt is left to the device thread', () => {
  const r = rig();
  r.drv.start(2, 16);
  r.postFrame(0, 60, 1);
  assert.deepEqual(r.client.notify(TX), { kind: 'served', interrupt: true });
  assert.equal(r.irq.level, false, 'nothing raised yet');
  r.dev.fastPathUsed(); // what the runner does with the hand-off
  assert.equal(r.irq.level, true);
  r.dev.close();
});

test('EVENT_IDX: a driver that asked to hear later gets no interrupt now', () => {
  const r = rig();
  r.drv.start(2, 16, (f) => f | (1n << VIRTIO_F_EVENT_IDX));
  // used_event (after the available ring) = 5: interrupt only once the used index passes 5.
  const q = r.drv.queues[TX]!;
  r.mem.writeU16(q.avail + 4 + 2 * q.size, 5);
  r.postFrame(0, 60, 1);
  assert.deepEqual(r.client.notify(TX, r.raise), { kind: 'served', interrupt: false });
  assert.equal(r.raised(), 0);
  assert.equal(r.dev.metrics().suppressed_interrupts, 1);
  for (let s = 1; s <= 5; s++) r.postFrame(s, 60, s);
  r.client.notify(TX, r.raise);
  assert.equal(r.raised(), 1, 'used index 6 passed used_event 5');
  r.dev.close();
});

test('the receive queue, and every kick before DRIVER_OK or after a reset or close, go to the device thread', () => {
  const r = rig();
  assert.equal(r.net.fast!.on, false);
  assert.deepEqual(r.client.notify(TX, r.raise), { kind: 'forward' });
  r.drv.start(2, 16);
  assert.equal(r.net.fast!.on, true);
  assert.deepEqual(r.client.notify(RX, r.raise), { kind: 'forward' }, 'new receive buffers are the device thread\'s');
  r.drv.write(REG.STATUS, 0);
  assert.equal(r.net.fast!.on, false);
  assert.deepEqual(r.client.notify(TX, r.raise), { kind: 'forward' });
  r.drv.start(2, 16);
  r.postFrame(0, 60, 1);
  assert.equal(r.client.notify(TX, r.raise).kind, 'served');
  r.dev.close();
  assert.deepEqual(r.client.notify(TX, r.raise), { kind: 'forward' }, 'never a write to a closed fd');
  assert.equal(Atomics.load(r.net.fast!.control, BF_LOCK), 0, 'the lock is free');
});

test('a hostile transmit ring: the fast path stops at once and reports; the device thread marks the device broken', () => {
  const r = rig();
  r.drv.start(2, 16);
  r.drv.writeDesc(TX, 0, { addr: 1n << 40n, len: 1000, flags: 0, next: 0 });
  r.drv.publish(TX, 0);
  const res = r.client.notify(TX, r.raise);
  assert.equal(res.kind, 'failed');
  assert.equal(res.kind === 'failed' && res.details.reason, 'buffer-outside-memory');
  assert.equal(r.net.fast!.on, false);
  assert.equal(r.raised(), 0);
  assert.deepEqual(r.client.notify(TX, r.raise), { kind: 'forward' });
  if (res.kind === 'failed') r.dev.fail(new VirtqueueError(res.message, res.details));
  assert.ok(r.dev.broken);
  assert.ok(r.drv.read(REG.STATUS) & STATUS.DEVICE_NEEDS_RESET);
  assert.equal(r.wire().length, 0, 'nothing reached the wire');
  r.dev.close();
});

test('HANGAR_VIRTIO_NET_FAST=0 turns the fast path off; a backend that is not a TAP never has one', () => {
  process.env.HANGAR_VIRTIO_NET_FAST = '0';
  try {
    const fd = fs.openSync(path.join(dir, 'plain'), 'w');
    const net = new VirtioNet({ id: 'eth1' }, new TapBackend('x', fd));
    assert.equal(net.fast, undefined);
    assert.equal(net.fastShare(NOTIFY_ADDR), undefined);
    net.close();
  } finally {
    delete process.env.HANGAR_VIRTIO_NET_FAST;
  }
  const fake = { recv: () => null, send: () => true, watch: () => {}, unwatch: () => {}, close: () => {} };
  const net = new VirtioNet({ id: 'eth2' }, fake);
  assert.equal(net.fastShare(NOTIFY_ADDR), undefined);
});

test("an I/O thread's pass transmits and receives what waits on the TAP: one interrupt, shared counters", () => {
  // The FIFO hands back what was written to it: the frame a pass sends is what waits to be
  // received (one frame per pass: a FIFO keeps no frame boundaries). Without EVENT_IDX, so the
  // driver wants every interrupt.
  const r = rig();
  r.drv.start(2, 64, (f) => f & ~(1n << VIRTIO_F_EVENT_IDX));
  const rxAt = DATA_BASE + 0x80000;
  for (let i = 0; i < 2; i++) r.drv.addChain(RX, [{ addr: rxAt + i * 0x1000, len: 2048, write: true }]);
  r.drv.kick(RX); // (on the device thread: nothing waits yet)
  for (const [i, len] of [60, 700].entries()) {
    const f = r.postFrame(i, len, 0xa0 + i);
    // The second pass takes the last buffer: the driver is out of them (a kick is armed).
    assert.deepEqual(r.client.serve(r.raise), { kind: 'served', interrupt: false, outOfBuffers: i === 1 });
    assert.equal(r.raised(), i + 1, 'one interrupt for the transmitted and the received chain');
    assert.ok(r.lockHeldAtRaise());
    assert.equal(r.drv.takeUsed(TX).length, 1);
    const rx = r.drv.takeUsed(RX);
    assert.deepEqual(rx.map((u) => u.len), [VIRTIO_NET_HDR_BYTES + len], 'the frame behind its virtio-net header');
    const at = rxAt + rx[0]!.id * 0x1000;
    assert.deepEqual(Buffer.from(r.mem.bytes.subarray(at + VIRTIO_NET_HDR_BYTES, at + VIRTIO_NET_HDR_BYTES + len)), f);
    assert.equal(r.mem.bytes[at + 10], 1, 'num_buffers = 1');
  }
  assert.equal(r.wire().length, 0, 'nothing left on the TAP');
  let m = r.dev.metrics();
  assert.equal(m.rx_frames, 2);
  assert.equal(m.rx_frames_off_device_thread, 2);
  assert.equal(m.rx_bytes, 760);
  // No buffers left: the next frame waits (the thread stops watching the TAP meanwhile), and
  // the device thread delivers it once the driver posts one (same ring position).
  r.postFrame(2, 90, 0xc3);
  assert.equal(r.client.serve(r.raise).outOfBuffers, true);
  assert.equal(r.drv.takeUsed(RX).length, 0);
  r.drv.addChain(RX, [{ addr: rxAt + 0x10000, len: 2048, write: true }]);
  r.drv.kick(RX);
  assert.deepEqual(r.drv.takeUsed(RX).map((u) => u.len), [102], 'the device thread delivers the one that waited');
  m = r.dev.metrics();
  assert.equal(m.rx_frames, 3);
  assert.equal(m.rx_frames_off_device_thread, 2);
  r.dev.close();
});

test('a transmit kick on the vCPU thread receives nothing (the device thread or the I/O thread does)', () => {
  const r = rig();
  r.drv.start(2, 64);
  r.drv.addChain(RX, [{ addr: DATA_BASE + 0x80000, len: 2048, write: true }]);
  r.drv.kick(RX);
  const f = r.postFrame(0, 60, 0xa1);
  r.client.notify(TX, r.raise);
  assert.equal(r.drv.takeUsed(RX).length, 0, 'nothing received on the vCPU side');
  assert.deepEqual(r.wire(), f, 'the frame waits on the TAP');
  r.dev.close();
});

test('an I/O thread leaves the queues alone while the device is off or the machine is held', () => {
  const r = rig();
  assert.deepEqual(r.client.serve(r.raise), { kind: 'forward' }, 'before DRIVER_OK');
  r.drv.start(2, 16);
  r.postFrame(0, 60, 1);
  Atomics.store(r.net.fast!.control, BF_HOLD, 1);
  assert.deepEqual(r.client.serve(r.raise), { kind: 'forward' }, 'held: a paused machine');
  assert.equal(r.wire().length, 0, 'nothing sent while held');
  Atomics.store(r.net.fast!.control, BF_HOLD, 0);
  assert.equal(r.client.serve(r.raise).kind, 'served');
  assert.equal(r.wire().length, 60, 'sent once let go');
  r.dev.close();
  assert.deepEqual(r.client.serve(r.raise), { kind: 'forward' }, 'never a write to a closed fd');
});
