/**
 * Disk throughput inside a Debian guest: fio (4K random read, 1M sequential
 * read and write, O_DIRECT in the guest) on
 *
 *   - the root disk, a qcow2 overlay of the image's base disk (reads only:
 *     it holds the guest's root file system);
 *   - a qcow2 volume and a raw volume attached as data disks;
 *
 * first in a VM run by Hangar's QEMU engine, then, in the same run, in a
 * QEMU started by hand on the very same files with the same -blockdev
 * options (cache, aio, discard, detect-zeroes: copied from the argv Hangar
 * gave its QEMU), the same machine, CPUs and memory, but none of Hangar's
 * confinement. The ratio Hangar / hand says what the engine costs.
 *
 * fio is not in the debian-12 image: the bench builds a variant with the
 * image's recorded package list plus fio into an image folder of its own
 * (HANGAR_DISK_BENCH_IMAGE_DIR, default .cache/disk-bench-images), never
 * into the shared one. Writes the `disk` section of docs/benchmarks.md.
 *
 * Not part of the test suite: `npm run bench -- disk`. Under TCG (hosts
 * without KVM for Linux guests) the numbers measure the emulator far more
 * than the disks; the section says which accelerator ran.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { projectRoot } from '../src/common/paths.js';
import { writeSection } from './report.js';
import { ensureDebianVariant } from './debian-variant.js';

const root = projectRoot();
const benchImages = process.env.HANGAR_DISK_BENCH_IMAGE_DIR ?? path.join(root, '.cache', 'disk-bench-images');
const sharedImages = process.env.HANGAR_IMAGE_DIR ?? path.join(root, '.cache', 'images');
const FIO_PACKAGE = process.env.HANGAR_DISK_BENCH_FIO ?? 'fio=3.33-3';
/** Each fio job runs this long (seconds): short, because TCG makes every I/O expensive. */
const RUNTIME_S = Number(process.env.HANGAR_DISK_BENCH_RUNTIME ?? 20);
const MEMORY = '1G';
const CPUS = 2;
const BOOT_LIMIT_MS = 20 * 60_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const log = (s: string): void => { process.stderr.write(`disk-bench: ${s}\n`); };

/** The debian-12 variant with fio, built once into the bench's own image folder. */
function ensureFioImage(): Promise<void> {
  return ensureDebianVariant({ dir: benchImages, sharedDir: sharedImages, extra: [FIO_PACKAGE], log });
}

interface FioResult { iops: number; mbps: number }
/** The host's 1-minute load average seen while each half ran: the ratio is only as fair as these are close. */
const loadRanges = new Map<string, string>();
type Exec = (command: string[], timeoutMs: number) => Promise<{ exitCode: number | null; stdout: string; stderr: string }>;

/** One fio job on a block device in the guest; O_DIRECT, libaio, queue depth 16. */
async function fio(exec: Exec, device: string, rw: 'randread' | 'read' | 'write', bs: string): Promise<FioResult> {
  const args = ['fio', '--name=b', `--filename=${device}`, `--rw=${rw}`, `--bs=${bs}`, '--direct=1', '--ioengine=libaio', '--iodepth=16',
    '--size=256M', `--runtime=${RUNTIME_S}`, '--time_based', '--output-format=json', ...(rw === 'write' ? [] : ['--readonly'])];
  const r = await exec(args, (RUNTIME_S + 120) * 1000);
  if (r.exitCode !== 0) throw new Error(`fio ${rw} on ${device}: ${r.stderr || r.stdout}`);
  const job = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0];
  const side = rw === 'write' ? job.write : job.read;
  return { iops: side.iops, mbps: side.bw_bytes / 1e6 };
}

/** The same fio runs in one guest: returns rows keyed "target/test". */
async function measure(exec: Exec, label: string): Promise<Map<string, FioResult>> {
  const out = new Map<string, FioResult>();
  const loads = [os.loadavg()[0]!];
  const targets: Array<[string, string, boolean]> = [
    ['qcow2 overlay (root disk)', '/dev/vda', false],
    ['qcow2 volume', '/dev/disk/by-id/virtio-q', true],
    ['raw volume', '/dev/disk/by-id/virtio-r', true],
  ];
  for (const [name, dev, writable] of targets) {
    // Written first, so the reads read data (an unwritten qcow2 cluster reads as zeroes without I/O).
    if (writable) out.set(`${name}/seq write 1M`, await fio(exec, dev, 'write', '1M'));
    out.set(`${name}/seq read 1M`, await fio(exec, dev, 'read', '1M'));
    out.set(`${name}/4K random read`, await fio(exec, dev, 'randread', '4k'));
    log(`${label}: ${name} done`);
    loads.push(os.loadavg()[0]!);
  }
  loadRanges.set(label, `${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)}`);
  return out;
}

/** The args after `flag` in an argv, each time it occurs. */
function argsOf(argv: string[], flag: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length - 1; i++) if (argv[i] === flag) out.push(argv[i + 1]!);
  return out;
}

async function main(): Promise<void> {
  await ensureFioImage();
  process.env.HANGAR_IMAGE_DIR = benchImages;
  const { startDaemon, waitOperation } = await import('../test/helpers/daemon.js');
  const { GuestAgent } = await import('../src/engines/qemu/guest-agent.js');
  const d = await startDaemon();
  let hand: ChildProcess | null = null;
  const rows: string[] = [];
  try {
    const ok = async (res: ReturnType<typeof d.request>): Promise<any> => {
      const op = await waitOperation(d, await res, 3600);
      if (op.status !== 'success') throw new Error(JSON.stringify(op.error ?? op));
      return op.result;
    };
    const raw = await d.request('POST', '/1.0/storage-pools/default/volumes', { name: 'bench-raw', format: 'raw', size: '1G' });
    if (raw.status !== 201) throw new Error(JSON.stringify(raw.body));
    const t0 = performance.now();
    await ok(d.request('POST', '/1.0/vms', {
      name: 'fio', image: 'debian-12', memory: MEMORY, cpus: CPUS,
      disks: [{ name: 'q', size: '1G' }, { name: 'r', volume: 'default/bench-raw' }],
    }));
    const hangarExec: Exec = async (command, timeoutMs) => {
      const r = await d.request('POST', '/1.0/vms/fio/exec', { command, timeout: Math.ceil(timeoutMs / 1000) });
      if (r.status !== 200) throw Object.assign(new Error(JSON.stringify(r.body)), { code: r.body?.error?.code });
      return r.body.metadata;
    };
    await untilAgent(hangarExec);
    const hangarBootS = (performance.now() - t0) / 1000;
    log(`Hangar VM up (cloud-init done) in ${hangarBootS.toFixed(0)} s`);
    const vm = (await d.request('GET', '/1.0/vms/fio')).body.metadata;
    const accel: string = vm.runtime?.accel ?? vm.accel ?? 'tcg';
    const argv = fs.readFileSync(`/proc/${vm.runtime?.pid ?? vm.pid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
    const viaHangar = await measure(hangarExec, 'Hangar');
    await ok(d.request('PUT', '/1.0/vms/fio/state', { action: 'stop', timeout: 300 }));

    // The same files and -blockdev options, started by hand (as root, no confinement, no fd passing).
    const blockdevs = argsOf(argv, '-blockdev').filter((b) => !/pflash|fdset/.test(b));
    const devices = argsOf(argv, '-device').filter((dv) => /virtio-blk|pcie-root-port/.test(dv));
    const image = path.join(benchImages, 'debian-12');
    const meta = JSON.parse(fs.readFileSync(path.join(image, 'image.json'), 'utf8')) as { cmdline: string };
    const qga = path.join(d.dataDir, 'hand-qga.sock');
    const handArgs = [
      '-nodefaults', '-no-user-config', '-display', 'none', '-M', 'q35', '-accel', accel, '-m', MEMORY, '-smp', String(CPUS),
      '-kernel', path.join(image, 'vmlinuz'), '-initrd', path.join(image, 'initrd.img'), '-append', meta.cmdline,
      '-serial', `file:${path.join(d.dataDir, 'hand-console.log')}`,
      ...blockdevs.flatMap((b) => ['-blockdev', b]), ...devices.flatMap((dv) => ['-device', dv]),
      '-chardev', `socket,id=qga,path=${qga},server=on,wait=off`, '-device', 'virtio-serial-pci', '-device', 'virtserialport,chardev=qga,name=org.qemu.guest_agent.0',
    ];
    log(`hand-run QEMU: qemu-system-x86_64 ${handArgs.join(' ')}`);
    hand = spawn('qemu-system-x86_64', handArgs, { stdio: ['ignore', 'ignore', 'inherit'] });
    const agent = new GuestAgent({ socket: qga, commandTimeoutMs: 30_000 });
    const handExec: Exec = async (command, timeoutMs) => {
      const r = await agent.exec({ command, timeoutMs, maxOutputBytes: 4 * 2 ** 20 });
      return { exitCode: r.exitCode, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') };
    };
    const t1 = performance.now();
    await untilAgent(handExec);
    const handBootS = (performance.now() - t1) / 1000;
    log(`hand-run VM up (cloud-init done) in ${handBootS.toFixed(0)} s`);
    const byHand = await measure(handExec, 'by hand');
    agent.close();

    rows.push('| disk | test | Hangar | QEMU by hand | Hangar / hand |', '|---|---|---|---|---|');
    for (const [k, h] of viaHangar) {
      const m = byHand.get(k)!;
      const [target, test] = k.split('/');
      const v = (r: FioResult): string => test!.includes('4K') ? `${r.iops.toFixed(0)} IOPS` : `${r.mbps.toFixed(1)} MB/s`;
      const ratio = test!.includes('4K') ? h.iops / m.iops : h.mbps / m.mbps;
      rows.push(`| ${target} | ${test} | ${v(h)} | ${v(m)} | ${ratio.toFixed(2)} |`);
    }
    const opts = blockdevs.find((b) => b.includes('virtio') || b.includes('"driver":"file"') || b.includes('driver=file')) ?? blockdevs[0] ?? '';
    writeSection('disk', [
      '## Disk I/O inside a Debian guest (fio)',
      '',
      `fio 3.33 in a debian-12 guest (${CPUS} vCPUs, ${MEMORY}, accelerator \`${accel}\`), O_DIRECT, libaio, queue depth 16, ${RUNTIME_S} s per job, on a 1 GiB qcow2 volume,`,
      'a 1 GiB raw volume (both written sequentially first) and the root disk, a qcow2 overlay of the image\'s base disk (reads: its root file system is live).',
      'Hangar: the VM as the daemon runs it (confined QEMU). By hand: `qemu-system-x86_64` started as root on the same files, with the',
      `same \`-blockdev\` options copied from Hangar's argv (e.g. \`${opts.replace(/"filename":"[^"]*"/, '"filename":"…"').slice(0, 160)}\`), same machine, vCPUs and memory, one after the other in the same run.`,
      '',
      ...rows,
      '',
      `Boot to a guest agent with cloud-init done: Hangar ${hangarBootS.toFixed(0)} s (first boot: cloud-init's first-boot stages), by hand ${handBootS.toFixed(0)} s (second boot of the same instance).`,
      `Host load average (1 min) while fio ran: Hangar ${loadRanges.get('Hangar')}, by hand ${loadRanges.get('by hand')}.`,
      '',
      accel === 'tcg'
        ? 'Under TCG every guest instruction is emulated, so these numbers measure the emulator and a busy host more than the disks or Hangar; the ratio is the figure to read, and it carries the noise of a shared host (other jobs ran meanwhile).'
        : '',
    ].join('\n'));
    log('written to docs/benchmarks.md (section disk)');
  } finally {
    if (hand && hand.exitCode === null) { hand.kill('SIGKILL'); await new Promise((r) => hand!.once('exit', r)); }
    await d.cleanup();
  }
}

/**
 * Waits until the guest agent answers, then until cloud-init has finished:
 * on a VM's first boot cloud-init's stages take minutes of the vCPUs under
 * TCG, and fio measured meanwhile would measure them (the by-hand boot is a
 * second boot of the same instance, where cloud-init does next to nothing).
 */
async function untilAgent(exec: Exec): Promise<void> {
  const end = Date.now() + BOOT_LIMIT_MS;
  for (;;) {
    try {
      const r = await exec(['true'], 30_000);
      if (r.exitCode === 0) break;
    } catch (e) {
      if (Date.now() > end) throw e;
    }
    await sleep(5000);
  }
  await exec(['cloud-init', 'status', '--wait'], BOOT_LIMIT_MS);
}

await main();
