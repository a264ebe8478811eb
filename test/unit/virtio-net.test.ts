import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { VirtioMmioDevice, REG, STATUS } from '../../src/vmm/virtio/mmio.js';
import { VirtioNet, VIRTIO_NET_F, VIRTIO_NET_HDR_BYTES, parseMac, formatMac, type FrameBackend } from '../../src/vmm/virtio/net.js';
import { DATA_BASE, RecordingIrq, TestDriver, TestMemory } from '../helpers/virtio-fixtures.js';

/** Frames in and out of memory, and a watch callback the test fires by hand. */
class FakeBackend implements FrameBackend {
  inbox: Uint8Array[] = [];
  sent: Buffer[] = [];
  onReadable: (() => void) | null = null;
  watches = 0;
  closed = false;
  recv(buf: Uint8Array): number | null {
    const f = this.inbox.shift();
    if (!f) return null;
    buf.set(f);
    return f.length;
  }
  send(bufs: Uint8Array[]): boolean {
    this.sent.push(Buffer.concat(bufs));
    return true;
  }
  watch(cb: () => void): void {
    this.watches++;
    this.onReadable = cb;
  }
  unwatch(): void {
    this.onReadable = null;
  }
  close(): void {
    this.closed = true;
  }
  /** A frame arrives from the wire. */
  deliver(f: Uint8Array): void {
    this.inbox.push(f);
    this.onReadable?.();
  }
}

function rig() {
  const mem = new TestMemory(4 << 20);
  const backend = new FakeBackend();
  const net = new VirtioNet({ id: 'eth0', mac: '52:54:00:12:34:56' }, backend);
  const dev = new VirtioMmioDevice(net, mem, new RecordingIrq());
  const drv = new TestDriver(dev, mem);
  return { mem, backend, net, dev, drv };
}

const RX = 0;
const TX = 1;

test('MAC and link status in config space, MAC and STATUS features offered', () => {
  const { drv } = rig();
  assert.equal(formatMac(drv.readConfig(0, 6)), '52:54:00:12:34:56');
  assert.equal(new DataView(drv.readConfig(6, 2).buffer).getUint16(0, true), 1);
  const f = drv.deviceFeatures();
  assert.ok(f & (1n << VIRTIO_NET_F.MAC));
  assert.ok(f & (1n << VIRTIO_NET_F.STATUS));
});

test('transmit strips the 12-byte header and gathers the frame from several descriptors', () => {
  const { drv, backend, mem, dev } = rig();
  drv.start(2, 16);
  const frame = randomBytes(100);
  mem.bytes.fill(0, DATA_BASE, DATA_BASE + 12);
  mem.bytes.set(frame.subarray(0, 30), DATA_BASE + 12); // header and start of the frame share a buffer
  mem.bytes.set(frame.subarray(30), DATA_BASE + 0x1000);
  drv.addChain(TX, [{ addr: DATA_BASE, len: 12 + 30 }, { addr: DATA_BASE + 0x1000, len: 70 }]);
  drv.kick(TX);
  assert.equal(backend.sent.length, 1);
  assert.ok(backend.sent[0]!.equals(frame));
  assert.deepEqual(drv.takeUsed(TX).map((u) => u.len), [0]);
  assert.equal(dev.metrics().tx_frames, 1);
});

test('a transmit chain shorter than the header is counted and returned, not sent', () => {
  const { drv, backend, dev } = rig();
  drv.start(2, 16);
  drv.addChain(TX, [{ addr: DATA_BASE, len: 8 }]);
  drv.kick(TX);
  assert.equal(backend.sent.length, 0);
  assert.equal(drv.takeUsed(TX).length, 1);
  assert.equal(dev.metrics().tx_malformed, 1);
  assert.equal(dev.metrics().broken, 0);
});

test('receive writes header (num_buffers 1) then the frame; stalls without buffers and resumes on kick', () => {
  const { drv, backend, mem, dev } = rig();
  drv.start(2, 16);
  assert.equal(backend.watches, 1, 'watching once the receive queue is ready');
  const bufA = DATA_BASE;
  drv.addChain(RX, [{ addr: bufA, len: 1526 + 12, write: true }]);
  drv.kick(RX);
  const f1 = randomBytes(60);
  backend.deliver(f1);
  const used = drv.takeUsed(RX);
  assert.deepEqual(used.map((u) => u.len), [VIRTIO_NET_HDR_BYTES + 60]);
  assert.deepEqual([...mem.slice(bufA, 12)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
  assert.ok(Buffer.from(mem.slice(bufA + 12, 60)).equals(f1));
  // No buffers left: the frame waits in the backend and the device stops watching.
  const f2 = randomBytes(70);
  backend.deliver(f2);
  assert.equal(backend.inbox.length, 1);
  assert.equal(backend.onReadable, null);
  assert.equal(dev.metrics().rx_stalls, 1);
  // Posting a buffer and kicking picks the frame up.
  drv.addChain(RX, [{ addr: bufA + 0x1000, len: 12, write: true }, { addr: bufA + 0x2000, len: 1514, write: true }]);
  drv.kick(RX);
  assert.deepEqual(drv.takeUsed(RX).map((u) => u.len), [12 + 70]);
  assert.ok(Buffer.from(mem.slice(bufA + 0x2000, 70)).equals(f2));
  assert.notEqual(backend.onReadable, null, 'watching again');
});

test('a receive buffer too small for the frame is returned empty and the frame dropped', () => {
  const { drv, backend, dev } = rig();
  drv.start(2, 16);
  drv.addChain(RX, [{ addr: DATA_BASE, len: 40, write: true }]);
  drv.kick(RX);
  backend.deliver(randomBytes(100));
  assert.deepEqual(drv.takeUsed(RX).map((u) => u.len), [0]);
  assert.equal(dev.metrics().rx_dropped, 1);
});

test('a hostile receive chain found from the event loop breaks the device and stops watching', () => {
  const { drv, backend, dev } = rig();
  drv.start(2, 16);
  drv.addChain(RX, [{ addr: (4 << 20) - 10, len: 1600, write: true }]);
  backend.deliver(randomBytes(60)); // no kick: the frame arrival finds the chain
  assert.ok(drv.read(REG.STATUS) & STATUS.DEVICE_NEEDS_RESET);
  assert.equal(dev.lastError?.details?.reason, 'buffer-outside-memory');
  assert.equal(backend.onReadable, null);
});

test('close releases the backend', () => {
  const { dev, backend } = rig();
  dev.close();
  assert.equal(backend.closed, true);
});

test('MAC parsing accepts unicast colon form only', () => {
  assert.deepEqual([...parseMac('02:00:00:aa:BB:cc')], [2, 0, 0, 0xaa, 0xbb, 0xcc]);
  for (const bad of ['01:00:5e:00:00:01', '52:54:00:12:34', '52-54-00-12-34-56', 'zz:54:00:12:34:56', '']) {
    assert.throws(() => parseMac(bad), { code: 'INVALID_ARGUMENT' }, bad);
  }
});

test('EVENT_IDX receive: no kick asked for while buffers last, one asked for (avail_event) once they run out', () => {
  const { drv, backend, mem } = rig();
  drv.start(2, 16); // everything offered, EVENT_IDX included
  const q = drv.queues[RX]!;
  const availEvent = (): number => mem.readU16(q.used + 4 + 8 * q.size);
  for (let i = 0; i < 4; i++) drv.addChain(RX, [{ addr: DATA_BASE + i * 0x1000, len: 2048, write: true }]);
  drv.kick(RX);
  const armedAt = availEvent();
  backend.deliver(randomBytes(60));
  backend.deliver(randomBytes(60));
  assert.equal(drv.takeUsed(RX).length, 2);
  assert.equal(availEvent(), armedAt, 'two of four buffers used: the driver is not asked to kick for its refills');
  backend.deliver(randomBytes(60));
  backend.deliver(randomBytes(60));
  backend.deliver(randomBytes(60));
  assert.equal(drv.takeUsed(RX).length, 2);
  assert.equal(availEvent(), 4, 'all four used: a kick is asked for at the next buffer posted');
  assert.equal(backend.inbox.length, 1, 'the fifth frame waits for a buffer');
  drv.addChain(RX, [{ addr: DATA_BASE + 0x8000, len: 2048, write: true }]);
  drv.kick(RX);
  assert.equal(drv.takeUsed(RX).length, 1);
});
