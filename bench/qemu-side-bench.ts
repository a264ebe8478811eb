/**
 * hangar-vmm side by side with QEMU `-M microvm -accel kvm`, same guest, same run.
 *
 * virtio-blk: guests/virtio-bench.c (ring 3, polling) does 4 KiB random reads at
 * queue depth 16 against the same 128 MiB raw file (in the page cache, so this
 * measures the device path). hangar-vmm boots the image as an ELF64 kernel;
 * QEMU enters the very same file through its PVH note (guests/lib/start.S).
 * The two sides run alternately, several rounds (the host is shared), and the
 * report gives each round's ratio and the medians. Absolute numbers are context;
 * the ratio is the result.
 *
 * Writes the `qemu-side` section of docs/benchmarks.md.
 *
 *   npm run build && node dist/bench/qemu-side-bench.js
 *   QSIDE_ROUNDS=5 QSIDE_OPS=40000 node dist/bench/qemu-side-bench.js
 *   QSIDE_ONLY_START=1 node dist/bench/qemu-side-bench.js   # start-up rows only (see ONLY_START)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeSection } from './report.js';
import { projectRoot } from '../src/common/paths.js';
import { VMM_MAIN, api, buildGuest, guestConfig, guestTestsUnavailable, startVmmConsole, tempDir } from '../test/helpers/vmm.js';
import { VMM_NODE_FLAGS } from '../src/vmm/process-flags.js';

const ROUNDS = Number(process.env.QSIDE_ROUNDS ?? 5);
/** Rounds of the blk part (QSIDE_BLK_ROUNDS=0 skips it, to try the start-up part alone). */
const BLK_ROUNDS = Number(process.env.QSIDE_BLK_ROUNDS ?? ROUNDS);
const OPS = Number(process.env.QSIDE_OPS ?? 100000);
const DISK_BYTES = 128 << 20;
/**
 * QSIDE_ONLY_START=1: only the start-up and memory rounds, written over those rows of the section
 * already in docs/benchmarks.md (the blk and net figures stay as they were measured), with the
 * date and load of this run in their caption: to re-measure start-up after a change to it.
 */
const ONLY_START = process.env.QSIDE_ONLY_START === '1';
/** QEMU's cache mode for the drive: writeback reads through the page cache, as hangar-vmm does. */
const QEMU_CACHE = process.env.QSIDE_QEMU_CACHE ?? 'writeback';

/** The contenders of one round, in the order of the first round (later rounds rotate it). */
interface Side { key: string; label: string; run(kernel: string, disk: string, dir: string): Promise<Sample> }
const SIDES: Side[] = [
  { key: 'hangar', label: 'hangar-vmm (queue on the vCPU thread)', run: (k, d, dir) => hangarBlk(k, d, dir, 'vcpu') },
  { key: 'qemu-uring', label: 'QEMU microvm, aio=io_uring', run: (k, d) => qemuBlk(k, d, 'io_uring') },
  { key: 'hangar-dev', label: 'hangar-vmm (queue on the device thread)', run: (k, d, dir) => hangarBlk(k, d, dir, 'device') },
  { key: 'hangar-io', label: 'hangar-vmm (I/O thread + ioeventfd)', run: (k, d, dir) => hangarBlk(k, d, dir, 'io') },
  { key: 'qemu-threads', label: 'QEMU microvm, aio=threads', run: (k, d) => qemuBlk(k, d, 'threads') },
];

interface PhaseTime { ops: number; seconds: number; cpuSeconds: number }

const CLK_TCK = 100;

/** utime + stime of every thread of `pid`, in seconds. */
function cpuSecondsOf(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** One run's result: IOPS by the host clock, and the process's CPU time per request. */
interface Sample { iops: number; cpuUsPerIo: number }

/** Times the guest's "B <phase> start/end" console markers with the host clock as they arrive. */
function watchPhases(child: ChildProcess): { phases: Map<string, PhaseTime>; output: () => string } {
  const starts = new Map<string, { t: number; cpu: number }>();
  const phases = new Map<string, PhaseTime>();
  let buf = '';
  let all = '';
  child.stdout!.on('data', (b: Buffer) => {
    const now = performance.now();
    const s = b.toString('latin1');
    all += s;
    buf += s;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      let m = /^B (\S+) start$/.exec(line);
      if (m) starts.set(m[1]!, { t: now, cpu: cpuSecondsOf(child.pid!) });
      m = /^B (\S+) end ops=(\d+)/.exec(line);
      const s0 = m ? starts.get(m[1]!) : undefined;
      if (m && s0) phases.set(m[1]!, { ops: Number(m[2]), seconds: (now - s0.t) / 1000, cpuSeconds: cpuSecondsOf(child.pid!) - s0.cpu });
    }
  });
  return { phases, output: () => all };
}

/** Runs `child` to its exit (killed after 5 min) and returns its exit code, one timed phase and what it printed. */
async function runToExit(child: ChildProcess, phase: string): Promise<{ code: number | null; phase: PhaseTime | undefined; output: string }> {
  const w = watchPhases(child);
  let err = '';
  child.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
  const timer = setTimeout(() => { if (child.exitCode === null) child.kill('SIGKILL'); }, 300_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, phase: w.phases.get(phase), output: `${w.output()}\n${err}` };
}

function bootArgs(): string {
  return `vbench.mode=blk vbench.blk=8 vbench.ops=${OPS}`;
}

function sample(p: PhaseTime): Sample {
  return { iops: p.ops / p.seconds, cpuUsPerIo: (p.cpuSeconds * 1e6) / p.ops };
}

/**
 * Where hangar-vmm serves the blk queue: 'vcpu' on the notifying vCPU thread (the default),
 * 'device' on the device thread (HANGAR_VIRTIO_BLK_FAST=0), 'io' on an I/O thread woken by an
 * ioeventfd (HANGAR_VIRTIO_BLK_IOTHREAD=1).
 */
async function hangarBlk(kernel: string, disk: string, dir: string, where: 'vcpu' | 'device' | 'io'): Promise<Sample> {
  const saved = { fast: process.env.HANGAR_VIRTIO_BLK_FAST, io: process.env.HANGAR_VIRTIO_BLK_IOTHREAD };
  process.env.HANGAR_VIRTIO_BLK_FAST = where === 'device' ? '0' : '1';
  process.env.HANGAR_VIRTIO_BLK_IOTHREAD = where === 'io' ? '1' : '0';
  const vmm = startVmmConsole(guestConfig(kernel, {
    memMib: 128, bootArgs: bootArgs(), drives: [{ drive_id: 'bench', path_on_host: disk, is_read_only: true }],
  }), dir, { timeoutMs: 300_000, logLevel: 'warn' });
  for (const [k, v] of [['HANGAR_VIRTIO_BLK_FAST', saved.fast], ['HANGAR_VIRTIO_BLK_IOTHREAD', saved.io]] as const) {
    if (v === undefined) delete process.env[k]; else process.env[k] = v;
  }
  const w = watchPhases(vmm.child);
  const r = await vmm.done;
  const p = w.phases.get('randread-qd16');
  if (r.code !== 0 || !p) throw new Error(`hangar-vmm exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return sample(p);
}

/** QEMU microvm with KVM, the same ELF through its PVH entry; isa-debug-exit on hangar's power port ends it. */
export function qemuMicrovmArgs(kernel: string, append: string, extra: string[]): string[] {
  return [
    '-M', 'microvm,acpi=off', '-accel', 'kvm', '-m', '128', '-smp', '1',
    '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-no-reboot',
    '-kernel', kernel, '-append', append,
    '-global', 'virtio-mmio.force-legacy=false',
    // hg_poweroff writes 0 to port 0x600: QEMU exits (0 << 1) | 1 = 1; a guest panic (2) gives 5.
    '-device', 'isa-debug-exit,iobase=0x600,iosize=1',
    ...extra,
  ];
}

async function qemuBlk(kernel: string, disk: string, aio: string): Promise<Sample> {
  const child = spawn('qemu-system-x86_64', qemuMicrovmArgs(kernel, bootArgs(), [
    '-drive', `file=${disk},format=raw,if=none,id=d0,cache=${QEMU_CACHE},aio=${aio},readonly=on`,
    '-device', 'virtio-blk-device,drive=d0',
  ]), { stdio: ['ignore', 'pipe', 'pipe'] });
  const { code, phase: p, output } = await runToExit(child, 'randread-qd16');
  if (code !== 1 || !p) throw new Error(`qemu exited ${code}:\n${output}`);
  return sample(p);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Process start → its control API answers: hangar-vmm's GET / on api.sock. */
async function hangarApiReady(dir: string): Promise<number> {
  const sock = path.join(dir, 'api.sock');
  fs.rmSync(sock, { force: true });
  const t0 = performance.now();
  const child = spawn(process.execPath, [...VMM_NODE_FLAGS, VMM_MAIN, '--api-sock', sock], { stdio: 'ignore' });
  try {
    for (;;) {
      if (fs.existsSync(sock)) {
        try { if ((await api(sock, 'GET', '/')).status === 200) return performance.now() - t0; } catch { /* not yet */ }
      }
      await sleep(1);
    }
  } finally {
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
  }
}

/** Process start → QEMU's control API (QMP) answers qmp_capabilities; the machine is built but held (-S). */
async function qemuApiReady(dir: string): Promise<number> {
  const sock = path.join(dir, 'qmp.sock');
  fs.rmSync(sock, { force: true });
  const t0 = performance.now();
  const child = spawn('qemu-system-x86_64', ['-M', 'microvm,acpi=off', '-accel', 'kvm', '-m', '128', '-nodefaults', '-no-user-config', '-display', 'none', '-S',
    '-qmp', `unix:${sock},server=on,wait=off`], { stdio: 'ignore' });
  try {
    for (;;) {
      if (fs.existsSync(sock)) {
        const ok = await new Promise<boolean>((resolve) => {
          const c = net.connect(sock);
          let buf = '';
          c.on('data', (b) => {
            buf += b.toString();
            if (buf.includes('"QMP"') && !buf.includes('"return"')) { c.write('{"execute":"qmp_capabilities"}\n'); buf = buf.replace('"QMP"', ''); }
            if (buf.includes('"return"')) { c.destroy(); resolve(true); }
          });
          c.on('error', () => resolve(false));
        });
        if (ok) return performance.now() - t0;
      }
      await sleep(1);
    }
  } finally {
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
  }
}

/**
 * Proportional set size of a process beyond its guest RAM, in MiB: smaps' Pss over every
 * mapping, less the mappings at least as large as guest RAM (its RAM block; the guest's
 * pages there are private, so their PSS is what the guest touched).
 */
function pssBeyondGuestMib(pid: number, memMib: number): number {
  const smaps = fs.readFileSync(`/proc/${pid}/smaps`, 'utf8');
  let total = 0, ram = 0, size = 0;
  for (const line of smaps.split('\n')) {
    let m = /^Size:\s+(\d+) kB/.exec(line);
    if (m) { size = Number(m[1]); continue; }
    m = /^Pss:\s+(\d+) kB/.exec(line);
    if (m) { total += Number(m[1]); if (size >= memMib * 1024) ram += Number(m[1]); }
  }
  return (total - ram) / 1024;
}

/**
 * Process start → the guest's first console byte, then memory beyond guest RAM once the guest
 * (guests/echo.c, idle, waiting for input) is up. Same ELF on both sides.
 */
async function bootAndMemory(side: 'hangar' | 'qemu', echoElf: string, dir: string): Promise<{ firstByteMs: number; pssMib: number }> {
  const memMib = 128;
  const t0 = performance.now();
  let child: ChildProcess;
  if (side === 'hangar') {
    const cfg = path.join(dir, 'echo.json');
    fs.writeFileSync(cfg, JSON.stringify(guestConfig(echoElf, { memMib, bootArgs: 'console=ttyS0' })));
    child = spawn(process.execPath, [...VMM_NODE_FLAGS, VMM_MAIN, '--config', cfg, '--console', 'stdio', '--log-level', 'warn'], { stdio: ['pipe', 'pipe', 'ignore'] });
  } else {
    child = spawn('qemu-system-x86_64', qemuMicrovmArgs(echoElf, 'console=ttyS0', []), { stdio: ['pipe', 'pipe', 'ignore'] });
  }
  try {
    let first = 0;
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${side}: the echo guest did not come up:\n${out}`)), 60_000);
      child.stdout!.on('data', (b: Buffer) => {
        if (!first) first = performance.now();
        out += b.toString('latin1');
        if (out.includes('echo ready')) { clearTimeout(timer); resolve(); }
      });
    });
    await sleep(300);
    return { firstByteMs: first - t0, pssMib: pssBeyondGuestMib(child.pid!, memMib) };
  } finally {
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
  }
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

/**
 * virtio-net transmit: guests/virtio-bench.c in net mode sends `ops` 64-byte UDP frames to a TAP
 * inside a network namespace made for this run (the VMM runs in it too), batches of 32 per
 * notify. Returns frames/s by the host clock and the frames the TAP counted.
 */
async function netSide(side: 'hangar' | 'qemu', kernel: string, dir: string, ops: number): Promise<{ pps: number; tapRx: number }> {
  const ns = `hangar-qside-${process.pid}`;
  const tap = `hqs${process.pid % 100000}`;
  ip('netns', 'add', ns);
  try {
    ip('-n', ns, 'tuntap', 'add', 'dev', tap, 'mode', 'tap');
    ip('-n', ns, 'addr', 'add', '10.213.2.1/24', 'dev', tap);
    ip('-n', ns, 'link', 'set', tap, 'up');
    const mac = (JSON.parse(ip('-n', ns, '-j', 'link', 'show', tap)) as Array<{ address: string }>)[0]!.address;
    const rx = () => (JSON.parse(ip('-n', ns, '-s', '-j', 'link', 'show', tap)) as Array<{ stats64: { rx: { packets: number } } }>)[0]!.stats64.rx.packets;
    const before = rx();
    const args = `vbench.mode=net vbench.ops=${ops} vbench.dmac=0x${mac.replace(/:/g, '')}`;
    let cmd: string[];
    if (side === 'hangar') {
      const cfg = path.join(dir, 'net.json');
      fs.writeFileSync(cfg, JSON.stringify(guestConfig(kernel, { memMib: 128, bootArgs: args, nets: [{ iface_id: 'eth0', host_dev_name: tap }] })));
      cmd = [process.execPath, ...VMM_NODE_FLAGS, VMM_MAIN, '--config', cfg, '--console', 'stdio', '--log-level', 'warn'];
    } else {
      cmd = ['qemu-system-x86_64', ...qemuMicrovmArgs(kernel, args, ['-netdev', `tap,id=n0,ifname=${tap},script=no,downscript=no`, '-device', 'virtio-net-device,netdev=n0'])];
    }
    const child = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
    const { code, phase: p, output } = await runToExit(child, 'net-tx-64');
    if (code !== (side === 'hangar' ? 0 : 1) || !p) throw new Error(`${side} (net) exited ${code}:\n${output}`);
    return { pps: p.ops / p.seconds, tapRx: rx() - before };
  } finally {
    try { ip('netns', 'del', ns); } catch { /* gone */ }
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function load(): string {
  return os.loadavg().map((l) => l.toFixed(2)).join(' / ');
}

type StartupSamples = Record<'hangar' | 'qemu', { api: number[]; first: number[]; pss: number[] }>;

/** Start-up and memory, sides alternating: process start → API answer, → first console byte, PSS beyond guest RAM. */
async function startupRounds(dir: string): Promise<StartupSamples> {
  const echo = buildGuest('echo');
  const start: StartupSamples = { hangar: { api: [], first: [], pss: [] }, qemu: { api: [], first: [], pss: [] } };
  for (let i = 0; i < ROUNDS; i++) {
    for (const side of (i % 2 === 0 ? ['hangar', 'qemu'] : ['qemu', 'hangar']) as Array<'hangar' | 'qemu'>) {
      start[side].api.push(side === 'hangar' ? await hangarApiReady(dir) : await qemuApiReady(dir));
      const b = await bootAndMemory(side, echo, dir);
      start[side].first.push(b.firstByteMs);
      start[side].pss.push(b.pssMib);
    }
  }
  return start;
}

const STARTUP_CAPTION = 'Start-up and memory';
const STARTUP_ROWS = [
  { what: 'process start → control API answers (hangar-vmm `GET /`; QEMU `-S`, QMP `qmp_capabilities`)', key: 'api', unit: 'ms', digits: 1 },
  { what: 'process start → first guest console byte (`guests/echo.c`, same ELF; QEMU through its firmware and PVH)', key: 'first', unit: 'ms', digits: 1 },
  { what: 'memory beyond guest RAM, PSS (`/proc/PID/smaps`, guest idle, 128 MiB RAM)', key: 'pss', unit: 'MiB', digits: 1 },
] as const;

function startupRows(start: StartupSamples): string[] {
  return STARTUP_ROWS.map(({ what, key, unit, digits }) => {
    const h = median(start.hangar[key]), q = median(start.qemu[key]);
    return `| ${what} | ${fmt(h, digits)} ${unit} | ${fmt(q, digits)} ${unit} | ${(h / q).toFixed(2)}× |`;
  });
}

/** QSIDE_ONLY_START: the start-up rows and their caption replaced in the section as it stands. */
function rewriteStartupRows(start: StartupSamples, loadBefore: string): string {
  const file = path.join(projectRoot(), 'docs', 'benchmarks.md');
  const doc = fs.readFileSync(file, 'utf8');
  const open = doc.indexOf('<!-- section:qemu-side -->');
  const close = doc.indexOf('<!-- /section:qemu-side -->');
  if (open < 0 || close < open) throw new Error('docs/benchmarks.md has no qemu-side section to update: run the whole bench');
  const rows = startupRows(start);
  const lines = doc.slice(open, close).split('\n').map((line) => {
    if (line.startsWith(`${STARTUP_CAPTION},`)) {
      return `${STARTUP_CAPTION}, re-measured ${new Date().toISOString()} apart from the rest of this section (host load average before: ${loadBefore}, after: ${load()}), sides alternating, ${ROUNDS} rounds each (medians; lower is better, ratio = hangar-vmm ÷ QEMU):`;
    }
    const i = STARTUP_ROWS.findIndex((r) => line.startsWith(`| ${r.what} |`));
    return i >= 0 ? rows[i]! : line;
  });
  fs.writeFileSync(file, doc.slice(0, open) + lines.join('\n') + doc.slice(close));
  process.stdout.write(`${rows.join('\n')}\n\nwritten to ${file}\n`);
  return file;
}

async function main(): Promise<void> {
  const why = guestTestsUnavailable();
  if (why) throw new Error(`cannot run the side-by-side benchmark: ${why}`);
  const dir = tempDir('qemu-side');
  try {
    if (ONLY_START) {
      const loadBefore = load();
      rewriteStartupRows(await startupRounds(dir), loadBefore);
      return;
    }
    const kernel = buildGuest('virtio-bench');
    const disk = path.join(dir, 'bench.img');
    const fd = fs.openSync(disk, 'w');
    for (let off = 0; off < DISK_BYTES; off += 8 << 20) fs.writeSync(fd, randomBytes(8 << 20));
    fs.closeSync(fd);
    fs.readFileSync(disk); // into the page cache for both sides
    const loadBefore = load();
    const rounds: Array<Record<string, Sample>> = [];
    for (let i = 0; i < BLK_ROUNDS; i++) {
      // Rotate who goes first, so a drift in the host's load does not favour one side.
      const order = SIDES.map((_, j) => SIDES[(i + j) % SIDES.length]!);
      const r: Record<string, Sample> = {};
      for (const side of order) r[side.key] = await side.run(kernel, disk, dir);
      rounds.push(r);
      process.stderr.write(`round ${i + 1}: ${SIDES.map((x) => `${x.key} ${fmt(r[x.key]!.iops)}`).join(', ')} (load ${load()})\n`);
    }
    const loadAfter = load();
    const best = (r: Record<string, Sample>) => Math.max(r['qemu-uring']!.iops, r['qemu-threads']!.iops);
    const ratios = rounds.map((r) => r.hangar!.iops / best(r));
    const med = (key: string, f: (s: Sample) => number) => median(rounds.map((r) => f(r[key]!)));
    const md = [
      '## hangar-vmm side by side with QEMU microvm',
      '',
      'Same guest image (`guests/virtio-bench.c`, ring 3, polling with interrupts suppressed, 1 vCPU, 128 MiB), same run:',
      'hangar-vmm boots it as an ELF64 kernel, `qemu-system-x86_64 -M microvm -accel kvm` enters the same file through its',
      `PVH note. 4 KiB random reads at queue depth 16 (${fmt(OPS)} per run) from a 128 MiB raw file in the page cache`,
      `(QEMU: virtio-mmio v2, \`cache=${QEMU_CACHE}\`, with each of its two AIO back ends). Each round runs all four once, in an`,
      `order rotated per round; ${BLK_ROUNDS} rounds. IOPS: host wall clock between the guest's console markers. CPU: user+system`,
      'time of the whole VMM process over the same span, per request (it includes the vCPU thread polling in the guest).',
      `Host load average (1/5/15 min) before: ${loadBefore}, after: ${loadAfter} — the host (2 vCPUs) is shared with other work,`,
      'so single runs scatter widely; compare within a round and the medians.',
      '',
      `| round | ${SIDES.map((x) => x.label).join(' | ')} | hangar-vmm ÷ best QEMU |`,
      `|---|${SIDES.map(() => '---|').join('')}---|`,
      ...rounds.map((r, i) => `| ${i + 1} | ${SIDES.map((x) => `${fmt(r[x.key]!.iops)} IOPS`).join(' | ')} | ${ratios[i]!.toFixed(2)}× |`),
      `| **median** | ${SIDES.map((x) => `**${fmt(med(x.key, (v) => v.iops))} IOPS**`).join(' | ')} | **${median(ratios).toFixed(2)}×** |`,
      `| CPU µs per request (median) | ${SIDES.map((x) => `${fmt(med(x.key, (v) => v.cpuUsPerIo), 1)}`).join(' | ')} | |`,
    ].join('\n');
    // Start-up and memory, same run, alternating sides.
    const start = await startupRounds(dir);
    // virtio-net transmit, same run, alternating (needs root for the TAP and the namespace).
    const net: Record<string, number[]> = { hangar: [], qemu: [] };
    let netNote = 'virtio-net part skipped (needs root for a TAP and a network namespace).';
    if (process.getuid?.() === 0) {
      const NET_OPS = Number(process.env.QSIDE_NET_OPS ?? 200000);
      const netRx: Record<string, number[]> = { hangar: [], qemu: [] };
      for (let i = 0; i < ROUNDS; i++) {
        for (const side of (i % 2 === 0 ? ['hangar', 'qemu'] : ['qemu', 'hangar']) as Array<'hangar' | 'qemu'>) {
          const r = await netSide(side, kernel, dir, NET_OPS);
          net[side]!.push(r.pps);
          netRx[side]!.push(r.tapRx);
        }
      }
      netNote = `virtio-net: ${fmt(NET_OPS)} frames of 64-byte UDP per run (then a quarter as many 1500-byte packets, not timed here), guest → a TAP in a network namespace made for the run; the TAP counted (median) ${fmt(median(netRx.hangar!))} frames received from hangar-vmm and ${fmt(median(netRx.qemu!))} from QEMU (user-space virtio-net, no vhost: /dev/vhost-net is absent here).`;
    }
    const md2 = [
      '',
      `${STARTUP_CAPTION}, same run, sides alternating, ${ROUNDS} rounds each (medians; lower is better, ratio = hangar-vmm ÷ QEMU):`,
      '',
      '| what | hangar-vmm | QEMU microvm | ratio |',
      '|---|---|---|---|',
      ...startupRows(start),
      ...(net.hangar!.length ? [`| virtio-net guest → TAP, 64-byte UDP frames/s (higher is better) | ${fmt(median(net.hangar!))} | ${fmt(median(net.qemu!))} | ${(median(net.hangar!) / median(net.qemu!)).toFixed(2)}× |`] : []),
      '',
      netNote,
    ].join('\n');
    const file = writeSection('qemu-side', md + '\n' + md2);
    process.stdout.write(`${md}\n${md2}\n\nwritten to ${file}\n`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
