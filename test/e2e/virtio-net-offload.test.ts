/**
 * virtio-net offloads against a real TAP (virtio-net headers on it): the
 * device offers checksum offload and TSO, and a 60 KB TCP segment the driver
 * hands over with a GSO header reaches the kernel as one frame (the TAP's
 * receive counter: one packet of that size), not refused. With
 * HANGAR_VIRTIO_NET_OFFLOAD=0 nothing of that is offered. The namespace is
 * this test's own.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { VirtioMmioDevice } from '../../src/vmm/virtio/mmio.js';
import { TapBackend, VirtioNet, VIRTIO_NET_F, OFFLOAD_FEATURES, parseMac } from '../../src/vmm/virtio/net.js';
import { DATA_BASE, RecordingIrq, TestDriver, TestMemory } from '../helpers/virtio-fixtures.js';

const NS = `hangar-voff-${process.pid}`;
const TAP = `hvo${process.pid % 100000}`;
const HOST_IP = [10, 213, 0, 1];
const GUEST_IP = [10, 213, 0, 2];
const GUEST_MAC = '52:54:00:ab:cd:02';
const RX = 0;
const TX = 1;
const isRoot = process.getuid?.() === 0;
let nsCreated = false;

const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });
const tapRx = (): { packets: number; bytes: number } => {
  const s = (JSON.parse(ip('-n', NS, '-s', '-j', 'link', 'show', TAP)) as Array<{ stats64: { rx: { packets: number; bytes: number } } }>)[0]!.stats64.rx;
  return { packets: s.packets, bytes: s.bytes };
};

/** virtio_net_hdr (12 bytes, little-endian) + Ethernet + IPv4 + TCP (ACK) around `payload`, asking for checksum and TSO. */
function tsoFrame(dstMac: Uint8Array, srcMac: Uint8Array, payload: number, mss: number): Uint8Array {
  const b = new Uint8Array(12 + 14 + 20 + 20 + payload);
  const dv = new DataView(b.buffer);
  b[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
  b[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
  dv.setUint16(2, 14 + 20 + 20, true); // hdr_len
  dv.setUint16(4, mss, true); // gso_size
  dv.setUint16(6, 14 + 20, true); // csum_start: the TCP header
  dv.setUint16(8, 16, true); // csum_offset: TCP's checksum field
  const f = b.subarray(12);
  f.set(dstMac, 0);
  f.set(srcMac, 6);
  dv.setUint16(12 + 12, 0x0800);
  const iph = 12 + 14;
  b[iph] = 0x45;
  dv.setUint16(iph + 2, 20 + 20 + payload);
  b[iph + 8] = 64;
  b[iph + 9] = 6;
  b.set(GUEST_IP, iph + 12);
  b.set(HOST_IP, iph + 16);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += dv.getUint16(iph + i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  dv.setUint16(iph + 10, ~sum & 0xffff);
  const tcp = iph + 20;
  dv.setUint16(tcp, 40000);
  dv.setUint16(tcp + 2, 9);
  dv.setUint32(tcp + 4, 1000);
  dv.setUint32(tcp + 8, 1);
  b[tcp + 12] = 5 << 4;
  b[tcp + 13] = 0x18; // PSH, ACK
  dv.setUint16(tcp + 14, 65535);
  // With NEEDS_CSUM the field holds the pseudo-header sum; the kernel finishes it (the value does not decide acceptance).
  return b;
}

before(() => {
  if (!isRoot) return;
  ip('netns', 'add', NS);
  nsCreated = true;
});

after(() => {
  if (nsCreated) ip('netns', 'del', NS);
});

test('checksum offload and TSO offered on a TAP with virtio-net headers; a 60 KB TCP segment goes out as one frame', { skip: isRoot ? false : 'needs root for TAP and netns' }, () => {
  const backend = TapBackend.open(TAP);
  const mem = new TestMemory(8 << 20);
  const net = new VirtioNet({ id: 'eth0', mac: GUEST_MAC }, backend);
  const dev = new VirtioMmioDevice(net, mem, new RecordingIrq());
  try {
    assert.equal(backend.vnetHdr, true, 'the TAP was opened with virtio-net headers');
    assert.equal(net.features & OFFLOAD_FEATURES, OFFLOAD_FEATURES, 'CSUM, GUEST_CSUM, HOST/GUEST_TSO4/6 offered');
    ip('link', 'set', TAP, 'netns', NS);
    ip('-n', NS, 'addr', 'add', `${HOST_IP.join('.')}/24`, 'dev', TAP);
    ip('-n', NS, 'link', 'set', TAP, 'up');
    const tapMac = parseMac((JSON.parse(ip('-n', NS, '-j', 'link', 'show', TAP)) as Array<{ address: string }>)[0]!.address);

    const drv = new TestDriver(dev, mem);
    drv.start(2, 64);
    assert.ok(dev.state.driverFeatures & (1n << VIRTIO_NET_F.HOST_TSO4));
    for (let i = 0; i < 8; i++) drv.addChain(RX, [{ addr: DATA_BASE + 0x10000 + i * 0x10000, len: 0x10000, write: true }]);
    drv.kick(RX);

    const before = tapRx();
    const frame = tsoFrame(tapMac, parseMac(GUEST_MAC), 60_000, 1448);
    const txAt = DATA_BASE + 0x200000;
    mem.bytes.set(frame, txAt);
    drv.addChain(TX, [{ addr: txAt, len: frame.length }]);
    drv.kick(TX);
    assert.equal(drv.takeUsed(TX).length, 1);
    const m = dev.metrics();
    assert.equal(m.tx_dropped, 0, 'the kernel took the GSO frame (a bad header is refused with EINVAL)');
    assert.equal(m.tx_frames, 1);
    const after = tapRx();
    assert.equal(after.packets - before.packets, 1, 'one frame entered the kernel');
    assert.ok(after.bytes - before.bytes >= 60_000, `the whole 60 KB segment: ${after.bytes - before.bytes} bytes`);
  } finally {
    dev.close();
  }
});

test('HANGAR_VIRTIO_NET_OFFLOAD=0: no virtio-net header, no offloads offered', { skip: isRoot ? false : 'needs root for TAP' }, () => {
  process.env.HANGAR_VIRTIO_NET_OFFLOAD = '0';
  try {
    const backend = TapBackend.open(`${TAP}x`);
    const net = new VirtioNet({ id: 'eth0' }, backend);
    try {
      ip('link', 'set', `${TAP}x`, 'netns', NS);
      assert.equal(backend.vnetHdr, false);
      assert.equal(net.features & OFFLOAD_FEATURES, 0n);
    } finally {
      net.close();
    }
  } finally {
    delete process.env.HANGAR_VIRTIO_NET_OFFLOAD;
  }
});
