/**
 * virtio-net of a Linux guest in the KVM lab, hangar-vmm against QEMU, in
 * minutes rather than the Debian bench's half hour: in ONE L1
 * (scripts/kvm-lab.sh --with-qemu), the tiny image's kernel (Debian's cloud
 * kernel, the one the debian-12 image boots) with the lab's busybox root
 * (test/lab/linux-guest.ts boots the same), booted by hangar-vmm, then by
 * QEMU `-M microvm -accel kvm` (virtio-mmio like hangar-vmm), 1 vCPU and
 * 256 MiB each, virtio-net on a TAP in L1 (10.0.2.2 ↔ 10.0.2.1):
 *
 *   - iperf3 TCP guest → L1 and L1 → guest for LAB_NET_RUNTIME_S seconds
 *     each: L1's iperf3 is the host's (scripts/kvm-lab.sh --with-qemu puts it
 *     in L1), and so is the guest's: the binary and its libraries go to the
 *     guest in a tar archive on a second (raw) disk, unpacked there and run
 *     through their own dynamic loader (the lab's root is busybox only);
 *     the figure is the receiver's, from the server's JSON report in L1;
 *   - ping's round trip (count-bounded).
 *
 * Beside each figure the log has the guest's own view (packets and bytes its
 * NIC sent, so the size of its TSO segments; TCP segments; interrupts) and,
 * for every engine, its threads' CPU in L1 (bench/lab-diag.ts) — where the
 * time of a run went.
 *
 *   npm run bench -- lab-net        on the host: runs the lab, writes the `lab-net` section of docs/benchmarks.md
 *   LAB_NET_RUNTIME_S=10 (default): each TCP run's length
 *   LAB_NET_ENGINES=hangar-vmm,hangar-vmm-baseline,qemu-microvm: those engines (without both of
 *     hangar-vmm and qemu-microvm an experiment: prints, writes no section); hangar-vmm-baseline is
 *     hangar-vmm without the NIC's I/O thread (HANGAR_VIRTIO_NET_IOTHREAD=0)
 *   LAB_NET_PROFILE=1: hangar-vmm runs under V8's CPU profiler (`--cpu-prof`, every thread); the
 *     heaviest functions are printed when it ends (an experiment)
 *   HANGAR_VIRTIO_*: hangar-vmm's own switches, passed on (an experiment)
 *   LAB_NET_VARIANT='K=V ...' with hangar-vmm-variant in LAB_NET_ENGINES: one more hangar-vmm with
 *     those switches, in the same L1 (an A/B pair)
 *
 * Inside L1 (HANGAR_LAB=1) it measures and prints one `LAB-NET {json}` line.
 * L1 runs under TCG on one CPU: absolute figures are the emulator's; the ratio is what to read.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { finishSection } from './report.js';
import { eachEngine, endLabJob, observe, summarizeCpuProfiles } from './lab-diag.js';
import { LAB_GUEST_ADDR, LAB_GUEST_MAC, LAB_L1_ADDR, LAB_QEMU, LAB_TAP, startLabVmm } from './lab-vmm.js';
import { shellRun, waitForText, LAB_SHELL_PROMPT, type SerialConsole } from '../test/lab/serial-login.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const RUNTIME_S = Number(process.env.LAB_NET_RUNTIME_S ?? 10);
const TINY_DIR = path.join(process.env.HANGAR_IMAGE_DIR ?? path.join(ROOT, '.cache', 'images'), 'tiny');
/** What scripts/kvm-lab.sh puts in L1 for L2 guests (build_l2): the initramfs overlay and the busybox root disk. */
const LAB_L2 = path.join(ROOT, '.cache', 'lab-l2');
const QEMU = LAB_QEMU;
/** The host's iperf3 and the libraries it loads, as --with-qemu puts them in L1. */
const IPERF3_BIN = '/opt/qemu/bin/iperf3-bin';
const IPERF3_LIBS = '/opt/qemu/lib';
const BOOT_MS = 600_000;
const STEP_MS = 180_000;
const MEM_MIB = 256;
const TAP = LAB_TAP;
const L1_ADDR = LAB_L1_ADDR;
const GUEST_ADDR = LAB_GUEST_ADDR;
const GUEST_MAC = LAB_GUEST_MAC;
const IPERF_PORT = 5201;
/** The guest's iperf3, once unpacked from the tools disk. */
const GUEST_IPERF3 = '/opt/iperf/lib/ld-linux-x86-64.so.2 --library-path /opt/iperf/lib /opt/iperf/iperf3';
const ALL_ENGINES = ['hangar-vmm', 'qemu-microvm'] as const;
/**
 * hangar-vmm without the NIC's I/O thread: the kicking vCPU thread transmits, the device thread
 * receives (what it did before 2026-11-30 13:20), in the same L1 — a before/after pair.
 */
const BASELINE = 'hangar-vmm-baseline' as const;
const BASELINE_ENV = { HANGAR_VIRTIO_NET_IOTHREAD: '0' };
/** hangar-vmm with the switches in LAB_NET_VARIANT (`K=V K=V`): an A/B pair in one L1. */
const VARIANT = 'hangar-vmm-variant' as const;
const VARIANT_ENV: Record<string, string> = Object.fromEntries((process.env.LAB_NET_VARIANT ?? '').split(/\s+/).filter(Boolean).map((kv) => kv.split('=', 2) as [string, string]));
type Engine = (typeof ALL_ENGINES)[number] | typeof BASELINE | typeof VARIANT;
const ENGINES: readonly Engine[] = process.env.LAB_NET_ENGINES
  ? ([...ALL_ENGINES, BASELINE, VARIANT] as Engine[]).filter((e) => process.env.LAB_NET_ENGINES!.split(',').includes(e)) : ALL_ENGINES;
const PROFILE = process.env.LAB_NET_PROFILE === '1';
/** Passed on to the job in L1 (its environment starts empty). */
const SWITCHES = Object.keys(process.env).filter((k) => k.startsWith('HANGAR_VIRTIO_'));
const PASS_ENV = ['LAB_NET_ENGINES', 'LAB_NET_PROFILE', 'LAB_NET_VARIANT', ...SWITCHES];

interface Figures {
  bootToPromptS?: number;
  tcpGuestToL1Mbits?: number; tcpL1ToGuestMbits?: number;
  /** Bytes per packet the guest's NIC sent while it sent (its TSO segments' size). */
  guestTxBytesPerPacket?: number;
  pingAvgMs?: number; pingMinMs?: number;
}
interface Report { l1: string; runtimeS: number; results: Partial<Record<Engine, Figures>>; errors: string[] }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const say = (s: string) => process.stdout.write(`lab-net: ${s}\n`);

interface Running extends SerialConsole { child: ChildProcess; exited: Promise<void>; apiSock?: string; profDir?: string }

/** The tiny image's initramfs with the lab's overlay after it (Linux unpacks concatenated archives). */
function labInitrd(dir: string): string {
  const tiny = fs.readFileSync(path.join(TINY_DIR, 'initrd.img'));
  const out = path.join(dir, 'initrd-lab.img');
  fs.writeFileSync(out, Buffer.concat([tiny, Buffer.alloc((4 - (tiny.length % 4)) % 4), fs.readFileSync(path.join(LAB_L2, 'overlay.cpio'))]));
  return out;
}

async function start(engine: Engine, dir: string): Promise<Running> {
  const img = JSON.parse(fs.readFileSync(path.join(TINY_DIR, 'image.json'), 'utf8')) as { cmdline: string };
  const kernel = path.join(TINY_DIR, 'vmlinuz');
  const initrd = labInitrd(dir);
  const cmdline = `${img.cmdline} rdinit=/lab-init hangar.root=/dev/vda`;
  // A fresh copy of the busybox root for each engine.
  const rootDisk = path.join(dir, `root-${engine}.ext4`);
  fs.copyFileSync(path.join(LAB_L2, 'root.ext4'), rootDisk);
  const tools = toolsDisk(dir);
  const state = { text: '' };
  let child: ChildProcess;
  let write: (s: string) => void;
  let apiSock: string | undefined;
  let profDir: string | undefined;
  if (engine !== 'qemu-microvm') {
    const nodeFlags: string[] = [];
    if (PROFILE) {
      profDir = path.join(dir, `prof-${engine}`);
      nodeFlags.push('--cpu-prof', `--cpu-prof-dir=${profDir}`, '--cpu-prof-interval=2000');
    }
    // Under the profiler without the seccomp filter, which would refuse the profile's files.
    const env = { ...process.env, ...(engine === BASELINE ? BASELINE_ENV : engine === VARIANT ? VARIANT_ENV : {}), ...(PROFILE ? { HANGAR_VMM_SECCOMP: '0' } : {}) };
    const vmm = await startLabVmm({
      root: ROOT, dir, env, nodeFlags, timeoutMs: STEP_MS, onConsole: (t) => { state.text += t; },
      config: {
        'machine-config': { vcpu_count: 1, mem_size_mib: MEM_MIB },
        'boot-source': { kernel_image_path: kernel, initrd_path: initrd, boot_args: cmdline },
        drives: [
          { drive_id: 'root', path_on_host: rootDisk, is_root_device: true, is_read_only: false },
          { drive_id: 'tools', path_on_host: tools, is_root_device: false, is_read_only: true },
        ],
        'network-interfaces': [{ iface_id: 'eth0', host_dev_name: TAP, guest_mac: GUEST_MAC }],
      },
    });
    ({ child, apiSock, write } = vmm);
  } else {
    child = spawn(QEMU, ['-M', 'microvm', '-accel', 'kvm', '-cpu', 'host', '-smp', '1', '-m', String(MEM_MIB), '-nodefaults', '-no-user-config', '-display', 'none',
      '-serial', 'stdio', '-kernel', kernel, '-initrd', initrd, '-append', cmdline,
      '-drive', `id=root,file=${rootDisk},format=raw,if=none`, '-device', 'virtio-blk-device,drive=root',
      '-drive', `id=tools,file=${tools},format=raw,if=none,readonly=on`, '-device', 'virtio-blk-device,drive=tools',
      '-netdev', `tap,id=n0,ifname=${TAP},script=no,downscript=no`, '-device', `virtio-net-device,netdev=n0,mac=${GUEST_MAC}`],
    { stdio: ['pipe', 'pipe', 'inherit'] });
    child.stdout!.on('data', (d: Buffer) => { state.text += d.toString('latin1'); });
    write = (x) => { child.stdin!.write(x); };
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { get text() { return state.text; }, type: write, child, exited, ...(apiSock ? { apiSock } : {}), ...(profDir ? { profDir } : {}) };
}

/** One ustar entry: header, then the data padded to 512 bytes. */
function tarEntry(name: string, data: Buffer, mode: number): Buffer {
  const h = Buffer.alloc(512);
  const field = (off: number, len: number, v: string) => h.write(v, off, len, 'latin1');
  const octal = (off: number, len: number, v: number) => field(off, len, `${v.toString(8).padStart(len - 1, '0')}\0`);
  field(0, 100, name);
  octal(100, 8, mode);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, data.length);
  octal(136, 12, 0);
  h.fill(0x20, 148, 156); // the checksum counts its own field as spaces
  field(156, 1, '0');
  field(257, 8, 'ustar\x0000');
  let sum = 0;
  for (const byte of h) sum += byte;
  field(148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return Buffer.concat([h, data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
}

/**
 * The guest's tools disk: a tar archive (raw, no filesystem: busybox tar reads it from the
 * block device) of L1's iperf3 and every library its loader resolves, under iperf/.
 */
function toolsDisk(dir: string): string {
  const loader = path.join(IPERF3_LIBS, 'ld-linux-x86-64.so.2');
  const listing = execFileSync(loader, ['--library-path', IPERF3_LIBS, '--list', IPERF3_BIN], { encoding: 'utf8' });
  const libs = new Set([loader]);
  for (const m of listing.matchAll(/=> (\/\S+)/g)) libs.add(m[1]!);
  const parts = [tarEntry('iperf/iperf3', fs.readFileSync(IPERF3_BIN), 0o755)];
  for (const l of libs) parts.push(tarEntry(`iperf/lib/${path.basename(l)}`, fs.readFileSync(l), 0o755));
  parts.push(Buffer.alloc(1024));
  const out = path.join(dir, 'tools.tar');
  const tar = Buffer.concat(parts);
  // A whole number of 4 KiB blocks: the disk's size.
  fs.writeFileSync(out, Buffer.concat([tar, Buffer.alloc((4096 - (tar.length % 4096)) % 4096)]));
  return out;
}

/** L1's iperf3 server for one test (`-1`); its end, when the test is over. */
function iperfServer(): { done: Promise<void>; child: ChildProcess } {
  const child = spawn(IPERF3_BIN.replace(/-bin$/, ''), ['-s', '-1', '-B', L1_ADDR, '-p', String(IPERF_PORT)], { stdio: 'ignore' });
  return { child, done: new Promise((resolve) => child.once('exit', () => resolve())) };
}

async function measure(engine: Engine, g: Running, f: Figures): Promise<void> {
  let at = 0;
  const run = async (cmd: string, ms = STEP_MS): Promise<string> => {
    const r = await shellRun(g, cmd, at, ms);
    at = r.next;
    say(`  $ ${cmd.slice(0, 110)}\n${r.out.split('\n').map((l) => `    ${l}`).join('\n')}`);
    return r.out;
  };
  const target = { pid: g.child.pid, ...(g.apiSock ? { apiSock: g.apiSock } : {}), tap: TAP, skipDevices: (d: string) => d.startsWith('virtio-blk') };
  await run(`uname -r; ip addr add ${GUEST_ADDR}/24 dev eth0 && ip link set eth0 up && cat /sys/class/net/eth0/device/features 2>/dev/null; cd /sys/devices/system/clocksource/clocksource0 && cat current_clocksource available_clocksource; cd /; dmesg | grep -i -E 'clocksource|tsc' | tail -6`);
  execFileSync('ip', ['addr', 'add', `${L1_ADDR}/24`, 'dev', TAP]);
  execFileSync('ip', ['link', 'set', TAP, 'up']);
  const ping = await observe(`${engine} ping`, target, say, () => run(`ping -c 20 -i 0.2 -W 5 -q ${L1_ADDR} | tail -2`));
  const pm = /min\/avg\/max = ([0-9.]+)\/([0-9.]+)\//.exec(ping);
  if (pm) { f.pingMinMs = Number(pm[1]); f.pingAvgMs = Number(pm[2]); }
  // The guest's counters around each run: its NIC's packets and bytes, TCP segments, interrupts.
  const counters = "cat /sys/class/net/eth0/statistics/tx_packets /sys/class/net/eth0/statistics/tx_bytes /sys/class/net/eth0/statistics/rx_packets /sys/class/net/eth0/statistics/rx_bytes | tr '\\n' ' '; echo; grep -E '^Tcp:' /proc/net/snmp | tail -1 | cut -d' ' -f11-13; grep virtio /proc/interrupts | tr -s ' '";
  const nums = (out: string): number[] => (out.split('\n')[0] ?? '').trim().split(/\s+/).map(Number);

  await run('mkdir -p /opt && cd /opt && tar -xf /dev/vdb && cd / && ls /opt/iperf/lib | wc -l');
  const tcp = async (reverse: boolean): Promise<number> => {
    const label = reverse ? 'L1 → guest' : 'guest → L1';
    const server = iperfServer();
    try {
      await sleep(500);
      const before = nums(await run(counters));
      // The client's JSON report (in the guest): the receiver's rate, then the sender's window and RTT (µs) as it went.
      const report = "grep -A6 '\"sum_received\"' /tmp/c.json | grep bits_per_second | tail -1; grep -E '\"(snd_cwnd|rtt|retransmits)\"' /tmp/c.json | tr -d ' \\t\\n' | tail -c 600; echo";
      const out = await observe(`${engine} iperf3 ${label}`, target, say, () => run(`${GUEST_IPERF3} -c ${L1_ADDR} -p ${IPERF_PORT} -t ${RUNTIME_S} ${reverse ? '-R ' : ''}-J > /tmp/c.json; echo rc=$?; ${report}`, STEP_MS));
      const after = nums(await run(counters));
      await Promise.race([server.done, sleep(30_000)]);
      const bps = /"bits_per_second":\s*([0-9.e+]+)/.exec(out);
      if (!/rc=0/.test(out) || !bps) throw new Error(`iperf3 ${label}: ${JSON.stringify(out.slice(0, 300))}`);
      const r = { mbits: +(Number(bps[1]) / 1e6).toFixed(1) };
      const pk = after[0]! - before[0]!;
      if (!reverse && pk > 0) f.guestTxBytesPerPacket = Math.round((after[1]! - before[1]!) / pk);
      say(`${engine}: ${label} ${r.mbits} Mbit/s; guest NIC sent ${pk} packets, received ${after[2]! - before[2]!}`);
      return r.mbits;
    } finally {
      if (server.child.exitCode === null) server.child.kill('SIGKILL');
    }
  };
  f.tcpGuestToL1Mbits = await tcp(false);
  f.tcpL1ToGuestMbits = await tcp(true);
}

async function onEngine(engine: Engine, dir: string, report: Report): Promise<void> {
  const t0 = Date.now();
  const g = await start(engine, dir);
  try {
    await waitForText(g, LAB_SHELL_PROMPT, 0, BOOT_MS);
    const f: Figures = { bootToPromptS: +((Date.now() - t0) / 1000).toFixed(1) };
    report.results[engine] = f;
    say(`${engine}: shell prompt after ${f.bootToPromptS} s`);
    await measure(engine, g, f);
    say(`${engine}: ${JSON.stringify(f)}`);
  } catch (e) {
    for (const l of g.text.replace(/\r/g, '').split('\n').slice(-30)) say(`  console: ${l}`);
    throw e;
  } finally {
    // poweroff: busybox init → ACPI S5; hangar-vmm then ends normally (and writes its profiles).
    if (g.child.exitCode === null) { g.type('poweroff\n'); await Promise.race([g.exited, sleep(120_000)]); }
    if (g.child.exitCode === null && g.child.signalCode === null) { g.child.kill('SIGKILL'); await g.exited; }
    if (g.profDir) for (const l of summarizeCpuProfiles(g.profDir)) say(l);
  }
}

async function inside(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-lab-net-'));
  const report: Report = { l1: `${os.cpus()[0]?.model ?? '?'}, ${os.cpus().length} CPU, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Linux ${os.release()}`, runtimeS: RUNTIME_S, results: {}, errors: [] };
  try {
    for (const f of [path.join(TINY_DIR, 'vmlinuz'), path.join(LAB_L2, 'root.ext4'), IPERF3_BIN, ...(ENGINES.includes('qemu-microvm') ? [QEMU] : [])]) {
      if (!fs.existsSync(f)) throw new Error(`${f} missing: run the lab with --with-qemu`);
    }
    await eachEngine(ENGINES, report, say, (e) => onEngine(e, dir, report));
  } catch (err) {
    report.errors.push((err as Error).message);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  endLabJob('LAB-NET', report);
}

const ROWS: Array<[keyof Figures, string]> = [
  ['tcpGuestToL1Mbits', 'TCP guest → L1 (Mbit/s)'],
  ['tcpL1ToGuestMbits', 'TCP L1 → guest (Mbit/s)'],
  ['guestTxBytesPerPacket', "guest → L1: bytes per packet the guest's NIC sent (TSO segment size)"],
  ['pingAvgMs', 'ping guest → L1, avg RTT (ms)'],
  ['pingMinMs', 'ping guest → L1, min RTT (ms)'],
  ['bootToPromptS', 'spawn → shell prompt (s)'],
];

async function outside(): Promise<void> {
  const lab = spawn('bash', [path.join(ROOT, 'scripts', 'kvm-lab.sh'), '--with-qemu', '--timeout', '2400', '--stall', '300', '--',
    'env', `LAB_NET_RUNTIME_S=${RUNTIME_S}`, ...PASS_ENV.filter((k) => process.env[k] !== undefined).map((k) => `${k}=${process.env[k]}`), 'node', 'dist/bench/lab-net-bench.js'],
  { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  lab.stdout.on('data', (d: Buffer) => { out += d.toString(); process.stdout.write(d); });
  const code = await new Promise<number | null>((resolve) => lab.once('exit', resolve));
  const line = /^LAB-NET (\{.*\})\r?$/m.exec(out);
  if (!line) throw new Error(`the lab reported no result (exit ${code})`);
  const r = JSON.parse(line[1]!) as Report;
  const engines = ENGINES.filter((e) => r.results[e]);
  const q = r.results['qemu-microvm'];
  const cell = (v: unknown) => (v === undefined ? '—' : String(v));
  const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined && b !== 0 ? (a / b).toFixed(2) : '—');
  const vmms = engines.filter((e) => e !== 'qemu-microvm');
  const md = [
    '## virtio-net of a Linux guest in the KVM lab: hangar-vmm vs QEMU (`lab-net`)',
    '',
    'Written by `npm run bench -- lab-net` (bench/lab-net-bench.ts; runs `scripts/kvm-lab.sh --with-qemu`, ~10 minutes).',
    '**L1 is QEMU TCG `-cpu max` with ONE CPU** (nested SVM gives it a real `/dev/kvm`): the guest, its VMM and L1\'s end of the',
    'TAP share that one emulated CPU, so absolute figures are the emulator\'s; **the ratio is the figure to read**.',
    '',
    'In one L1: Debian\'s cloud kernel with the lab\'s busybox root (the guest of test/lab/linux-guest.ts), booted by hangar-vmm and',
    'by QEMU 7.2 `-M microvm -accel kvm -cpu host` (virtio-mmio, a vnet-header TAP), 1 vCPU, 256 MiB each. iperf3 TCP for',
    `${r.runtimeS} s each way between the guest (10.0.2.2) and L1 (10.0.2.1): the host's iperf3 on both ends (the guest's from a`,
    "tar archive on a second disk), the receiver's figure; ping 20 × 0.2 s.",
    '',
    `| measure | ${engines.join(' | ')} |${vmms.map((e) => ` ${e} / QEMU |`).join('')}`,
    `|---|${engines.map(() => '---|').join('')}${vmms.map(() => '---|').join('')}`,
    ...ROWS.map(([k, label]) => `| ${label} | ${engines.map((e) => cell(r.results[e]![k])).join(' | ')} |${vmms.map((e) => ` ${ratio(r.results[e]![k] as number | undefined, q?.[k] as number | undefined)} |`).join('')}`),
    '',
    'A Linux sender sizes its TSO segments from its pacing rate (about 1 ms of data), so each engine settles high or low',
    "in a run (the segment-size row shows where): QEMU's own guest → L1 figure moved between 16 and 85 Mbit/s over six runs",
    'of 2026-11-30. Compare within one run, and over several (docs/vmm.md has them).',
    '',
    `L1: ${r.l1}.${r.errors.length ? ` Errors: ${r.errors.join('; ')}.` : ''}`,
    ...(engines.includes(BASELINE) ? [`hangar-vmm-baseline: the same hangar-vmm with ${Object.entries(BASELINE_ENV).map(([k, v]) => `${k}=${v}`).join(' ')}.`] : []),
    ...(engines.includes(VARIANT) ? [`hangar-vmm-variant: the same hangar-vmm with ${process.env.LAB_NET_VARIANT}.`] : []),
  ].join('\n');
  const changed = PASS_ENV.filter((k) => k !== 'LAB_NET_ENGINES' && process.env[k] !== undefined);
  const experiment = !ALL_ENGINES.every((e) => ENGINES.includes(e)) || changed.length > 0;
  finishSection('lab-net', md, experiment ? PASS_ENV.filter((k) => process.env[k] !== undefined).map((k) => `${k}=${process.env[k]}`).join(' ') : null, code === 0);
}

await (process.env.HANGAR_LAB === '1' ? inside() : outside());
