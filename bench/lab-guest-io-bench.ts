/**
 * Disk and network I/O inside a Debian guest, hangar-vmm against QEMU, in the
 * KVM lab (issues 7 and 8 for the micro engine): in ONE L1 (scripts/kvm-lab.sh
 * --with-qemu --with-debian: QEMU TCG with nested SVM, a real /dev/kvm), the
 * same debian-12 kernel, initramfs, root disk and cloud-init seed, booted first
 * by hangar-vmm, then by QEMU `-M microvm -accel kvm` (virtio-mmio, like
 * hangar-vmm), 1 vCPU and 1 GiB each, with
 *
 *   - a 256 MiB raw data disk (a file in L1's tmpfs) on virtio-blk: fio 4K
 *     random read at queue depth 16 and 1M sequential read, O_DIRECT, libaio;
 *   - virtio-net on a TAP in L1 (10.0.2.2 ↔ 10.0.2.1): iperf3 TCP guest → L1
 *     and L1 → guest, and ping's round trip (count-bounded).
 *
 * root logs in on the serial console (test/lab/serial-login.ts) and the
 * commands run there. fio and iperf3 are not in the debian-12 image: the bench
 * builds a variant with the image's recorded package list plus both into an
 * image folder of its own (HANGAR_LAB_IO_IMAGE_DIR, default
 * .cache/lab-io-images), never into the shared one, and hands it to the lab
 * (HANGAR_LAB_DEBIAN_IMAGE). L1's iperf3 is the host's, on the lab's QEMU disk.
 *
 *   npm run bench -- lab-guest-io       on the host: builds the variant, runs the lab,
 *                                       writes the `lab-guest-io` section of docs/benchmarks.md
 *   node dist/bench/lab-guest-io-bench.js --image-only    builds the variant and stops
 *   LAB_IO_RUNTIME_S=10 (default): each fio and iperf3 run's length
 *   LAB_IO_ENGINES=hangar-vmm, HANGAR_VIRTIO_IOEVENTFD=1, HANGAR_VIRTIO_BLK_IOTHREAD=1: an
 *   experiment (those engines only, those switches passed on to hangar-vmm); prints, writes no section
 *
 * Inside L1 (HANGAR_LAB=1) it measures and prints one `LAB-GUEST-IO {json}` line.
 * L1 runs under TCG on one CPU: absolute figures are the emulator's; the ratio is what to read.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { finishSection } from './report.js';
import { eachEngine, endLabJob, observe as observeRun } from './lab-diag.js';
import { LAB_GUEST_ADDR, LAB_GUEST_MAC, LAB_L1_ADDR, LAB_QEMU, LAB_TAP, startLabVmm } from './lab-vmm.js';
import { loginAsRoot, shellRun, waitForText, type SerialConsole } from '../test/lab/serial-login.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const RUNTIME_S = Number(process.env.LAB_IO_RUNTIME_S ?? 10);
const PACKAGES = ['fio=3.33-3', 'iperf3=3.12-1+deb12u2'];
const IMAGE_DIR = process.env.HANGAR_LAB_IO_IMAGE_DIR ?? path.join(ROOT, '.cache', 'lab-io-images');
const SHARED_IMAGES = process.env.HANGAR_IMAGE_DIR ?? path.join(ROOT, '.cache', 'images');
/** What scripts/kvm-lab.sh --with-debian / --with-qemu put in L1. */
const DEBIAN_DIR = '/data/debian-12';
const QEMU = LAB_QEMU;
const IPERF3 = '/opt/qemu/bin/iperf3';
const BOOT_MS = 2400_000;
const STEP_MS = 300_000;
const MEM_MIB = 1024;
const DATA_MIB = 256;
const TAP = LAB_TAP;
const L1_ADDR = LAB_L1_ADDR;
const GUEST_ADDR = LAB_GUEST_ADDR;
const GUEST_MAC = LAB_GUEST_MAC;
const ALL_ENGINES = ['hangar-vmm', 'qemu-microvm'] as const;
/**
 * Only when named in LAB_IO_ENGINES: hangar-vmm with its virtio-net and interrupt paths as they
 * were before the vCPU-thread transmit path, shared interrupt status, receive-kick suppression and
 * offloads (the switches below), in the same L1 as the rest — a before/after pair in one run.
 */
const BASELINE = 'hangar-vmm-baseline' as const;
const BASELINE_ENV = { HANGAR_VIRTIO_NET_IOTHREAD: '0', HANGAR_VIRTIO_NET_FAST: '0', HANGAR_VIRTIO_IRQ_FAST: '0', HANGAR_VIRTIO_NET_RX_KICKS: '1', HANGAR_VIRTIO_NET_OFFLOAD: '0' };
type Engine = (typeof ALL_ENGINES)[number] | typeof BASELINE;
/** LAB_IO_ENGINES=hangar-vmm (a comma list) measures only those and writes no section (an experiment). */
const ENGINES: readonly Engine[] = process.env.LAB_IO_ENGINES
  ? ([...ALL_ENGINES, BASELINE] as Engine[]).filter((e) => process.env.LAB_IO_ENGINES!.split(',').includes(e)) : ALL_ENGINES;
/** Passed on to the job in L1 (its environment starts empty): hangar-vmm's own switches, for experiments. */
const PASS_ENV = ['LAB_IO_ENGINES', 'HANGAR_VIRTIO_IOEVENTFD', 'HANGAR_VIRTIO_BLK_IOTHREAD', 'HANGAR_VIRTIO_NET_FAST', 'HANGAR_VIRTIO_IRQ_FAST', 'HANGAR_VIRTIO_NET_IOTHREAD'];

interface Figures {
  randRead4kIops?: number; randRead4kMiBs?: number; seqRead1mMiBs?: number;
  tcpGuestToL1Mbits?: number; tcpL1ToGuestMbits?: number;
  pingAvgMs?: number; pingMinMs?: number; pingMaxMs?: number; pingLoss?: string;
  bootToLoginS?: number; guestKernel?: string;
}
interface Report { l1: string; runtimeS: number; results: Partial<Record<Engine, Figures>>; errors: string[] }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const say = (s: string) => process.stdout.write(`lab-guest-io: ${s}\n`);
/** What hangar-vmm and L1 did while `work` ran (bench/lab-diag.ts): logged, not tabled. */
const observe = <T>(label: string, g: Running, work: () => Promise<T>): Promise<T> => observeRun(label,
  { pid: g.child.pid, ...(g.apiSock ? { apiSock: g.apiSock } : {}), tap: TAP, skipDevices: (d) => d.startsWith('virtio-blk:root') || d.startsWith('virtio-blk:cidata') }, say, work);

/** The debian-12 variant with fio and iperf3, built once into the bench's own image folder. */
async function ensureIoImage(): Promise<string> {
  const dir = path.join(IMAGE_DIR, 'debian-12');
  const pkgs = path.join(dir, 'packages.txt');
  if (fs.existsSync(path.join(dir, 'image.json')) && fs.existsSync(pkgs) && PACKAGES.every((p) => fs.readFileSync(pkgs, 'utf8').includes(`\n${p.split('=')[0]}=`))) return dir;
  const list = fs.readFileSync(path.join(SHARED_IMAGES, 'debian-12', 'packages.txt'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  list.push(...PACKAGES);
  say(`building debian-12 with ${PACKAGES.join(', ')} into ${IMAGE_DIR} (minutes)`);
  process.env.HANGAR_IMAGE_DIR = IMAGE_DIR;
  const { buildImage } = await import('../src/host/images/index.js');
  await buildImage('debian-12', { packages: list }, (stage, p) => say(`  ${stage}${p !== undefined ? ` ${Math.round(p)}%` : ''}`));
  process.env.HANGAR_IMAGE_DIR = SHARED_IMAGES;
  return dir;
}

/** One guest on one engine: its console, a way to type, and how to end it. */
interface Running extends SerialConsole { child: ChildProcess; exited: Promise<void>; apiSock?: string }

function bootArgs(): { kernel: string; initrd: string; cmdline: string } {
  const img = JSON.parse(fs.readFileSync(path.join(DEBIAN_DIR, 'image.json'), 'utf8')) as { cmdline: string };
  return { kernel: path.join(DEBIAN_DIR, 'vmlinuz'), initrd: path.join(DEBIAN_DIR, 'initrd.img'), cmdline: img.cmdline.replace(/console=tty0\s*/, '') };
}

async function start(engine: Engine, dir: string, dataDisk: string): Promise<Running> {
  const b = bootArgs();
  const state = { text: '' };
  let child: ChildProcess;
  let write: (s: string) => void;
  let apiSock: string | undefined;
  if (engine === 'hangar-vmm' || engine === BASELINE) {
    const vmm = await startLabVmm({
      root: ROOT, dir, env: engine === BASELINE ? { ...process.env, ...BASELINE_ENV } : process.env, timeoutMs: STEP_MS,
      onConsole: (t) => { state.text += t; },
      config: {
        'machine-config': { vcpu_count: 1, mem_size_mib: MEM_MIB },
        'boot-source': { kernel_image_path: b.kernel, initrd_path: b.initrd, boot_args: b.cmdline },
        drives: [
          { drive_id: 'root', path_on_host: path.join(DEBIAN_DIR, 'disk.raw'), is_root_device: true, is_read_only: false },
          { drive_id: 'cidata', path_on_host: path.join(DEBIAN_DIR, 'cidata.img'), is_root_device: false, is_read_only: true },
          { drive_id: 'data', path_on_host: dataDisk, is_root_device: false, is_read_only: false },
        ],
        'network-interfaces': [{ iface_id: 'eth0', host_dev_name: TAP, guest_mac: GUEST_MAC }],
      },
    });
    ({ child, apiSock, write } = vmm);
  } else {
    // virtio-mmio like hangar-vmm; the default cache (the host's page cache, no O_DIRECT) and aio, as hangar-vmm reads its files.
    const drive = (id: string, file: string, ro = false) => ['-drive', `id=${id},file=${file},format=raw,if=none${ro ? ',readonly=on' : ''}`, '-device', `virtio-blk-device,drive=${id}`];
    child = spawn(QEMU, ['-M', 'microvm', '-accel', 'kvm', '-cpu', 'host', '-smp', '1', '-m', String(MEM_MIB), '-nodefaults', '-no-user-config', '-display', 'none',
      '-serial', 'stdio', '-kernel', b.kernel, '-initrd', b.initrd, '-append', b.cmdline,
      ...drive('root', path.join(DEBIAN_DIR, 'disk.raw')), ...drive('cidata', path.join(DEBIAN_DIR, 'cidata.img'), true), ...drive('data', dataDisk),
      '-netdev', `tap,id=n0,ifname=${TAP},script=no,downscript=no`, '-device', `virtio-net-device,netdev=n0,mac=${GUEST_MAC}`],
    { stdio: ['pipe', 'pipe', 'inherit'] });
    child.stdout!.on('data', (d: Buffer) => { state.text += d.toString('latin1'); });
    write = (x) => { child.stdin!.write(x); };
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { get text() { return state.text; }, type: write, child, exited, ...(apiSock ? { apiSock } : {}) };
}

/** L1's side of the guest's network: the address on the TAP the engine made. */
function setUpTap(): void {
  execFileSync('ip', ['addr', 'add', `${L1_ADDR}/24`, 'dev', TAP]);
  execFileSync('ip', ['link', 'set', TAP, 'up']);
}

/** Runs the measurements on a logged-in guest. */
async function measure(g: Running, f: Figures, promptAt: number): Promise<void> {
  let at = promptAt;
  const run = async (cmd: string, ms = STEP_MS): Promise<string> => {
    const r = await shellRun(g, cmd, at, ms);
    at = r.next;
    say(`  $ ${cmd.slice(0, 100)}\n${r.out.split('\n').map((l) => `    ${l}`).join('\n')}`);
    return r.out;
  };
  f.guestKernel = await run('uname -r');
  // cloud-init's first boot (SSH host keys, its Python modules) would share the one vCPU with the
  // measurements: wait for it to end on both engines.
  await run('cloud-init status --wait >/dev/null 2>&1; cloud-init status; systemctl --failed --no-legend --plain | head -5', BOOT_MS);
  await run('command -v fio iperf3; ip -br addr show');
  // The data disk, found by its size (the engines may number virtio-mmio disks differently).
  const dev = (await run(`for d in /sys/block/vd*; do [ "$(cat $d/size)" = ${DATA_MIB * 2048} ] && echo /dev/\${d##*/}; done`)).split('\n').pop()!.trim();
  if (!dev.startsWith('/dev/vd')) throw new Error(`no ${DATA_MIB} MiB data disk in the guest`);
  const fio = async (rw: string, bs: string): Promise<{ kibs: number; iops: number }> => {
    const out = await run(`fio --name=b --filename=${dev} --rw=${rw} --bs=${bs} --direct=1 --ioengine=libaio --iodepth=16 --runtime=${RUNTIME_S} --time_based --minimal 2>&1 | cut -d';' -f7,8`, STEP_MS);
    const m = /^(\d+);(\d+)$/m.exec(out);
    if (!m) throw new Error(`fio ${rw} ${bs}: ${out}`);
    return { kibs: Number(m[1]), iops: Number(m[2]) };
  };
  const rr = await fio('randread', '4k');
  f.randRead4kIops = rr.iops;
  f.randRead4kMiBs = +(rr.kibs / 1024).toFixed(1);
  f.seqRead1mMiBs = +((await fio('read', '1M')).kibs / 1024).toFixed(1);
  const ping = await observe('ping', g, () => run(`ping -c 20 -i 0.2 -W 5 -q ${L1_ADDR} | tail -2`));
  const pm = /rtt min\/avg\/max\/mdev = ([0-9.]+)\/([0-9.]+)\/([0-9.]+)/.exec(ping);
  if (pm) { f.pingMinMs = Number(pm[1]); f.pingAvgMs = Number(pm[2]); f.pingMaxMs = Number(pm[3]); }
  f.pingLoss = /(\d+% packet loss)/.exec(ping)?.[1] ?? ping;
  // The receiver's rate; then the sender's retransmits and the guest's TCP counters (diagnostics, in the log).
  const bps = "python3 -c 'import json,sys; j=json.load(sys.stdin); e=j[\"end\"]; print(int(e[\"sum_received\"][\"bits_per_second\"])); print(\"retransmits\", e[\"sum_sent\"].get(\"retransmits\")); s=[x for i in j[\"intervals\"] for x in i[\"streams\"] if \"snd_cwnd\" in x]; print(\"sender cwnd/rtt(us)\", [(x[\"snd_cwnd\"], x.get(\"rtt\")) for x in s])'";
  const nstat = 'nstat -z TcpOutSegs TcpInSegs TcpRetransSegs TcpExtTCPTimeouts TcpExtTCPLossProbes TcpExtTCPSpuriousRTOs TcpExtTCPDelivered 2>/dev/null | tail -n +2';
  const tcp = async (reverse: boolean): Promise<number> => {
    await run(`${nstat} >/dev/null; grep -i virtio /proc/interrupts | tr -s ' '`);
    const out = await observe(reverse ? 'iperf3 -R' : 'iperf3', g, () => run(`iperf3 -c ${L1_ADDR} -t ${RUNTIME_S} ${reverse ? '-R ' : ''}-J | ${bps}`, STEP_MS));
    await run(`${nstat}; grep -i virtio /proc/interrupts | tr -s ' '; ip -s link show eth0 | tail -4`);
    const n = Number(/^(\d+)$/m.exec(out)?.[1]);
    if (!Number.isFinite(n)) throw new Error(`iperf3${reverse ? ' -R' : ''}: ${out}`);
    return +(n / 1e6).toFixed(1);
  };
  f.tcpGuestToL1Mbits = await tcp(false);
  f.tcpL1ToGuestMbits = await tcp(true);
  // Flush the root disk before the hard stop: the next engine boots the same disk.
  await run('sync');
}

async function onEngine(engine: Engine, dir: string, dataDisk: string, report: Report): Promise<void> {
  const t0 = Date.now();
  const g = await start(engine, dir, dataDisk);
  let iperf: ChildProcess | undefined;
  try {
    // Where the boot is, once a minute (a boot that goes nowhere shows where it stopped).
    const progress = setInterval(() => say(`${engine}: +${Math.round((Date.now() - t0) / 1000)} s, console: ${JSON.stringify(g.text.replace(/\r/g, '').trimEnd().split('\n').pop()?.slice(0, 120) ?? '')}`), 60_000);
    try {
      await waitForText(g, /Debian GNU\/Linux 12 \S+ ttyS0/, 0, BOOT_MS);
    } finally {
      clearInterval(progress);
    }
    await waitForText(g, /login: /, 0, BOOT_MS);
    const f: Figures = { bootToLoginS: Math.round((Date.now() - t0) / 1000) };
    report.results[engine] = f;
    say(`${engine}: login prompt after ${f.bootToLoginS} s`);
    const promptAt = await loginAsRoot(g, STEP_MS);
    setUpTap();
    iperf = spawn(IPERF3, ['-s', '-B', L1_ADDR], { stdio: 'ignore' });
    await sleep(1000);
    await measure(g, f, promptAt);
    say(`${engine}: ${JSON.stringify(f)}`);
  } catch (e) {
    // Where the guest was: its console's last lines.
    for (const l of g.text.replace(/\r/g, '').split('\n').slice(-40)) say(`  console: ${l}`);
    throw e;
  } finally {
    iperf?.kill('SIGKILL');
    // A hard stop (the root disk was synced): systemd's stop would cost minutes of TCG here.
    if (g.child.exitCode === null) { g.type('poweroff -f\n'); await Promise.race([g.exited, sleep(60_000)]); }
    if (g.child.exitCode === null && g.child.signalCode === null) { g.child.kill('SIGKILL'); await g.exited; }
  }
}

async function inside(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-lab-io-'));
  const report: Report = { l1: `${os.cpus()[0]?.model ?? '?'}, ${os.cpus().length} CPU, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Linux ${os.release()}`, runtimeS: RUNTIME_S, results: {}, errors: [] };
  try {
    for (const f of [QEMU, IPERF3, path.join(DEBIAN_DIR, 'disk.raw'), path.join(DEBIAN_DIR, 'cidata.img')]) {
      if (!fs.existsSync(f)) throw new Error(`${f} missing: run the lab with --with-qemu --with-debian (and iperf3 on the host)`);
    }
    // The data disk: written through once, so every block is backed by memory (L1's tmpfs).
    const dataDisk = path.join(dir, 'data.raw');
    const chunk = Buffer.alloc(1 << 20, 0x5a);
    const fd = fs.openSync(dataDisk, 'w');
    for (let i = 0; i < DATA_MIB; i++) fs.writeSync(fd, chunk);
    fs.closeSync(fd);
    await eachEngine(ENGINES, report, say, (e) => onEngine(e, dir, dataDisk, report));
  } catch (err) {
    report.errors.push((err as Error).message);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  endLabJob('LAB-GUEST-IO', report);
}

const ROWS: Array<[keyof Figures, string, boolean]> = [
  ['randRead4kIops', 'fio 4K random read, qd16 (IOPS)', true],
  ['randRead4kMiBs', 'fio 4K random read, qd16 (MiB/s)', true],
  ['seqRead1mMiBs', 'fio 1M sequential read, qd16 (MiB/s)', true],
  ['tcpGuestToL1Mbits', 'iperf3 TCP guest → L1 (Mbit/s)', true],
  ['tcpL1ToGuestMbits', 'iperf3 TCP L1 → guest (Mbit/s)', true],
  ['pingAvgMs', 'ping guest → L1, avg RTT (ms)', false],
  ['pingMinMs', 'ping guest → L1, min RTT (ms)', false],
  ['bootToLoginS', 'spawn → login prompt (s)', false],
];

async function outside(): Promise<void> {
  const image = await ensureIoImage();
  if (process.argv.includes('--image-only')) { say(`image ready: ${image}`); return; }
  const lab = spawn('bash', [path.join(ROOT, 'scripts', 'kvm-lab.sh'), '--with-qemu', '--with-debian', '--timeout', '4000', '--stall', '300', '--',
    'env', `LAB_IO_RUNTIME_S=${RUNTIME_S}`, ...PASS_ENV.filter((k) => process.env[k] !== undefined).map((k) => `${k}=${process.env[k]}`), 'node', 'dist/bench/lab-guest-io-bench.js'],
  { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, HANGAR_LAB_DEBIAN_IMAGE: image } });
  let out = '';
  lab.stdout.on('data', (d: Buffer) => { out += d.toString(); process.stdout.write(d); });
  const code = await new Promise<number | null>((resolve) => lab.once('exit', resolve));
  const line = /^LAB-GUEST-IO (\{.*\})\r?$/m.exec(out);
  if (!line) throw new Error(`the lab reported no result (exit ${code})`);
  const r = JSON.parse(line[1]!) as Report;
  const h = r.results['hangar-vmm'] ?? {};
  const q = r.results['qemu-microvm'] ?? {};
  const before = r.results[BASELINE];
  const cell = (v: unknown) => (v === undefined ? '—' : String(v));
  const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined && b !== 0 ? (a / b).toFixed(2) : '—');
  const rows = ROWS.map(([k, label]) => {
    const a = h[k] as number | undefined;
    const b = q[k] as number | undefined;
    const extra = before ? ` ${cell(before[k])} | ${ratio(a, before[k] as number | undefined)} |` : '';
    return `| ${label} | ${cell(a)} | ${cell(b)} | ${ratio(a, b)} |${extra}`;
  });
  const md = [
    '## Debian guest I/O in the KVM lab: hangar-vmm vs QEMU (`lab-guest-io`)',
    '',
    'Written by `npm run bench -- lab-guest-io` (bench/lab-guest-io-bench.ts; runs `scripts/kvm-lab.sh --with-qemu --with-debian`).',
    '**L1 is QEMU TCG `-cpu max` with ONE CPU** (nested SVM gives it a real `/dev/kvm`): every figure below is the emulator\'s,',
    'tens of times below hardware, and the guest, its VMM and L1\'s end of the TAP share that one emulated CPU. **The ratio is the',
    'figure to read**, not the absolute numbers.',
    '',
    `In one L1: the debian-12 image (plus fio 3.33 and iperf3 3.12, built into the bench's own image folder) — the same kernel,`,
    'initramfs, raw root disk and cloud-init seed — booted by hangar-vmm, then by QEMU 7.2 `-M microvm -accel kvm -cpu host`',
    '(virtio-mmio block and net devices like hangar-vmm\'s, default cache: both go through L1\'s page cache), 1 vCPU, 1 GiB each.',
    `fio on a ${DATA_MIB} MiB raw data disk (a file in L1's tmpfs) on virtio-blk: O_DIRECT, libaio, queue depth 16, ${r.runtimeS} s per job.`,
    `iperf3 TCP for ${r.runtimeS} s each way between the guest (10.0.2.2, virtio-net) and L1 (10.0.2.1, the TAP), iperf3's`,
    'receiver figure; ping 20 × 0.2 s. root logs in on the serial console; the commands run there.',
    '',
    `| measure | hangar-vmm | QEMU microvm | hangar-vmm / QEMU |${before ? ' hangar-vmm, old paths | now / old |' : ''}`,
    `|---|---|---|---|${before ? '---|---|' : ''}`,
    ...rows,
    '',
    `Ratio above 1 is better for hangar-vmm except for RTT and boot time (lower is better there). hangar-vmm boots first, so its boot is the disk's`,
    'first (cloud-init makes the SSH host keys then); QEMU boots it a second time: the boot row is not like for like. Each engine is measured only',
    `after \`cloud-init status --wait\`. Guest kernel ${cell(h.guestKernel ?? q.guestKernel)}.`,
    `L1: ${r.l1}.${r.errors.length ? ` Errors: ${r.errors.join('; ')}.` : ''}`,
    ...(before ? ['', `"hangar-vmm, old paths": the same hangar-vmm in the same L1 with ${Object.entries(BASELINE_ENV).map(([k, v]) => `${k}=${v}`).join(' ')}.`] : []),
  ].join('\n');
  // Both peers measured, with no switch changed: the section is written (the old-paths engine may come along).
  const changed = PASS_ENV.filter((k) => k !== 'LAB_IO_ENGINES' && process.env[k] !== undefined);
  const experiment = !ALL_ENGINES.every((e) => ENGINES.includes(e)) || changed.length > 0;
  finishSection('lab-guest-io', md, experiment ? PASS_ENV.filter((k) => process.env[k] !== undefined).map((k) => `${k}=${process.env[k]}`).join(' ') : null, code === 0);
}

await (process.env.HANGAR_LAB === '1' ? inside() : outside());
