/**
 * virtio-net end to end: guests/virtio-net.c (an ARP + UDP echo responder)
 * runs under the real hangar-vmm on a TAP. The order matters: the test
 * creates a persistent TAP in its own namespace, hangar-vmm attaches to it
 * by name, and only then is the TAP moved into a network namespace the test
 * owns, where a UDP client talks to the guest. No traffic leaves that
 * namespace.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { execFileSync, spawn } from 'node:child_process';
import { buildGuest, guestConfig, guestTestsUnavailable, startVmmConsole, tempDir, vmmApi, type VmmConsoleProcess } from '../helpers/vmm.js';

const isRoot = process.getuid?.() === 0;
const skip = guestTestsUnavailable() ?? (isRoot ? false : 'needs root for TAP and netns');
const NS = `hangar-vnet-e2e-${process.pid}`;
const TAP = `hve${process.pid % 100000}`;
const HOST_IP = '10.213.1.1';
const GUEST_IP = '10.213.1.2';
const GUEST_MAC = '52:54:00:e2:e0:01';
const dir = tempDir('virtio-net-e2e');

let tapCreated = false;
let nsCreated = false;
let vmm: VmmConsoleProcess | null = null;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Removes this test's namespace and TAP, wherever the TAP is now. */
function cleanNetwork(): void {
  if (nsCreated) {
    try { ip('-n', NS, 'link', 'del', TAP); } catch { /* already gone with the VMM's fd */ }
    ip('netns', 'del', NS);
    nsCreated = false;
  }
  if (tapCreated) {
    try { ip('link', 'del', TAP); } catch { /* it was moved into the namespace */ }
    tapCreated = false;
  }
}

after(async () => {
  if (vmm) {
    vmm.kill();
    await vmm.done;
  }
  cleanNetwork();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Runs a UDP client inside the namespace: `count` datagrams, each awaited (up to `waitMs`), then "quit" (unless `quit` is false). */
function udpClient(count: number, quit = true, waitMs = 3000): Promise<{ echoed: number; mismatched: number; rttsUs: number[] }> {
  const script = `
    const s = require('dgram').createSocket('udp4');
    const crypto = require('crypto');
    const res = { echoed: 0, mismatched: 0, rttsUs: [] };
    let pending = null;
    s.on('message', (m) => { if (pending) { const p = pending; pending = null; p(m); } });
    const ask = (buf) => new Promise((resolve) => {
      const t0 = process.hrtime.bigint();
      const timer = setTimeout(() => { pending = null; resolve(null); }, ${waitMs});
      pending = (m) => { clearTimeout(timer); res.rttsUs.push(Number(process.hrtime.bigint() - t0) / 1000); resolve(m); };
      s.send(buf, 7777, '${GUEST_IP}');
    });
    s.bind(0, '${HOST_IP}', async () => {
      for (let i = 0; i < ${count}; i++) {
        const buf = crypto.randomBytes(64 + i * 23);
        const m = await ask(buf);
        if (m && Buffer.compare(m, buf) === 0) res.echoed++; else res.mismatched++;
      }
      if (${quit}) await ask(Buffer.from('quit'));
      console.log(JSON.stringify(res));
      s.close();
    });`;
  return new Promise((resolve, reject) => {
    const c = spawn('ip', ['netns', 'exec', NS, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
    const timer = setTimeout(() => { if (c.exitCode === null) c.kill('SIGKILL'); }, 60_000);
    c.once('exit', (code) => {
      clearTimeout(timer);
      try { resolve(JSON.parse(out)); } catch { reject(new Error(`UDP client exited ${code}: ${out}`)); }
    });
  });
}

/**
 * Who moves the frames: the NIC's I/O thread, woken by ioeventfds and the TAP (the default,
 * src/vmm/virtio/net-io-thread.ts); the vCPU thread that takes the guest's transmit kick, with
 * the device thread receiving (net-fast.ts); or the device thread alone. The same guest must
 * work every way.
 */
const SERVING: Array<[string, Record<string, string>]> = [
  ['the NIC\'s I/O thread', {}],
  ['the vCPU thread', { HANGAR_VIRTIO_NET_IOTHREAD: '0' }],
  ['the device thread', { HANGAR_VIRTIO_NET_FAST: '0' }],
];

/** The echo guest under a fresh hangar-vmm on this test's TAP, the TAP then moved into this test's namespace. */
async function startEchoGuest(env: Record<string, string>): Promise<VmmConsoleProcess> {
  const kernel = buildGuest('virtio-net');
  if (vmm) { vmm.kill(); await vmm.done; vmm = null; }
  cleanNetwork();
  ip('tuntap', 'add', 'dev', TAP, 'mode', 'tap');
  tapCreated = true;
  ip('netns', 'add', NS);
  nsCreated = true;

  vmm = startVmmConsole(guestConfig(kernel, {
    bootArgs: 'vnet.ip=0x0ad50102',
    nets: [{ iface_id: 'eth0', host_dev_name: TAP, guest_mac: GUEST_MAC }],
  }), dir, { apiSock: true, env: { ...process.env, ...env } });
  await vmm.waitFor(/vnet: mac=52:54:00:e2:e0:01 ready/);

  // hangar-vmm holds the TAP now; hand it to the namespace and address it there.
  ip('link', 'set', TAP, 'netns', NS);
  ip('-n', NS, 'addr', 'add', `${HOST_IP}/24`, 'dev', TAP);
  ip('-n', NS, 'link', 'set', TAP, 'up');
  return vmm;
}

/** The NIC's counters in hangar-vmm's GET /metrics. */
async function nicMetrics(): Promise<Record<string, number>> {
  const metrics = await vmmApi(dir, 'GET', '/metrics');
  assert.equal(metrics.status, 200, metrics.body);
  return (JSON.parse(metrics.body) as { vm: { devices: Record<string, Record<string, number>> } }).vm.devices['virtio-net:eth0']!;
}

for (const [where, env] of SERVING) test(`ARP and UDP echo between a namespace and the guest through a TAP — transmit served on ${where}`, { skip }, async () => {
  vmm = await startEchoGuest(env);

  const res = await udpClient(20, false);
  assert.equal(res.echoed, 20, JSON.stringify(res));
  assert.equal(res.mismatched, 0);
  // Who sent the answers: the NIC's counters while the guest still runs.
  const nic = await nicMetrics();
  assert.ok(nic.tx_frames! >= 21, `twenty echoes and at least one ARP answer went out (${JSON.stringify(nic)})`);
  if (env.HANGAR_VIRTIO_NET_FAST === '0') {
    assert.equal(nic.tx_kicks_on_vcpu, 0, 'every transmit kick went to the device thread');
    assert.equal(nic.io_thread_passes, 0);
  } else if (env.HANGAR_VIRTIO_NET_IOTHREAD === '0') {
    assert.ok(nic.tx_kicks_on_vcpu! >= 21, `every transmit kick was served on the vCPU thread (${JSON.stringify(nic)})`);
    assert.equal(nic.io_thread_passes, 0);
    assert.equal(nic.rx_frames_off_device_thread, 0, 'the device thread received');
  } else {
    assert.ok(nic.io_thread_tx_kicks! >= 21, `every transmit kick woke the I/O thread (${JSON.stringify(nic)})`);
    assert.equal(nic.tx_kicks_on_vcpu, 0, 'no transmit kick left the kernel');
    assert.equal(nic.rx_frames_off_device_thread, nic.rx_frames, 'the I/O thread received every frame');
    assert.ok(nic.rx_frames! >= 21, 'twenty datagrams and at least one ARP request came in');
  }

  assert.equal((await udpClient(0)).mismatched, 0);
  const r = await vmm.done;
  vmm = null;
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const m = /vnet: echoed=(\d+) arp=(\d+) other=(\d+)/.exec(r.stdout);
  assert.ok(m, r.stdout);
  assert.equal(Number(m[1]), 21, 'twenty datagrams and the quit');
  assert.ok(Number(m[2]) >= 1, 'the namespace resolved the guest by ARP');
});

test("a paused VM's NIC moves no frame; resumed, the guest answers what waited on the TAP", { skip }, async () => {
  vmm = await startEchoGuest({});
  assert.equal((await udpClient(3, false)).echoed, 3, 'the guest answers before the pause');
  const paused = await vmmApi(dir, 'PUT', '/actions', { action_type: 'Pause' });
  assert.equal(paused.status, 204, paused.body);
  const before = await nicMetrics();
  // A datagram sent while paused: its echo may take as long as the pause lasts.
  const late = udpClient(1, false, 20_000);
  await new Promise((r) => setTimeout(r, 1500));
  const during = await nicMetrics();
  assert.equal(during.rx_frames, before.rx_frames, `nothing was written into the paused guest's memory (${JSON.stringify(during)})`);
  assert.equal(during.tx_frames, before.tx_frames);
  const resumed = await vmmApi(dir, 'PUT', '/actions', { action_type: 'Resume' });
  assert.equal(resumed.status, 204, resumed.body);
  assert.equal((await late).echoed, 1, 'the datagram that waited on the TAP is answered after resume');
  assert.ok((await nicMetrics()).rx_frames > before.rx_frames!);
  assert.equal((await udpClient(0)).mismatched, 0);
  const r = await vmm.done;
  vmm = null;
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
});
