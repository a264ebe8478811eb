/**
 * Network benchmark (QEMU engine, tiny guest on a Hangar nat network), all
 * inside network namespaces made here, like test/e2e/networks.test.ts:
 * launch → shell prompt → DHCP lease, ping RTT guest ↔ gateway, TCP
 * throughput guest → host (busybox nc in the guest into a node socket; host →
 * guest is left out: busybox nc in the guest did not give a trustworthy
 * end-of-transfer), and iperf3 over the same bridge between two
 * namespaces (no VM) as the baseline. Writes the 'networks' section of
 * docs/benchmarks.md.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { startDaemon, waitOperation, ConsoleSession, type TestDaemon } from '../test/helpers/daemon.js';
import { TINY_PROMPT } from '../src/host/images/tiny.js';
import { writeSection } from './report.js';

const MiB = 1024 * 1024;
const BYTES = Number(process.env.BENCH_NET_MIB ?? 32) * MiB;
const tag = `${process.pid % 100000}`;
const NS = `hgbn-d${tag}`;
const PEER = `hgbn-p${tag}`;
const run = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const inNs = (ns: string, ...args: string[]): string => run('ip', ['netns', 'exec', ns, ...args]);

/** A node TCP sink in the daemon's namespace on addr:port; resolves with bytes/second of the first connection. */
function sinkIn(addr: string, port: number): { ready: Promise<void>; result: Promise<number> } {
  const script = `const s = require('net').createServer((c) => { let n = 0, t0 = 0; c.on('data', (b) => { if (!t0) t0 = process.hrtime.bigint(); n += b.length; });
    c.on('end', () => { const dt = Number(process.hrtime.bigint() - t0) / 1e9; console.log(JSON.stringify({ n, dt })); process.exit(0); }); }).listen(${port}, '${addr}', () => console.log('ready'));`;
  const p = spawn('ip', ['netns', 'exec', NS, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  let onReady: () => void;
  const ready = new Promise<void>((r) => { onReady = r; });
  const result = new Promise<number>((resolve, reject) => {
    p.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('ready')) onReady();
      const m = /\{.*\}/.exec(out);
      if (m) { const r = JSON.parse(m[0]) as { n: number; dt: number }; resolve(r.n / r.dt); }
    });
    p.on('exit', () => reject(new Error(`sink ended: ${out}`)));
  });
  return { ready, result };
}

const mbit = (bps: number): string => `${((bps * 8) / 1e6).toFixed(0)} Mbit/s`;

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the network benchmark needs root (namespaces, bridges)');
  run('ip', ['netns', 'add', NS]);
  inNs(NS, 'ip', 'link', 'set', 'lo', 'up');
  let d: TestDaemon | null = null;
  const dnsmasq: number[] = [];
  try {
    d = await startDaemon({ netns: NS });
    const lan = (await d.request('POST', '/1.0/networks', { name: 'bench' })).body.metadata;
    dnsmasq.push(lan.status.dnsmasqPid);
    const gw: string = lan.gateway;

    // Launch → prompt → lease.
    const t0 = performance.now();
    const op = await waitOperation(d, await d.request('POST', '/1.0/vms', { name: 'nb', image: 'tiny', memory: '256M', network: 'bench' }));
    if (op.status !== 'success') throw new Error(JSON.stringify(op.error));
    const con = await ConsoleSession.open(d, 'nb');
    await con.waitForPrompt(TINY_PROMPT);
    const tPrompt = performance.now() - t0;
    await con.run(`printf '#!/bin/sh\\n[ "$1" = bound ] && ip addr add $ip/$mask dev $interface && ip route add default via $router\\nexit 0\\n' > /tmp/u.sh; chmod +x /tmp/u.sh`);
    const tDhcp0 = performance.now();
    const got = await con.run('ip link set eth0 up; udhcpc -i eth0 -n -q -t 15 -T 1 -s /tmp/u.sh', 60_000);
    const tLease = performance.now();
    const vmIp = /lease of (\S+) obtained/.exec(got)?.[1];
    if (!vmIp) throw new Error(`no lease: ${got}`);

    // RTT guest → gateway and host → guest.
    const pingG = await con.run(`ping -c 20 -i 0.2 ${gw}`, 60_000);
    const rttG = /min\/avg\/max = [\d.]+\/([\d.]+)\//.exec(pingG)?.[1] ?? '?';
    // busybox ping on the host side too (iputils may be absent), at its fixed 1 s interval.
    const pingH = spawnSync('ip', ['netns', 'exec', NS, 'busybox', 'ping', '-c', '10', vmIp], { encoding: 'utf8' }).stdout;
    const rttH = /min\/avg\/max = [\d.]+\/([\d.]+)\//.exec(pingH)?.[1] ?? '?';

    // TCP guest → host: busybox nc in the guest into a node sink on the gateway.
    const sink = sinkIn(gw, 5001);
    await sink.ready;
    void con.run(`dd if=/dev/zero bs=65536 count=${BYTES / 65536} 2>/dev/null | nc ${gw} 5001`, 300_000).catch(() => '');
    const up = await sink.result;
    await con.close();

    // Baseline: iperf3 between the daemon's namespace and a peer namespace on the same bridge (a veth, no VM).
    run('ip', ['netns', 'add', PEER]);
    run('ip', ['link', 'add', `hgbv${tag}`, 'netns', NS, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', PEER]);
    inNs(NS, 'ip', 'link', 'set', `hgbv${tag}`, 'master', lan.bridge, 'up');
    inNs(PEER, 'ip', 'link', 'set', 'eth0', 'up');
    const peerIp = gw.replace(/\.1$/, '.250');
    inNs(PEER, 'ip', 'addr', 'add', `${peerIp}/24`, 'dev', 'eth0');
    const srv = spawn('ip', ['netns', 'exec', PEER, 'iperf3', '-s', '-1', '-B', peerIp], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 1000));
    const ip3 = JSON.parse(inNs(NS, 'iperf3', '-c', peerIp, '-t', '5', '-J')) as { end: { sum_received: { bits_per_second: number } } };
    srv.kill();
    const base = ip3.end.sum_received.bits_per_second / 8;
    inNs(NS, 'ip', 'link', 'del', `hgbv${tag}`);

    await waitOperation(d, await d.request('DELETE', '/1.0/vms/nb?force=true'));
    await d.request('DELETE', '/1.0/networks/bench');

    const md = `## Networks (QEMU engine, tiny guest on a nat network)

\`npm run bench -- network\` (bench/network-bench.ts), all inside network namespaces it makes.
TCG guests: the guest's CPU, not the network, sets the pace of its side (busybox \`dd | nc\`
in an emulated guest is slow to send); the host's load average at the time is given below.

| measure | value |
|---|---|
| launch → guest shell prompt | ${(tPrompt / 1000).toFixed(1)} s |
| udhcpc in the guest → lease (dnsmasq) | ${((tLease - tDhcp0) / 1000).toFixed(1)} s |
| launch → lease (prompt, then udhcpc) | ${((tLease - t0) / 1000).toFixed(1)} s |
| ping RTT guest → gateway (avg of 20) | ${rttG} ms |
| ping RTT host → guest (avg of 10) | ${rttH} ms |
| TCP guest → host (${BYTES / MiB} MiB, busybox nc → node) | ${mbit(up)} |
| host load average (1 min) at the end | ${os.loadavg()[0]!.toFixed(1)} |
| baseline: iperf3 over the same bridge, namespace ↔ namespace (veth, no VM), 5 s | ${mbit(base)} |
`;
    console.log(md);
    console.log(`wrote ${writeSection('networks', md)}`);
  } finally {
    if (d) {
      for (const dir of fs.existsSync(path.join(d.dataDir, 'networks')) ? fs.readdirSync(path.join(d.dataDir, 'networks')) : []) {
        try { dnsmasq.push(Number(fs.readFileSync(path.join(d.dataDir, 'networks', dir, 'dnsmasq.pid'), 'utf8'))); } catch { /* none */ }
      }
      for (const pid of dnsmasq) {
        try { if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(d.dataDir)) process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
      }
      await d.cleanup();
    }
    spawnSync('ip', ['netns', 'del', PEER]);
    spawnSync('ip', ['netns', 'del', NS]);
  }
}

void main().then(() => process.exit(0), (e: unknown) => { console.error(e); process.exit(1); });
