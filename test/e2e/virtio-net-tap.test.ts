/**
 * virtio-net against a real TAP: the device model (driven by the unit-test
 * driver over in-process guest memory) sends a UDP datagram through the TAP
 * into a network namespace this test creates, a UDP echo server inside that
 * namespace answers, and the answer arrives in the device's receive queue.
 * The TAP is opened by us in the root namespace first and moved afterwards,
 * which is the order the VMM needs (the fd keeps working after the move).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { VirtioMmioDevice } from '../../src/vmm/virtio/mmio.js';
import { TapBackend, VirtioNet, parseMac } from '../../src/vmm/virtio/net.js';
import { DATA_BASE, RecordingIrq, TestDriver, TestMemory } from '../helpers/virtio-fixtures.js';

const NS = `hangar-vnet-${process.pid}`;
const TAP = `hvn${process.pid % 100000}`;
const HOST_IP = [10, 213, 0, 1];
const GUEST_IP = [10, 213, 0, 2];
const GUEST_MAC = '52:54:00:ab:cd:01';
const ECHO_PORT = 7777;
const GUEST_PORT = 5555;
const RX = 0;
const TX = 1;
const isRoot = process.getuid?.() === 0;

let nsCreated = false;
let echo: ChildProcess | null = null;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

function checksum(b: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) sum += (b[i]! << 8) | (b[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Ethernet + IPv4 + UDP (checksum 0, allowed for IPv4) around `payload`. */
function udpFrame(dstMac: Uint8Array, srcMac: Uint8Array, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + 20 + 8 + payload.length);
  const dv = new DataView(f.buffer);
  f.set(dstMac, 0);
  f.set(srcMac, 6);
  dv.setUint16(12, 0x0800);
  const iph = f.subarray(14, 34);
  iph[0] = 0x45;
  dv.setUint16(16, 20 + 8 + payload.length);
  iph[8] = 64;
  iph[9] = 17;
  iph.set(GUEST_IP, 12);
  iph.set(HOST_IP, 16);
  dv.setUint16(24, checksum(iph));
  dv.setUint16(34, GUEST_PORT);
  dv.setUint16(36, ECHO_PORT);
  dv.setUint16(38, 8 + payload.length);
  f.set(payload, 42);
  return f;
}

before(async () => {
  if (!isRoot) return;
  ip('netns', 'add', NS);
  nsCreated = true;
});

after(async () => {
  if (echo?.pid !== undefined && echo.exitCode === null) {
    echo.kill('SIGTERM');
    await once(echo, 'exit').catch(() => {});
  }
  if (nsCreated) ip('netns', 'del', NS);
});

test('UDP round trip through a TAP moved into a test namespace', { skip: isRoot ? false : 'needs root for TAP and netns' }, async () => {
  // 1. Open the TAP in our namespace, then move it: the fd stays attached.
  const backend = TapBackend.open(TAP);
  const mem = new TestMemory(4 << 20);
  const net = new VirtioNet({ id: 'eth0', mac: GUEST_MAC }, backend);
  const dev = new VirtioMmioDevice(net, mem, new RecordingIrq());
  try {
    ip('link', 'set', TAP, 'netns', NS);
    ip('-n', NS, 'addr', 'add', `${HOST_IP.join('.')}/24`, 'dev', TAP);
    ip('-n', NS, 'link', 'set', TAP, 'up');
    ip('-n', NS, 'neigh', 'add', GUEST_IP.join('.'), 'lladdr', GUEST_MAC, 'dev', TAP, 'nud', 'permanent');
    const tapMac = parseMac((JSON.parse(ip('-n', NS, '-j', 'link', 'show', TAP)) as Array<{ address: string }>)[0]!.address);

    // 2. A UDP echo server inside the namespace that answers with the payload reversed.
    const script = `const s=require('dgram').createSocket('udp4');s.on('message',(m,r)=>s.send(Buffer.from(m).reverse(),r.port,r.address));s.bind(${ECHO_PORT},'${HOST_IP.join('.')}',()=>console.log('ready'));`;
    echo = spawn('ip', ['netns', 'exec', NS, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      echo!.stdout!.once('data', () => resolve());
      echo!.once('exit', (c) => reject(new Error(`echo server exited ${c}`)));
    });

    // 3. The driver side: both queues, 32 receive buffers of 2 KiB.
    const drv = new TestDriver(dev, mem);
    drv.start(2, 64);
    const rxBuf = (i: number) => DATA_BASE + 0x10000 + i * 0x800;
    const bufOfHead = new Map<number, number>();
    const post = (addr: number) => bufOfHead.set(drv.addChain(RX, [{ addr, len: 0x800, write: true }]), addr);
    for (let i = 0; i < 32; i++) post(rxBuf(i));
    drv.kick(RX);

    const guestMac = parseMac(GUEST_MAC);
    for (let round = 0; round < 3; round++) {
      const payload = new TextEncoder().encode(`hello from hangar, round ${round}`);
      const frame = udpFrame(tapMac, guestMac, payload);
      const txAt = DATA_BASE + round * 0x800;
      mem.bytes.fill(0, txAt, txAt + 12);
      mem.bytes.set(frame, txAt + 12);
      drv.addChain(TX, [{ addr: txAt, len: 12 + frame.length }]);
      drv.kick(TX);
      assert.equal(drv.takeUsed(TX).length, 1);

      // Wait for the echo among whatever the namespace sends (IPv6 router solicitations, ...).
      let answer: string | null = null;
      for (let waited = 0; answer === null && waited < 5000; waited += 10) {
        await sleep(10);
        for (const u of drv.takeUsed(RX)) {
          const addr = bufOfHead.get(u.id)!;
          const f = mem.slice(addr, u.len).subarray(12);
          const dv = new DataView(f.buffer, f.byteOffset, f.byteLength);
          if (f.length >= 42 && dv.getUint16(12) === 0x0800 && f[23] === 17 && dv.getUint16(34) === ECHO_PORT && dv.getUint16(36) === GUEST_PORT) {
            assert.deepEqual([...f.subarray(0, 6)], [...guestMac]);
            answer = new TextDecoder().decode(f.subarray(42, 42 + dv.getUint16(38) - 8));
          }
          // Give the buffer back, as a driver would.
          post(addr);
          drv.kick(RX);
        }
      }
      if (answer === null) console.error('no echo; device metrics', dev.metrics(), ip('-n', NS, '-s', 'link', 'show', TAP));
      assert.equal(answer, new TextDecoder().decode(payload.slice().reverse()));
    }
    const m = dev.metrics();
    assert.equal(m.tx_frames, 3);
    assert.ok(m.rx_frames! >= 3);
    assert.ok(m.rx_wakeups! >= 1, 'frames were picked up by watching the TAP fd, not only on kicks');
    assert.equal(m.broken, 0);
  } finally {
    dev.close();
  }
});
