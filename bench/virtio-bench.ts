/**
 * virtio device benchmark: runs guests/virtio-bench.c (ring 3, polling)
 * under the compiled hangar-vmm and times its phases from the console with
 * the host clock, and the VMM process's CPU time from /proc.
 *   blk: 4 KiB random reads at queue depth 1 and 32 (IOPS), 128 KiB
 *        sequential reads (MB/s), against a file in the page cache: this
 *        measures the device path, not the disk.
 *   net: 64-byte UDP frames from the guest to a TAP in a private network
 *        namespace (packets/s), counted again on the TAP.
 * Writes the `virtio` section of docs/benchmarks.md.
 *
 *   npm run build && node dist/bench/virtio-bench.js
 */
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeSection } from './report.js';
import { VMM_MAIN, buildGuest, guestConfig, guestTestsUnavailable, startVmmConsole, tempDir } from '../test/helpers/vmm.js';

interface Phase {
  name: string;
  ops: number;
  bytes: number;
  seconds: number;
  cpuSeconds: number;
  /** CPU time of the main thread alone: the device thread, where the device models run. */
  deviceCpuSeconds: number;
}

const CLK_TCK = 100;

function cpuSecondsOf(pid: number, thread = false): number {
  const stat = fs.readFileSync(thread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK; // utime + stime, all threads
}

/** Times the guest's "B <phase> start/end" console markers as they arrive on `stdout`. */
function collectPhases(stdout: NodeJS.ReadableStream, pid: number): Phase[] {
  const starts = new Map<string, { t: number; cpu: number; dev: number }>();
  const phases: Phase[] = [];
  let buf = '';
  stdout.on('data', (b: Buffer) => {
    const now = performance.now();
    buf += b.toString('latin1');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      let m = /^B (\S+) start$/.exec(line);
      if (m) starts.set(m[1]!, { t: now, cpu: cpuSecondsOf(pid), dev: cpuSecondsOf(pid, true) });
      m = /^B (\S+) end ops=(\d+) bytes=(\d+)/.exec(line);
      if (m) {
        const s = starts.get(m[1]!);
        if (s) phases.push({ name: m[1]!, ops: Number(m[2]), bytes: Number(m[3]), seconds: (now - s.t) / 1000, cpuSeconds: cpuSecondsOf(pid) - s.cpu, deviceCpuSeconds: cpuSecondsOf(pid, true) - s.dev });
      }
    }
  });
  return phases;
}

/** Runs one guest under hangar-vmm and collects its phases. */
async function runPhases(config: object, dir: string, timeoutMs: number): Promise<Phase[]> {
  const vmm = startVmmConsole(config, dir, { timeoutMs, logLevel: 'warn' });
  const phases = collectPhases(vmm.child.stdout!, vmm.child.pid!);
  const r = await vmm.done;
  if (r.code !== 0) throw new Error(`hangar-vmm exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return phases;
}

async function benchBlk(dir: string): Promise<Phase[]> {
  const kernel = buildGuest('virtio-bench');
  const disk = path.join(dir, 'bench.img');
  const size = 128 << 20;
  const fd = fs.openSync(disk, 'w');
  for (let off = 0; off < size; off += 8 << 20) fs.writeSync(fd, randomBytes(8 << 20));
  fs.closeSync(fd);
  fs.readFileSync(disk); // warm the page cache
  return runPhases(guestConfig(kernel, {
    memMib: 128,
    bootArgs: 'vbench.mode=blk vbench.ops=100000 vbench.passes=8',
    drives: [{ drive_id: 'bench', path_on_host: disk, is_read_only: true }],
  }), dir, 300_000);
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

async function benchNet(dir: string): Promise<{ phases: Phase[]; tapRx: number }> {
  const kernel = buildGuest('virtio-bench');
  const ns = `hangar-vbench-${process.pid}`;
  const tap = `hvb${process.pid % 100000}`;
  ip('tuntap', 'add', 'dev', tap, 'mode', 'tap');
  ip('netns', 'add', ns);
  try {
    const mac = (JSON.parse(ip('-j', 'link', 'show', tap)) as Array<{ address: string }>)[0]!.address;
    ip('link', 'set', tap, 'netns', ns);
    ip('-n', ns, 'addr', 'add', '10.213.2.1/24', 'dev', tap);
    ip('-n', ns, 'link', 'set', tap, 'up');
    const rx = () => (JSON.parse(ip('-n', ns, '-s', '-j', 'link', 'show', tap)) as Array<{ stats64: { rx: { packets: number } } }>)[0]!.stats64.rx.packets;
    // hangar-vmm attaches to the TAP by name in its own namespace, so it runs inside the bench namespace.
    const before = rx();
    const ops = 1_000_000;
    const cfg = guestConfig(kernel, {
      bootArgs: `vbench.mode=net vbench.ops=${ops} vbench.dmac=0x${mac.replace(/:/g, '')}`,
      nets: [{ iface_id: 'eth0', host_dev_name: tap }],
    });
    const phases = await runPhasesInNs(ns, cfg, dir);
    return { phases, tapRx: rx() - before };
  } finally {
    try { ip('-n', ns, 'link', 'del', tap); } catch { /* gone */ }
    ip('netns', 'del', ns);
  }
}

/** Like runPhases, but hangar-vmm runs inside network namespace `ns` (where the TAP lives). */
async function runPhasesInNs(ns: string, config: object, dir: string): Promise<Phase[]> {
  const cfgPath = path.join(dir, 'vm-net.json');
  fs.writeFileSync(cfgPath, JSON.stringify(config));
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, VMM_MAIN, '--config', cfgPath, '--console', 'stdio', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const timer = setTimeout(() => { if (child.exitCode === null) child.kill('SIGKILL'); }, 120_000);
  let err = '';
  child.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
  // `ip netns exec` execs node in place, so the child's pid is the VMM's.
  const phases = collectPhases(child.stdout!, child.pid!);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  clearTimeout(timer);
  if (code !== 0) throw new Error(`hangar-vmm (in netns) exited ${code}: ${err}`);
  return phases;
}

function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

async function main(): Promise<void> {
  const why = guestTestsUnavailable();
  if (why) throw new Error(`cannot run the virtio benchmark: ${why}`);
  const dir = tempDir('virtio-bench');
  try {
    const blk = await benchBlk(dir);
    const net = process.getuid?.() === 0 ? await benchNet(dir) : null;
    const notify = process.env.HANGAR_VIRTIO_IOEVENTFD === '1' ? 'ioeventfd (HANGAR_VIRTIO_IOEVENTFD=1)' : 'an MMIO exit per notify (the default)';
    const rows: string[] = [];
    for (const p of blk) {
      const core = `${fmt((100 * p.deviceCpuSeconds) / p.seconds)} % (${fmt((100 * p.cpuSeconds) / p.seconds)} %)`;
      if (p.name.startsWith('randread')) rows.push(`| blk ${p.name} 4 KiB | ${fmt(p.ops / p.seconds)} IOPS | ${fmt(p.bytes / p.seconds / 2 ** 20, 1)} MiB/s | ${core} | — |`);
      else rows.push(`| blk ${p.name} | ${fmt(p.ops / p.seconds)} req/s | ${fmt(p.bytes / p.seconds / 2 ** 20, 1)} MiB/s | ${core} | 1 GiB/s at ≤ 70 % of a core |`);
    }
    if (net) {
      for (const p of net.phases) {
        const large = p.name.endsWith('1472');
        rows.push(`| net guest→TAP UDP, ${large ? '1500-byte IP packets' : '64-byte payload'} | ${fmt(p.ops / p.seconds)} packets/s | ${fmt((p.bytes * 8) / p.seconds / 1e6, 1)} Mbit/s | ${fmt((100 * p.deviceCpuSeconds) / p.seconds)} % (${fmt((100 * p.cpuSeconds) / p.seconds)} %) | ${large ? '14.5 Gbps at ≤ 80 % of a core (with TSO: 64 KiB segments)' : '—'} |`);
      }
    }
    const md = [
      '## virtio devices (hangar-vmm)',
      '',
      'Guest: `guests/virtio-bench.c`, driving the devices from ring 3 by polling (1 vCPU). Times are host wall clock',
      `between the guest's console markers. "Device thread CPU" is the user+system time of hangar-vmm's main thread (where`,
      'the device models run) over the same span; in brackets the whole process, where the polling vCPU thread counts as a',
      'full core. Block reads come from a 128 MiB file in the page cache,',
      `so they measure the device path, not a disk. Queue notification: ${notify}; the NIC's kicks are ioeventfds its`,
      `I/O thread serves (src/vmm/virtio/net-io-thread.ts; its CPU is in the whole-VMM figure)${process.env.HANGAR_VIRTIO_NET_IOTHREAD === '0' ? ' — not in this run: HANGAR_VIRTIO_NET_IOTHREAD=0, the vCPU thread transmits' : ''}.`,
      '',
      '| what | rate | throughput | device thread CPU, % of a core (whole VMM) | Firecracker (published) |',
      '|---|---|---|---|---|',
      ...rows,
      '',
      net ? `The TAP counted ${fmt(net.tapRx)} frames received for ${fmt(net.phases.reduce((n, p) => n + p.ops, 0))} sent.` : 'Network part skipped (needs root for TAP and netns).',
      '',
      'Firecracker publishes no IOPS figure; its block and network figures are for its own hosts and real devices, so they',
      'are bars to aim at, not a like-for-like comparison (our reads come from the page cache, our frames are not offloaded).',
    ].join('\n');
    const file = writeSection('virtio', md);
    process.stdout.write(`${md}\n\nwritten to ${file}\n`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
