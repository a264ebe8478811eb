/**
 * Start → guest /init, side by side in the KVM lab (issue 10 §4): in the
 * same L1 (scripts/kvm-lab.sh --with-qemu: QEMU TCG with nested SVM, a real
 * /dev/kvm), the same kernel and initramfs (the tiny image's, with the lab's
 * overlay, `rdinit=/lab-init`, whose first act is to print a marker) booted
 * by hangar-vmm, by QEMU `-M microvm` and by QEMU `-M q35`, both QEMUs with
 * `-accel kvm`. Each sample is process spawn → the marker on the guest's
 * serial console; the guest's own uptime at that moment (printed by
 * /lab-init) is recorded too. The three alternate in each round.
 *
 *   node dist/bench/lab-start-bench.js           on the host: runs the lab, writes the
 *                                                `lab-start` section of docs/benchmarks.md
 *   LAB_START_ROUNDS=7 (default 5)
 *
 * Inside L1 (HANGAR_LAB=1) it measures and prints one `LAB-START {json}` line.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describeHost, percentile, writeSection } from './report.js';
import { VMM_NODE_FLAGS } from '../src/vmm/process-flags.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const ROUNDS = Number(process.env.LAB_START_ROUNDS ?? 5);
const MARKER = 'lab-init: start';
const UPTIME = /lab-init: up ([0-9.]+)s/;
const QEMU = '/opt/qemu/bin/qemu';
const TIMEOUT_MS = 300_000;
const ENGINES = ['hangar-vmm', 'qemu-microvm', 'qemu-q35'] as const;
type Engine = (typeof ENGINES)[number];

interface Sample { engine: Engine; ms: number; guestUptimeS: number | null }
interface Report { l1: string; samples: Sample[]; errors: string[] }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The kernel, the initramfs with the lab overlay, and the command line: the same for every engine. */
function guestFiles(dir: string): { kernel: string; initrd: string; cmdline: string } {
  const img = path.join(process.env.HANGAR_IMAGE_DIR ?? path.join(ROOT, '.cache', 'images'), 'tiny');
  const tiny = fs.readFileSync(path.join(img, 'initrd.img'));
  const initrd = path.join(dir, 'initrd-lab.img');
  fs.writeFileSync(initrd, Buffer.concat([tiny, Buffer.alloc((4 - (tiny.length % 4)) % 4), fs.readFileSync(path.join(ROOT, '.cache', 'lab-l2', 'overlay.cpio'))]));
  const { cmdline } = JSON.parse(fs.readFileSync(path.join(img, 'image.json'), 'utf8')) as { cmdline: string };
  return { kernel: path.join(img, 'vmlinuz'), initrd, cmdline: `${cmdline} rdinit=/lab-init` };
}

/** Spawns one engine, resolves with spawn → marker in ms and the guest's uptime line, then kills it. */
async function once(engine: Engine, dir: string, g: { kernel: string; initrd: string; cmdline: string }): Promise<Sample> {
  let text = '';
  let child: ChildProcess;
  const t0 = performance.now();
  if (engine === 'hangar-vmm') {
    const cfg = path.join(dir, 'vm.json');
    fs.writeFileSync(cfg, JSON.stringify({ 'machine-config': { vcpu_count: 1, mem_size_mib: 256 }, 'boot-source': { kernel_image_path: g.kernel, initrd_path: g.initrd, boot_args: g.cmdline }, drives: [] }));
    const conSock = path.join(dir, 'console.sock');
    fs.rmSync(conSock, { force: true });
    child = spawn(process.execPath, [...VMM_NODE_FLAGS, path.join(ROOT, 'dist', 'src', 'vmm', 'main.js'), '--config', cfg, '--api-sock', path.join(dir, 'api.sock'), '--console-sock', conSock], { stdio: ['ignore', 'ignore', 'ignore'] });
    // The console socket appears once it listens (src/common/private-socket.ts); the VM starts after.
    while (!fs.existsSync(conSock)) {
      if (child.exitCode !== null) throw new Error(`hangar-vmm exited (${child.exitCode})`);
      if (performance.now() - t0 > TIMEOUT_MS) throw new Error('hangar-vmm opened no console socket');
      await sleep(5);
    }
    const s = net.connect(conSock);
    s.on('data', (d: Buffer) => { text += d.toString('latin1'); });
    s.on('error', () => {});
    child.once('exit', () => s.destroy());
  } else {
    const machine = engine === 'qemu-microvm' ? 'microvm' : 'q35';
    child = spawn(QEMU, ['-M', machine, '-accel', 'kvm', '-cpu', 'host', '-smp', '1', '-m', '256', '-nodefaults', '-no-user-config', '-display', 'none',
      '-serial', 'stdio', '-kernel', g.kernel, '-initrd', g.initrd, '-append', g.cmdline], { stdio: ['ignore', 'pipe', 'ignore'] });
    child.stdout!.on('data', (d: Buffer) => { text += d.toString('latin1'); });
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    for (;;) {
      if (text.includes(MARKER)) break;
      if (child.exitCode !== null) throw new Error(`${engine} exited (${child.exitCode}) before /init: ${text.slice(-300)}`);
      if (performance.now() - t0 > TIMEOUT_MS) throw new Error(`${engine}: no /init within ${TIMEOUT_MS} ms`);
      await sleep(2);
    }
    const ms = performance.now() - t0;
    const upDeadline = performance.now() + 10_000;
    while (!UPTIME.test(text) && performance.now() < upDeadline && child.exitCode === null) await sleep(20);
    const up = UPTIME.exec(text);
    return { engine, ms: Math.round(ms), guestUptimeS: up ? Number(up[1]) : null };
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}

async function inside(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-lab-start-'));
  const report: Report = { l1: `${os.cpus()[0]?.model ?? '?'}, ${os.cpus().length} CPU, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Linux ${os.release()}`, samples: [], errors: [] };
  try {
    const g = guestFiles(dir);
    if (!fs.existsSync(QEMU)) throw new Error(`${QEMU} missing: run the lab with --with-qemu`);
    for (let round = 0; round < ROUNDS; round++) {
      // Rotate the order so no engine always runs first (caches, L1's page cache).
      const order = ENGINES.map((_, i) => ENGINES[(i + round) % ENGINES.length]!);
      for (const e of order) {
        try {
          const s = await once(e, dir, g);
          report.samples.push(s);
          process.stdout.write(`lab-start: round ${round + 1} ${e} ${s.ms} ms (guest uptime ${s.guestUptimeS} s)\n`);
        } catch (err) {
          report.errors.push(`${e}: ${(err as Error).message}`);
          process.stdout.write(`lab-start: round ${round + 1} ${e} failed: ${(err as Error).message}\n`);
        }
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(`LAB-START ${JSON.stringify(report)}\n`);
  process.exit(report.errors.length ? 1 : 0);
}

async function outside(): Promise<void> {
  const lab = spawn('bash', [path.join(ROOT, 'scripts', 'kvm-lab.sh'), '--with-qemu', '--timeout', '2400', '--', 'env', `LAB_START_ROUNDS=${ROUNDS}`, 'node', 'dist/bench/lab-start-bench.js'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  lab.stdout.on('data', (d: Buffer) => { out += d.toString(); process.stdout.write(d); });
  const code = await new Promise<number | null>((resolve) => lab.once('exit', resolve));
  const line = /^LAB-START (\{.*\})$/m.exec(out);
  if (!line) throw new Error(`the lab reported no result (exit ${code})`);
  const r = JSON.parse(line[1]!) as Report;
  const med = (e: Engine, f: (s: Sample) => number | null) => {
    const v = r.samples.filter((s) => s.engine === e).map(f).filter((x): x is number => x !== null);
    return v.length ? percentile(v, 50) : NaN;
  };
  const n = (e: Engine) => r.samples.filter((s) => s.engine === e).length;
  const hv = med('hangar-vmm', (s) => s.ms);
  const rows = ENGINES.map((e) => `| ${e} | ${n(e)} | ${med(e, (s) => s.ms)} | ${med(e, (s) => s.guestUptimeS)} | ${e === 'hangar-vmm' ? '1.00' : (hv / med(e, (s) => s.ms)).toFixed(2)} |`);
  const md = [
    '## Start → guest /init in the KVM lab (hangar-vmm vs QEMU)',
    '',
    'Written by `node dist/bench/lab-start-bench.js` (runs `scripts/kvm-lab.sh --with-qemu`). In one L1 (QEMU TCG `-cpu max`, nested SVM: a real',
    '`/dev/kvm`), the same kernel and initramfs (the tiny image with the lab overlay, `rdinit=/lab-init`, which prints a marker first),',
    '1 vCPU, 256 MiB, serial console; QEMU with `-accel kvm -cpu host -nodefaults`. Time from spawning the process to the marker',
    'on the guest\'s console, medians; "guest uptime" is the guest kernel\'s own clock at /init. Ratio: hangar-vmm\'s time / the peer\'s',
    '(below 1: hangar-vmm is faster). Everything inside L1 runs under TCG, 10–50× slower than hardware: compare ratios, not absolute times.',
    '',
    '| engine | runs | spawn → /init (ms, median) | guest uptime at /init (s, median) | hangar-vmm / this |',
    '|---|---|---|---|---|',
    ...rows,
    '',
    `L1: ${r.l1}.${r.errors.length ? ` Failed runs: ${r.errors.join('; ')}.` : ''}`,
  ].join('\n');
  const file = writeSection('lab-start', md);
  process.stdout.write(`${md}\n\nhost: ${describeHost()}\nwritten to ${file}\n`);
  process.exit(code === 0 ? 0 : 1);
}

await (process.env.HANGAR_LAB === '1' ? inside() : outside());
