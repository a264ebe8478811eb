/**
 * Network benchmark, Hangar beside the same VMs wired by hand, in one run.
 * Everything happens inside network namespaces made here (never the host's
 * own), and nothing is sent anywhere else.
 *
 * QEMU engine: two debian-12 VMs (1 vCPU, 512 MiB each) on the daemon's
 * `default` nat network, the daemon in a namespace of its own:
 *   - launch → DHCP lease, as the API (and so `hangar list`) shows it;
 *   - TCP throughput with iperf3: guest → host and host → guest (the iperf3
 *     server in the daemon's namespace, on the bridge's gateway address) and
 *     guest → guest;
 *   - ping RTT guest → gateway and guest → guest (count-bounded).
 * Then by hand: the same QEMU argv as Hangar gave its QEMU (read from
 * /proc/PID/cmdline, -netdev/-device/-blockdev kept, the TAP opened by name
 * rather than passed as a descriptor), run as root without Hangar's
 * confinement (no sandbox, no cgroup, no uid of its own), on fresh overlays of
 * the same base disk and copies of the same cloud-init seeds, with a bridge and
 * TAPs made with `ip` in a namespace of its own, a throwaway dnsmasq for DHCP
 * and no nft rules; the same measurements.
 *
 * Micro engine: Linux guests cannot boot on hangar-vmm on hosts whose KVM
 * emulates guest kernel mode, so it is measured with the ring-3 test guest
 * guests/virtio-bench.c in net mode: raw UDP frames (64-byte, then 1472-byte
 * payloads) sent one way from the guest to the gateway's MAC, batches of 32 per
 * notify, no TCP, no replies. Counted as they reach the bridge's host side
 * (the bridge device's receive counter), once through a Hangar nat network's
 * TAP (the daemon's micro engine, its nft filter on the TAP) and once through a
 * hand-made TAP on a hand-made bridge (hangar-vmm started by hand).
 *
 * iperf3 is not in the debian-12 image: the bench builds a variant with the
 * image's recorded package list plus iperf3 into an image folder of its own
 * (HANGAR_NET_BENCH_IMAGE_DIR, default .cache/network-bench-images), never into
 * the shared one. Under TCG the guests' emulated CPUs set the pace; the section
 * says which accelerator ran and the host's load. Writes the `networks` section
 * of docs/benchmarks.md. Not part of the test suite: `npm run bench -- network`.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { projectRoot } from '../src/common/paths.js';
import { writeSection } from './report.js';
import { ensureDebianVariant } from './debian-variant.js';

const root = projectRoot();
const benchImages = process.env.HANGAR_NET_BENCH_IMAGE_DIR ?? path.join(root, '.cache', 'network-bench-images');
const sharedImages = process.env.HANGAR_IMAGE_DIR ?? path.join(root, '.cache', 'images');
const IPERF3_PACKAGE = process.env.HANGAR_NET_BENCH_IPERF3 ?? 'iperf3';
/** Seconds per iperf3 run (short: every run occupies two emulated CPUs under TCG). */
const IPERF_S = Number(process.env.HANGAR_NET_BENCH_IPERF_S ?? 8);
const PINGS = 20;
/** Frames of the 64-byte phase of the micro guest (the 1472-byte phase sends a quarter as many). */
const MICRO_OPS = Number(process.env.HANGAR_NET_BENCH_MICRO_OPS ?? 1_500_000);
/** Micro-engine rounds, Hangar and by hand alternately (each well under a minute); medians are reported. */
const MICRO_ROUNDS = Number(process.env.HANGAR_NET_BENCH_MICRO_ROUNDS ?? 3);
const MEMORY = '512M';
const BOOT_LIMIT_MS = 20 * 60_000;
const VMS = ['nb-a', 'nb-b'] as const;
/** HANGAR_NET_BENCH_ONLY=micro: the micro-engine part alone (a minute), printed, docs/benchmarks.md left as it is. */
const WITH_DEBIAN = process.env.HANGAR_NET_BENCH_ONLY !== 'micro';
/**
 * HANGAR_NET_BENCH_HANGAR_FROM=FILE: the Hangar half of the QEMU engine part is taken from an earlier run's
 * record (hangar-qemu.json, kept with HANGAR_NET_BENCH_KEEP=1) instead of booting Hangar's two VMs again:
 * under a loaded host each half takes tens of minutes. Everything else is measured afresh.
 */
const HANGAR_FROM = process.env.HANGAR_NET_BENCH_HANGAR_FROM;

/** What the Hangar half of the QEMU engine part leaves for the by-hand half (and for a later run). */
interface HangarRecord {
  accel: string;
  createS: number[] | null;
  pair: PairResult;
  argv: Record<string, string[]>;
  macs: Record<string, string>;
  /** Hangar's file → the by-hand copy made while Hangar's VM existed (seeds go with the VM). */
  handFiles: Record<string, Record<string, string>>;
  gw: string;
  measuredAt: string;
}

const tag = `${process.pid % 100000}`;
const NS = `hgbn-d${tag}`;
const HAND = `hgbn-h${tag}`;
const PEER = `hgbn-p${tag}`;
const HAND_BRIDGE = 'hbr0';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const log = (s: string): void => { process.stderr.write(`network-bench: ${s}\n`); };
const run = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const ipIn = (ns: string, ...args: string[]): string => run('ip', ['-n', ns, ...args]);
const load = (): string => os.loadavg().map((l) => l.toFixed(1)).join(' / ');

type Exec = (command: string[], timeoutMs: number) => Promise<{ exitCode: number | null; stdout: string; stderr: string }>;

/** Processes this bench started (iperf3 servers, QEMUs, dnsmasq, hangar-vmm): each stopped by its own pid. */
const mine = new Set<ChildProcess>();
function start(cmd: string, args: string[], logFile?: string): ChildProcess {
  const out = logFile ? fs.openSync(logFile, 'a') : 'ignore';
  const c = spawn(cmd, args, { stdio: ['ignore', out, out] });
  if (typeof out === 'number') fs.closeSync(out);
  mine.add(c);
  c.once('exit', () => mine.delete(c));
  return c;
}
async function stop(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const gone = new Promise((r) => c.once('exit', r));
  c.kill('SIGKILL');
  await gone;
}

// --- measurements inside the guests -------------------------------------------------------------

/** Runs `command` until it exits 0 or `limitMs` passes (the guest agent is not up during boot). */
async function untilOk(exec: Exec, command: string[], limitMs: number): Promise<void> {
  const end = Date.now() + limitMs;
  for (;;) {
    try {
      if ((await exec(command, 30_000)).exitCode === 0) return;
    } catch (e) {
      if (Date.now() > end || (e as { fatal?: boolean }).fatal) throw e;
    }
    if (Date.now() > end) throw new Error(`${command.join(' ')} did not succeed within ${limitMs / 1000} s`);
    await sleep(3000);
  }
}

/**
 * Up: the guest agent answers and cloud-init has finished (its first-boot stages take the
 * vCPU for minutes under TCG; measured meanwhile they would be measured too). Polled in
 * short calls: a long `cloud-init status --wait` through the agent was cut short on a busy host.
 */
async function untilUp(exec: Exec): Promise<void> {
  await untilOk(exec, ['true'], BOOT_LIMIT_MS);
  await untilOk(exec, ['sh', '-c', 'cloud-init status | grep -Eq "status: (done|error|degraded)"'], BOOT_LIMIT_MS);
}

/** An iperf3 server for one test in namespace `ns` on addr:port; resolves once it listens. */
async function iperfServerIn(ns: string, addr: string, port: number): Promise<ChildProcess> {
  const c = spawn('ip', ['netns', 'exec', ns, 'iperf3', '-s', '-1', '-B', addr, '-p', String(port), '--forceflush'], { stdio: ['ignore', 'pipe', 'pipe'] });
  mine.add(c);
  c.once('exit', () => mine.delete(c));
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`iperf3 server in ${ns}: not listening: ${out}`)), 10_000);
    c.stdout!.on('data', (b: Buffer) => { out += b.toString(); if (out.includes('listening')) { clearTimeout(timer); resolve(); } });
    c.once('exit', () => { clearTimeout(timer); reject(new Error(`iperf3 server in ${ns} ended: ${out}`)); });
  });
  return c;
}

/** Mbit/s the receiving side of an iperf3 client run counted (-J output). */
async function iperfClient(exec: Exec, args: string[]): Promise<number> {
  const r = await exec(['iperf3', ...args, '-t', String(IPERF_S), '-J'], (IPERF_S + 90) * 1000);
  if (r.exitCode !== 0) throw new Error(`iperf3 ${args.join(' ')}: ${r.stdout.slice(-800)} ${r.stderr}`);
  const j = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { end: { sum_received: { bits_per_second: number } } };
  return j.end.sum_received.bits_per_second / 1e6;
}

/** Average RTT (ms) of PINGS pings, 0.2 s apart. */
async function pingAvg(exec: Exec, dest: string): Promise<number> {
  const r = await exec(['ping', '-c', String(PINGS), '-i', '0.2', '-W', '5', '-q', dest], 120_000);
  const m = /= [\d.]+\/([\d.]+)\//.exec(r.stdout);
  if (r.exitCode !== 0 || !m) throw new Error(`ping ${dest}: ${r.stdout} ${r.stderr}`);
  return Number(m[1]);
}

interface PairResult {
  /** Launch → DHCP lease of each VM, seconds. */
  leaseS: number[];
  /** Launch of the first → both up (agent answers, cloud-init done), seconds. */
  upS: number;
  g2h: number;
  h2g: number;
  g2g: number;
  rttGw: number;
  rttG2g: number;
  load: string;
}

/** The throughput and RTT measurements, from VM a (and into VM b for guest → guest). */
async function measurePair(label: string, ns: string, gw: string, a: Exec, b: Exec, ipB: string): Promise<Omit<PairResult, 'leaseS' | 'upS'>> {
  let srv = await iperfServerIn(ns, gw, 5201);
  const g2h = await iperfClient(a, ['-c', gw, '-p', '5201']);
  await stop(srv);
  log(`${label}: guest → host ${g2h.toFixed(0)} Mbit/s`);
  srv = await iperfServerIn(ns, gw, 5201);
  const h2g = await iperfClient(a, ['-c', gw, '-p', '5201', '-R']);
  await stop(srv);
  log(`${label}: host → guest ${h2g.toFixed(0)} Mbit/s`);
  const s = await b(['sh', '-c', 'setsid -f iperf3 -s -1 -p 5202 </dev/null >/tmp/iperf3-server.log 2>&1; sleep 1'], 60_000);
  if (s.exitCode !== 0) throw new Error(`iperf3 server in the guest: ${s.stderr}`);
  const g2g = await iperfClient(a, ['-c', ipB, '-p', '5202']);
  log(`${label}: guest → guest ${g2g.toFixed(0)} Mbit/s`);
  const rttGw = await pingAvg(a, gw);
  const rttG2g = await pingAvg(a, ipB);
  log(`${label}: RTT gateway ${rttGw} ms, guest ${rttG2g} ms`);
  return { g2h, h2g, g2g, rttGw, rttG2g, load: load() };
}

// --- frames counted on a bridge ---------------------------------------------------------------

/** rx packets and bytes of `ifname` in the network namespace of process `pid`. */
function rxOf(pid: number, ifname: string): { packets: number; bytes: number } {
  const line = fs.readFileSync(`/proc/${pid}/net/dev`, 'utf8').split('\n').find((l) => l.trim().startsWith(`${ifname}:`));
  if (!line) throw new Error(`no ${ifname} in the namespace of pid ${pid}`);
  const f = line.slice(line.indexOf(':') + 1).trim().split(/\s+/).map(Number);
  return { bytes: f[0]!, packets: f[1]! };
}

interface FrameRate { pps: number; mbps: number; frames: number }
interface Counted {
  small: FrameRate;
  large: FrameRate;
  total: number;
  /** The VMM process's CPU time over its run, in % of one core. */
  vmmCpuPct: number | null;
  /** From its cgroup's cpu.stat (Hangar's VMs only): periods throttled by cpu.max, and the cap in cores. */
  throttled: { pct: number; cores: number } | null;
}

const CLK_TCK = 100;

/** What one look at the VMM process sees: its CPU seconds, and its cgroup v2 cpu.stat and cpu.max when it has one of its own. */
function vmmProbe(pid: number): { t: number; cpuS: number; periods?: number; throttled?: number; cores?: number } | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const out: { t: number; cpuS: number; periods?: number; throttled?: number; cores?: number } = { t: performance.now(), cpuS: (Number(f[11]) + Number(f[12])) / CLK_TCK };
    try { cgroupCpu(pid, out); } catch { /* no cgroup of its own to read */ }
    return out;
  } catch {
    return null; // gone (the guest powered off)
  }
}

/** Its CPU cap and throttling into `out`: cgroup v2 (cpu.max) or v1 (the cpu controller's CFS quota). */
function cgroupCpu(pid: number, out: { periods?: number; throttled?: number; cores?: number }): void {
  const lines = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n');
  const v1 = lines.map((l) => /^\d+:([^:]*):(\/.*)$/.exec(l)).find((m) => m && m[1]!.split(',').includes('cpu'));
  const v2 = lines.map((l) => /^0::(\/.*)$/.exec(l)).find(Boolean);
  let cores: number | null = null;
  let dir: string | null = null;
  if (v1) {
    dir = path.join('/sys/fs/cgroup', v1[1]!, v1[2]!);
    const quota = Number(fs.readFileSync(path.join(dir, 'cpu.cfs_quota_us'), 'utf8'));
    if (quota > 0) cores = quota / Number(fs.readFileSync(path.join(dir, 'cpu.cfs_period_us'), 'utf8'));
  } else if (v2) {
    dir = path.join('/sys/fs/cgroup', v2[1]!);
    const [quota, period] = fs.existsSync(path.join(dir, 'cpu.max')) ? fs.readFileSync(path.join(dir, 'cpu.max'), 'utf8').trim().split(' ') : ['max'];
    if (quota !== 'max') cores = Number(quota) / Number(period);
  }
  if (dir && cores !== null) {
    const cs = fs.readFileSync(path.join(dir, 'cpu.stat'), 'utf8');
    out.periods = Number(/nr_periods (\d+)/.exec(cs)?.[1]);
    out.throttled = Number(/nr_throttled (\d+)/.exec(cs)?.[1]);
    out.cores = cores;
  }
}

/**
 * Samples the bridge's receive counter every 100 ms while the micro guest sends (it ends by
 * itself) and returns the steady rate of each phase: intervals are told apart by their mean
 * frame size (106-byte frames, then 1514-byte ones); the first and last interval of each phase
 * (partly idle) and the mixed one between them are left out.
 */
async function countFrames(pid: number, ifname: string, begin: () => Promise<void>, limitMs: number, vmmPid: () => number | null): Promise<Counted> {
  const samples: Array<{ t: number; packets: number; bytes: number }> = [];
  const first = rxOf(pid, ifname);
  // Sampling starts at once: the guest sends as soon as it runs, before a create operation has answered.
  let failed: unknown = null;
  const begun = begin().catch((e: unknown) => { failed = e; });
  const end = Date.now() + limitMs;
  let last = first.packets;
  let idleSince = Date.now();
  let seen = false;
  let firstProbe: ReturnType<typeof vmmProbe> = null;
  let lastProbe: ReturnType<typeof vmmProbe> = null;
  while (Date.now() < end) {
    const s = { t: performance.now(), ...rxOf(pid, ifname) };
    samples.push(s);
    const vp = vmmPid();
    const probe = vp ? vmmProbe(vp) : null;
    if (probe) { firstProbe ??= probe; lastProbe = probe; }
    if (s.packets - last > 10) { seen = true; idleSince = Date.now(); }
    last = s.packets;
    if (seen && Date.now() - idleSince > 3000) break;
    if (failed) throw failed;
    await sleep(100);
  }
  await begun;
  if (failed) throw failed;
  const kinds: Record<'small' | 'large', Array<{ dt: number; dp: number; db: number }>> = { small: [], large: [] };
  for (let i = 1; i < samples.length; i++) {
    const dp = samples[i]!.packets - samples[i - 1]!.packets;
    const db = samples[i]!.bytes - samples[i - 1]!.bytes;
    if (dp < 50) continue;
    const mean = db / dp;
    const k = mean < 200 ? 'small' : mean > 1400 ? 'large' : null;
    if (k) kinds[k].push({ dt: (samples[i]!.t - samples[i - 1]!.t) / 1000, dp, db });
  }
  const rate = (xs: Array<{ dt: number; dp: number; db: number }>): FrameRate => {
    const inner = xs.length > 2 ? xs.slice(1, -1) : xs;
    const dt = inner.reduce((n, x) => n + x.dt, 0);
    return { pps: inner.reduce((n, x) => n + x.dp, 0) / dt, mbps: (inner.reduce((n, x) => n + x.db, 0) * 8) / dt / 1e6, frames: xs.reduce((n, x) => n + x.dp, 0) };
  };
  const cpu = firstProbe && lastProbe && lastProbe.t > firstProbe.t ? (100 * (lastProbe.cpuS - firstProbe.cpuS)) / ((lastProbe.t - firstProbe.t) / 1000) : null;
  const throttled = firstProbe?.periods !== undefined && lastProbe?.periods !== undefined && lastProbe.periods > firstProbe.periods
    ? { pct: (100 * (lastProbe.throttled! - firstProbe.throttled!)) / (lastProbe.periods - firstProbe.periods), cores: lastProbe.cores! } : null;
  return { small: rate(kinds.small), large: rate(kinds.large), total: samples.at(-1)!.packets - first.packets, vmmCpuPct: cpu, throttled };
}

/** Boot arguments of the micro guest: net mode, frames from `src` to `dst`:9 at the gateway's MAC. */
function microArgs(gwMac: string, src: string, dst: string): string {
  const hex = (ip: string): string => `0x${ip.split('.').map((b) => Number(b).toString(16).padStart(2, '0')).join('')}`;
  return `vbench.mode=net vbench.ops=${MICRO_OPS} vbench.dmac=0x${gwMac.replace(/:/g, '')} vbench.src=${hex(src)} vbench.dst=${hex(dst)}`;
}

const macOf = (ns: string, ifname: string): string => (JSON.parse(ipIn(ns, '-j', 'link', 'show', ifname)) as Array<{ address: string }>)[0]!.address;

// --- the QEMU command line by hand ------------------------------------------------------------------

/**
 * Hangar's QEMU argv turned into one for a QEMU run by hand: the same machine, CPUs, memory,
 * kernel, -device, -blockdev and -netdev options, with the files and the TAP swapped for the
 * hand-made ones; Hangar's own plumbing (descriptors passed in, console and QMP sockets, pid
 * file) and its confinement (-sandbox) left out; the guest agent on a socket of our own.
 */
function handArgv(argv: string[], o: { files: Map<string, string>; tap: string; qga: string; consoleLog: string }): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1] ?? '';
    const pair = (value: string): void => { out.push(a, value); i++; };
    switch (a) {
      case '-add-fd': case '-sandbox': case '-pidfile': case '-mon': i++; break;
      case '-chardev':
        if (/^socket,id=qga,/.test(v)) pair(v.replace(/path=[^,]*/, `path=${o.qga}`));
        else i++; // the console and QMP sockets: Hangar's
        break;
      case '-serial': pair(`file:${o.consoleLog}`); break;
      case '-netdev': pair(v.replace(/,fd=\d+/, `,ifname=${o.tap},script=no,downscript=no`)); break;
      case '-blockdev': {
        const node = JSON.parse(v) as { driver: string; filename?: string };
        if (node.driver === 'file') {
          const copy = o.files.get(node.filename!);
          if (!copy) throw new Error(`no hand-made copy of ${node.filename}`);
          node.filename = copy;
        }
        pair(JSON.stringify(node));
        break;
      }
      default:
        if (a.startsWith('-') && v !== '' && !v.startsWith('-')) pair(v); else out.push(a);
    }
  }
  if (out.some((x) => x.includes('/dev/fdset'))) throw new Error(`a descriptor set left in the argv: ${out.join(' ')}`);
  return out;
}

/** A disk for the by-hand VM: a fresh overlay on the same backing file and of the same size (qcow2 overlays), else a copy. */
function handDisk(file: string, dest: string): { dest: string; backing: string | null } {
  const info = JSON.parse(run('qemu-img', ['info', '-U', '--output=json', file])) as { format: string; 'virtual-size': number; 'full-backing-filename'?: string; 'backing-filename-format'?: string };
  const backing = info['full-backing-filename'] ?? null;
  if (info.format === 'qcow2' && backing) {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', info['backing-filename-format'] ?? 'qcow2', '-b', backing, dest, String(info['virtual-size'])]);
  } else {
    fs.copyFileSync(file, dest);
  }
  return { dest, backing };
}

/** The files behind a QEMU argv's -blockdev file nodes. */
function blockFiles(argv: string[]): string[] {
  return argv.filter((_, i) => argv[i - 1] === '-blockdev').map((x) => JSON.parse(x) as { driver: string; filename?: string })
    .filter((b) => b.driver === 'file').map((b) => b.filename!);
}

/** dnsmasq's lease for `mac` in its lease file, or null. */
function leaseFor(file: string, mac: string): string | null {
  let text = '';
  try { text = fs.readFileSync(file, 'utf8'); } catch { return null; }
  const line = text.split('\n').find((l) => l.split(' ')[1]?.toLowerCase() === mac.toLowerCase());
  return line?.split(' ')[2] ?? null;
}

// --- the run ---------------------------------------------------------------------------------------

interface Micro {
  /** One entry per round, Hangar and by hand alternately. */
  hangar: Counted[];
  hand: Counted[];
  cmdline: string;
  /** 1-minute load average after each round. */
  loads: string[];
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the network benchmark needs root (namespaces, bridges, TAPs)');
  if (WITH_DEBIAN) await ensureDebianVariant({ dir: benchImages, sharedDir: sharedImages, extra: [IPERF3_PACKAGE], log });
  process.env.HANGAR_IMAGE_DIR = benchImages;
  const { startDaemon, waitOperation } = await import('../test/helpers/daemon.js');
  const { buildGuest, guestConfig, guestTestsUnavailable, VMM_MAIN } = await import('../test/helpers/vmm.js');
  const { VMM_NODE_FLAGS } = await import('../src/vmm/process-flags.js');
  const { GuestAgent } = await import('../src/engines/qemu/guest-agent.js');
  const microWhy = guestTestsUnavailable();
  const microElf = microWhy ? null : buildGuest('virtio-bench');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-netbench-'));
  const namespaces: string[] = [];
  const mkns = (ns: string): void => { run('ip', ['netns', 'add', ns]); namespaces.push(ns); ipIn(ns, 'link', 'set', 'lo', 'up'); };
  let d: Awaited<ReturnType<typeof startDaemon>> | null = null;
  const dnsmasqPids: number[] = [];
  /** Stops the daemon's dnsmasqs (daemons of their own: by their verified pids), then the daemon and its VMs. */
  const daemonGone = async (): Promise<void> => {
    if (!d) return;
    const netDir = path.join(d.dataDir, 'networks');
    for (const dir of fs.existsSync(netDir) ? fs.readdirSync(netDir) : []) {
      try { dnsmasqPids.push(Number(fs.readFileSync(path.join(netDir, dir, 'dnsmasq.pid'), 'utf8'))); } catch { /* none */ }
    }
    for (const pid of dnsmasqPids) {
      try { if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(d.dataDir)) process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
    }
    await d.cleanup();
    d = null;
  };
  try {
    // ---- Hangar: the daemon in a namespace of its own, its default nat network ----
    mkns(NS);
    d = await startDaemon({ netns: NS, ...(microElf ? { args: ['--import-dir', path.dirname(microElf)] } : {}) });
    const dd = d;
    const ok = async (res: ReturnType<typeof dd.request>, timeoutS = 600): Promise<any> => {
      const op = await waitOperation(dd, await res, timeoutS);
      if (op.status !== 'success') throw new Error(JSON.stringify(op.error ?? op));
      return op.result;
    };
    const api = async (method: string, p: string, body?: unknown): Promise<any> => {
      const r = await dd.request(method, p, body);
      if (r.status >= 300) throw new Error(`${method} ${p}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body.metadata;
    };
    const hangarExec = (vm: string): Exec => async (command, timeoutMs) => {
      const r = await dd.request('POST', `/1.0/vms/${vm}/exec`, { command, timeout: Math.ceil(timeoutMs / 1000) });
      if (r.status !== 200) {
        // A VM that is no longer running never answers: no point waiting out the boot limit.
        const state = (await dd.request('GET', `/1.0/vms/${vm}`)).body?.metadata?.state;
        throw Object.assign(new Error(`${vm} (${state}): ${JSON.stringify(r.body)}`), { code: r.body?.error?.code, fatal: state !== 'running' });
      }
      return r.body.metadata;
    };
    // Made at the first VM that needs it, or here.
    if ((await dd.request('GET', '/1.0/networks/default')).status === 404) await api('POST', '/1.0/networks', { name: 'default' });
    const net = await api('GET', '/1.0/networks/default');
    const gw: string = net.gateway;
    const [subnet, prefix] = String(net.subnet).split('/') as [string, string];

    // ---- by hand: a bridge with the same gateway address, TAPs and a throwaway dnsmasq in another namespace ----
    mkns(HAND);
    ipIn(HAND, 'link', 'add', HAND_BRIDGE, 'type', 'bridge');
    ipIn(HAND, 'addr', 'add', `${gw}/${prefix}`, 'dev', HAND_BRIDGE);
    ipIn(HAND, 'link', 'set', HAND_BRIDGE, 'up');
    const taps = ['htap0', 'htap1', 'htapm'];
    for (const t of taps) {
      ipIn(HAND, 'tuntap', 'add', 'dev', t, 'mode', 'tap');
      ipIn(HAND, 'link', 'set', t, 'master', HAND_BRIDGE, 'up');
    }
    const base = subnet.replace(/\.\d+$/, '');
    const leaseFile = path.join(work, 'dnsmasq.leases');
    const dnsmasq = start('ip', ['netns', 'exec', HAND, 'dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--port=0',
      '--user=root', '--bind-interfaces', `--interface=${HAND_BRIDGE}`, '--except-interface=lo', `--dhcp-range=${base}.50,${base}.99,1h`,
      `--dhcp-leasefile=${leaseFile}`, '--pid-file', '--log-dhcp', `--log-facility=${path.join(work, 'dnsmasq.log')}`]);
    await sleep(500);
    if (dnsmasq.exitCode !== null) throw new Error(`dnsmasq: ${fs.readFileSync(path.join(work, 'dnsmasq.log'), 'utf8')}`);

    // ---- micro engine: Hangar and by hand, alternately ----
    let micro: Micro | null = null;
    if (microElf) {
      await api('POST', '/1.0/images', { name: 'vbench-net', kernel: microElf });
      const src = gw.replace(/\.\d+$/, '.250');
      const cmdline = microArgs(macOf(NS, net.bridge), src, gw);
      const handCmdline = cmdline.replace(/vbench\.dmac=0x[0-9a-f]+/, `vbench.dmac=0x${macOf(HAND, HAND_BRIDGE).replace(/:/g, '')}`);
      micro = { hangar: [], hand: [], cmdline, loads: [] };
      log(`micro: ${cmdline}`);
      for (let i = 0; i < MICRO_ROUNDS; i++) {
        const name = `nb-m${i}`;
        let vmmPid: number | null = null;
        let mac = '';
        const h = await countFrames(dd.pid, net.bridge, async () => {
          await ok(dd.request('POST', '/1.0/vms', { name, image: 'vbench-net', engine: 'micro', memory: '64M', cpus: 1, nics: [{ network: 'default', ipv4: src }], cmdline }));
          const vm = await api('GET', `/1.0/vms/${name}`);
          vmmPid = vm.runtime?.pid ?? null;
          mac = vm.spec.nics[0].mac;
        }, 300_000, () => vmmPid);
        const bootArgs = (JSON.parse(fs.readFileSync(path.join(dd.dataDir, 'vms', name, 'engine-config.json'), 'utf8')) as { boot: { cmdline?: string } }).boot.cmdline ?? cmdline;
        await ok(dd.request('DELETE', `/1.0/vms/${name}?force=true`));
        micro.hangar.push(h);
        // The same guest, boot arguments (but the hand bridge's MAC), memory and MAC, hangar-vmm started by hand.
        const cfg = path.join(work, 'micro.json');
        fs.writeFileSync(cfg, JSON.stringify(guestConfig(microElf, {
          memMib: 64, bootArgs: bootArgs.replace(cmdline, handCmdline), nets: [{ iface_id: 'eth0', host_dev_name: 'htapm', guest_mac: mac }],
        })));
        let vmm: ChildProcess | null = null;
        const m = await countFrames(dnsmasq.pid!, HAND_BRIDGE, async () => {
          vmm = start('ip', ['netns', 'exec', HAND, process.execPath, ...VMM_NODE_FLAGS, VMM_MAIN, '--config', cfg, '--console', 'stdio', '--log-level', 'warn'], path.join(work, 'micro.log'));
        }, 300_000, () => (vmm as ChildProcess | null)?.pid ?? null);
        if (vmm) await stop(vmm);
        micro.hand.push(m);
        micro.loads.push(os.loadavg()[0]!.toFixed(1));
        log(`micro round ${i + 1}: frames/s 64-byte / 1472-byte: Hangar ${h.small.pps.toFixed(0)} / ${h.large.pps.toFixed(0)} (VMM ${h.vmmCpuPct?.toFixed(0)} % of a core${h.throttled ? `, ${h.throttled.pct.toFixed(0)} % of periods throttled at ${h.throttled.cores} cores` : ''}), `
          + `by hand ${m.small.pps.toFixed(0)} / ${m.large.pps.toFixed(0)} (VMM ${m.vmmCpuPct?.toFixed(0)} %); load ${load()}`);
      }
    }

    // Context: iperf3 between the daemon's namespace and a peer namespace on the same bridge (a veth, no VM).
    mkns(PEER);
    run('ip', ['link', 'add', `hgbv${tag}`, 'netns', NS, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', PEER]);
    ipIn(NS, 'link', 'set', `hgbv${tag}`, 'master', net.bridge, 'up');
    ipIn(PEER, 'link', 'set', 'eth0', 'up');
    const peerIp = gw.replace(/\.\d+$/, '.251');
    ipIn(PEER, 'addr', 'add', `${peerIp}/${prefix}`, 'dev', 'eth0');
    const srv = await iperfServerIn(PEER, peerIp, 5201);
    const ip3 = JSON.parse(run('ip', ['netns', 'exec', NS, 'iperf3', '-c', peerIp, '-t', '5', '-J'])) as { end: { sum_received: { bits_per_second: number } } };
    await stop(srv);
    const baseline = ip3.end.sum_received.bits_per_second / 1e6;
    ipIn(NS, 'link', 'del', `hgbv${tag}`);

    // ---- QEMU engine, Hangar: two Debian VMs on default ----
    let hangarPair: PairResult | null = null;
    let accel = 'tcg';
    const createS: number[] = [];
    const argv: Record<string, string[]> = {};
    const macs: Record<string, string> = {};
    const handFiles = new Map<string, Map<string, string>>();
    if (HANGAR_FROM) {
      const rec = JSON.parse(fs.readFileSync(HANGAR_FROM, 'utf8')) as HangarRecord;
      if (rec.gw !== gw) log(`note: ${HANGAR_FROM} was measured on a network with gateway ${rec.gw}, this run has ${gw}`);
      ({ accel, pair: hangarPair } = rec);
      if (rec.createS) createS.push(...rec.createS);
      Object.assign(argv, rec.argv);
      Object.assign(macs, rec.macs);
      // Fresh by-hand disks from the recorded copies: overlays on the same backing again, the seeds copied again.
      for (const vm of VMS) {
        handFiles.set(vm, new Map(Object.entries(rec.handFiles[vm]!).map(([orig, copy], i) => [orig, handDisk(copy, path.join(work, `${vm}-${i}-${path.basename(copy)}`)).dest])));
      }
      log(`Hangar's half of the QEMU engine part from ${HANGAR_FROM} (measured ${rec.measuredAt})`);
    } else if (WITH_DEBIAN) {
      log(`Hangar: launching ${VMS.join(' and ')} (debian-12, TCG boots side by side; load ${load()})`);
      const t0 = performance.now();
      const launchedAt: number[] = [];
      // One create after the other (two at once from one image race in the storage pool); the guests boot side by side.
      for (const vm of VMS) {
        const t = performance.now();
        launchedAt.push(t);
        await ok(dd.request('POST', '/1.0/vms', { name: vm, image: 'debian-12', memory: MEMORY, cpus: 1 }));
        createS.push((performance.now() - t) / 1000);
      }
      const leaseS: number[] = [0, 0];
      const ips: string[] = ['', ''];
      await Promise.all(VMS.map(async (vm, i) => {
        for (const end = Date.now() + BOOT_LIMIT_MS; Date.now() < end; await sleep(250)) {
          const ip = (await api('GET', `/1.0/vms/${vm}`)).runtime?.nics?.[0]?.ipv4 as string | null | undefined;
          if (ip) { leaseS[i] = (performance.now() - launchedAt[i]!) / 1000; ips[i] = ip; return; }
        }
        throw new Error(`${vm}: no lease within ${BOOT_LIMIT_MS / 1000} s`);
      }));
      log(`Hangar: leases ${ips.join(', ')} after ${leaseS.map((x) => x.toFixed(0)).join(' / ')} s`);
      await Promise.all(VMS.map((vm) => untilUp(hangarExec(vm))));
      const upS = (performance.now() - t0) / 1000;
      log(`Hangar: both up (cloud-init done) after ${upS.toFixed(0)} s`);
      accel = (await api('GET', `/1.0/vms/${VMS[0]}`)).runtime?.accel ?? 'tcg';
      for (const vm of VMS) {
        const v = await api('GET', `/1.0/vms/${vm}`);
        argv[vm] = fs.readFileSync(`/proc/${v.runtime.pid}/cmdline`, 'utf8').split('\0').filter((x) => x !== '');
        macs[vm] = v.spec.nics[0].mac;
      }
      // The by-hand disks, made now (the seeds go with the VMs): overlays on the same backing files, copies of the rest.
      const backings = new Set<string>();
      for (const vm of VMS) {
        const files = new Map<string, string>();
        for (const [i, f] of blockFiles(argv[vm]!).entries()) {
          const made = handDisk(f, path.join(work, `${vm}-${i}-${path.basename(f)}`));
          if (made.backing) {
            if (made.backing.startsWith(dd.dataDir)) throw new Error(`${f} is backed by ${made.backing}, which goes with the daemon`);
            backings.add(made.backing);
          }
          files.set(f, made.dest);
        }
        handFiles.set(vm, files);
      }
      log(`Hangar: root disks are overlays on ${[...backings].join(', ')}; by-hand disks made in ${work}`);
      hangarPair = { leaseS, upS, ...(await measurePair('Hangar', NS, gw, hangarExec(VMS[0]), hangarExec(VMS[1]), ips[1]!)) };
      for (const vm of VMS) await ok(dd.request('DELETE', `/1.0/vms/${vm}?force=true`));
      const rec: HangarRecord = {
        accel, createS, pair: hangarPair, argv, macs, gw, measuredAt: new Date().toISOString(),
        handFiles: Object.fromEntries([...handFiles].map(([vm, m]) => [vm, Object.fromEntries(m)])),
      };
      fs.writeFileSync(path.join(work, 'hangar-qemu.json'), JSON.stringify(rec, null, 2));

    }
    await daemonGone();

    // ---- QEMU engine by hand: Hangar's argv, hand-made TAPs, no confinement ----
    let handPair: PairResult | null = null;
    if (hangarPair) {
      const agents: Array<InstanceType<typeof GuestAgent>> = [];
      const qemus: ChildProcess[] = [];
      const handExec = (agent: InstanceType<typeof GuestAgent>, i: number): Exec => async (command, timeoutMs) => {
        const q = qemus[i]!;
        if (q.exitCode !== null || q.signalCode !== null) throw Object.assign(new Error(`by-hand QEMU ${i} exited (${q.exitCode ?? q.signalCode}); see ${work}`), { fatal: true });
        const r = await agent.exec({ command, timeoutMs, maxOutputBytes: 4 * 2 ** 20 });
        return { exitCode: r.exitCode, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') };
      };
      const leaseS: number[] = [0, 0];
      const ips: string[] = ['', ''];
      const t1 = performance.now();
      for (const [i, vm] of VMS.entries()) {
        const qga = path.join(work, `${vm}-qga.sock`);
        const args = handArgv(argv[vm]!.slice(1), { files: handFiles.get(vm)!, tap: taps[i]!, qga, consoleLog: path.join(work, `${vm}-console.log`) });
        fs.writeFileSync(path.join(work, `${vm}.argv`), `${argv[vm]!.join('\n')}\n---\n${args.join('\n')}\n`);
        const at = performance.now();
        qemus.push(start('ip', ['netns', 'exec', HAND, 'qemu-system-x86_64', ...args], path.join(work, `${vm}-qemu.log`)));
        agents.push(new GuestAgent({ socket: qga, commandTimeoutMs: 30_000 }));
        void (async () => {
          for (const end = Date.now() + BOOT_LIMIT_MS; Date.now() < end && !ips[i]; await sleep(250)) {
            const ip = leaseFor(leaseFile, macs[vm]!);
            if (ip) { leaseS[i] = (performance.now() - at) / 1000; ips[i] = ip; }
          }
        })();
      }
      log(`by hand: ${VMS.length} QEMUs started (argv in ${work}; load ${load()})`);
      await Promise.all(agents.map((a, i) => untilUp(handExec(a, i))));
      const upS = (performance.now() - t1) / 1000;
      for (let i = 0; !ips.every(Boolean) && i < 120; i++) await sleep(250);
      if (!ips.every(Boolean)) throw new Error(`by hand: leases ${ips.join(', ')}`);
      log(`by hand: leases ${ips.join(', ')} after ${leaseS.map((x) => x.toFixed(0)).join(' / ')} s, up after ${upS.toFixed(0)} s`);
      handPair = { leaseS, upS, ...(await measurePair('by hand', HAND, gw, handExec(agents[0]!, 0), handExec(agents[1]!, 1), ips[1]!)) };
      for (const a of agents) a.close();
      for (const q of qemus) await stop(q);
    }
    await stop(dnsmasq);

    if (hangarPair && handPair) report({ accel, createS, baseline, hangar: hangarPair, hand: handPair, micro, microWhy });
    else log(`micro engine (nothing written): ${JSON.stringify(micro)}`);
  } finally {
    for (const c of [...mine]) await stop(c);
    await daemonGone();
    for (const ns of namespaces.reverse()) spawnSync('ip', ['netns', 'del', ns]);
    if (!process.env.HANGAR_NET_BENCH_KEEP) fs.rmSync(work, { recursive: true, force: true });
  }
}

const median = (xs: number[]): number => { const s = [...xs].sort((x, y) => x - y); return s.length ? (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2 : NaN; };

interface Results {
  accel: string;
  createS: number[];
  baseline: number;
  hangar: PairResult;
  hand: PairResult;
  micro: Micro | null;
  microWhy: string | null;
}

function report(res: Results): void {
  const { hangar: hp, hand: m, micro } = res;
  const r = (a: number, b: number): string => (a / b).toFixed(2);
  const f0 = (x: number): string => x.toLocaleString('en-US', { maximumFractionDigits: 0 });
  const rows = [
    '| measure | Hangar | by hand | Hangar / hand |',
    '|---|---|---|---|',
    ...VMS.map((vm, i) => `| launch → DHCP lease, VM ${vm.slice(-1)} (s) | ${hp.leaseS[i]!.toFixed(1)} | ${m.leaseS[i]!.toFixed(1)} | ${r(hp.leaseS[i]!, m.leaseS[i]!)} |`),
    `| launch → both VMs up, cloud-init done (s) | ${hp.upS.toFixed(0)} | ${m.upS.toFixed(0)} | ${r(hp.upS, m.upS)} |`,
    `| TCP guest → host, iperf3 ${IPERF_S} s (Mbit/s) | ${f0(hp.g2h)} | ${f0(m.g2h)} | ${r(hp.g2h, m.g2h)} |`,
    `| TCP host → guest, iperf3 -R ${IPERF_S} s (Mbit/s) | ${f0(hp.h2g)} | ${f0(m.h2g)} | ${r(hp.h2g, m.h2g)} |`,
    `| TCP guest → guest, iperf3 ${IPERF_S} s (Mbit/s) | ${f0(hp.g2g)} | ${f0(m.g2g)} | ${r(hp.g2g, m.g2g)} |`,
    `| ping RTT guest → gateway, avg of ${PINGS} (ms) | ${hp.rttGw.toFixed(2)} | ${m.rttGw.toFixed(2)} | ${r(hp.rttGw, m.rttGw)} |`,
    `| ping RTT guest → guest, avg of ${PINGS} (ms) | ${hp.rttG2g.toFixed(2)} | ${m.rttG2g.toFixed(2)} | ${r(hp.rttG2g, m.rttG2g)} |`,
    `| host load average (1 / 5 / 15 min) after the measurements | ${hp.load} | ${m.load} | |`,
  ];
  let microRows: string[] = [`Micro engine part skipped: ${res.microWhy ?? 'not measured'}.`];
  if (micro && micro.hangar.length) {
    const med = (side: Counted[], f: (c: Counted) => number | null | undefined): number => median(side.map(f).filter((x): x is number => typeof x === 'number' && Number.isFinite(x)));
    const row = (what: string, f: (c: Counted) => number | null | undefined, fmt: (x: number) => string): string => {
      const h = med(micro.hangar, f);
      const b = med(micro.hand, f);
      return `| ${what} | ${fmt(h)} | ${fmt(b)} | ${r(h, b)} |`;
    };
    const each = (side: Counted[]): string => side.map((c) => f0(c.small.pps)).join(', ');
    const thr = micro.hangar.map((c) => c.throttled).filter((t): t is { pct: number; cores: number } => t !== null);
    microRows = [
      `| guest → bridge, one-way UDP (hangar-vmm), median of ${micro.hangar.length} rounds | Hangar (nat network TAP) | by hand (hand-made TAP) | Hangar / hand |`,
      '|---|---|---|---|',
      row('64-byte payload (106-byte frames), frames/s', (c) => c.small.pps, f0),
      row('64-byte payload, Mbit/s of IP packets', (c) => c.small.mbps, (x) => x.toFixed(1)),
      row('1472-byte payload (1514-byte frames), frames/s', (c) => c.large.pps, f0),
      row('1472-byte payload, Mbit/s of IP packets', (c) => c.large.mbps, f0),
      row('hangar-vmm CPU while it sends, % of one core', (c) => c.vmmCpuPct, f0),
      '',
      `Each round, 64-byte frames/s: Hangar ${each(micro.hangar)}; by hand ${each(micro.hand)}. The bridge counted ${f0(median(micro.hangar.map((c) => c.total)))} frames`
        + ` (Hangar) and ${f0(median(micro.hand.map((c) => c.total)))} (by hand) of ${f0(MICRO_OPS * 1.25)} sent per round.`
        + (thr.length ? ` Hangar's VM runs in a cgroup of its own capped at ${thr[0]!.cores} core(s) (cpu.max from its vCPUs; the polling vCPU thread and the device thread share it); it was throttled in ${thr.map((t) => `${t.pct.toFixed(0)} %`).join(', ')} of its scheduler periods`
          + (Math.max(...thr.map((t) => t.pct)) < 5 ? ', so the cap is not what held it back.' : '.') : '')
        + ` Host load average (1 min) after each round: ${micro.loads.join(', ')}.`,
    ];
  }
  const md = [
    '## Networks: guest ↔ host and guest ↔ guest (QEMU engine), guest → bridge (micro engine)',
    '',
    '`npm run bench -- network` (bench/network-bench.ts). Everything runs inside network namespaces the bench makes; nothing leaves them.',
    '',
    `**QEMU engine.** Two debian-12 VMs (1 vCPU, ${MEMORY} each, accelerator \`${res.accel}\`) with iperf3 3.12 (a variant of the image built into the`,
    'bench\'s own image folder), first as Hangar runs them: the daemon in a namespace of its own, both VMs on its `default` nat network',
    '(bridge, dnsmasq, nft filter and anti-spoofing rules on each TAP), commands in the guests through the guest agent. Then by hand, in the',
    'same run: `qemu-system-x86_64` as root, without Hangar\'s confinement (no sandbox, no cgroup cap, no uid of its own), with Hangar\'s argv for each VM (read from `/proc/PID/cmdline`:',
    'the same machine, vCPUs, memory, kernel, `-device`, `-blockdev` and `-netdev` options, the TAP opened by name instead of passed as a',
    'descriptor), on fresh overlays of the same base disk with copies of the same cloud-init seeds (so a first boot, like Hangar\'s),',
    'a bridge and two TAPs made with `ip` in another namespace, a throwaway dnsmasq for DHCP, no nft rules. The iperf3 server for guest ↔ host',
    'runs on the namespace side at the bridge\'s gateway address; guest → guest runs from VM a to VM b; each figure is what the receiver counted.',
    `Launch: Hangar from the create request (the daemon makes the root overlay, the seed and the TAP, then starts QEMU${res.createS.length ? `: ${res.createS.map((x) => x.toFixed(1)).join(' / ')} s` : ''}`,
    'until each create operation succeeded; VM b is created after VM a\'s create returns), by hand from spawning QEMU on files made beforehand; the lease as the API',
    '(`hangar list`) shows it, by hand as dnsmasq\'s lease file does.',
    '',
    ...rows,
    '',
    `Context: iperf3 between the daemon's namespace and a veth in another namespace on the same bridge (no VM), 5 s: ${f0(res.baseline)} Mbit/s.`,
    res.accel === 'tcg'
      ? 'Under TCG every guest instruction is emulated: the guests\' vCPUs, not the bridge, TAP or virtio-net, set these rates (two vCPU threads on a 2-core host shared with other jobs), so the Hangar / hand ratio is the figure to read, and it carries that noise.'
      : '',
    '',
    '**Micro engine.** Linux guests cannot boot on hangar-vmm on this host (its KVM emulates guest kernel mode), so the micro engine is measured with the',
    'ring-3 test guest `guests/virtio-bench.c` in net mode. The traffic is raw, one-way UDP frames the guest writes straight onto its virtio-net',
    `transmit queue (${f0(MICRO_OPS)} with a 64-byte payload, then ${f0(MICRO_OPS / 4)} with a 1472-byte one, batches of 32 per notify; no TCP, no replies,`,
    'no offloads), addressed to the gateway\'s MAC and counted as they arrive on the bridge\'s host side (its receive counter, sampled every 100 ms,',
    'the steady part of each phase; the counter counts IP packet bytes, without the Ethernet header). Hangar: the daemon\'s micro engine, the VM (1 vCPU, 64 MiB) on the',
    '`default` nat network (its TAP with Hangar\'s nft rules, the frames\' source address reserved for the NIC). By hand: hangar-vmm started as root',
    'with the same guest, boot arguments, memory and MAC on a TAP made with `ip` on a hand-made bridge. The two alternate, round by round.',
    '',
    ...microRows,
  ].join('\n');
  process.stdout.write(`${md}\n`);
  log(`written to ${writeSection('networks', md)}`);
}

await main().then(() => process.exit(0), (e: unknown) => { console.error(e); process.exit(1); });
