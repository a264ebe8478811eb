/**
 * The L2 side of the KVM lab (scripts/kvm-lab.sh runs it inside L1, against
 * L1's /dev/kvm): boots the tiny image (Debian cloud kernel + busybox
 * initramfs, its own command line with `quiet`) on hangar-vmm, the way the
 * micro engine does — `--config`, console on a socket — and drives its shell.
 *
 *   node dist/test/lab/linux-guest.js [SCENARIO...]     (default: all of them)
 *
 * Scenarios, one hangar-vmm process each (each costs a Node start and a
 * boot under TCG, so the checks are batched into two):
 *   shell   1 vCPU: shell prompt, commands answered, console and i8042 IRQs
 *           from the DSDT, a raw disk seen as /dev/vda (virtio-mmio found
 *           through the DSDT's LNRO0005 device), `poweroff` → ACPI S5 →
 *           hangar-vmm exits 0
 *   smp     2 vCPUs: both CPUs up (/proc/cpuinfo, smpboot), then Ctrl-Alt-Del
 *           through the control API (PUT /actions SendCtrlAltDel) → the kernel
 *           restarts → the reset ends the VM → exit 3 (reboot)
 *
 * Prints one `LAB-RESULT {json}` line per scenario (what the guest said, exit
 * code, timings) and `LAB-CONSOLE` lines with the guest's console when a
 * scenario fails; exits 0 only when every scenario passed.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { VMM_NODE_FLAGS } from '../../src/vmm/process-flags.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const VMM_MAIN = path.join(ROOT, 'dist', 'src', 'vmm', 'main.js');
const IMAGE_DIR = path.join(process.env.HANGAR_IMAGE_DIR ?? path.join(ROOT, '.cache', 'images'), 'tiny');
const PROMPT = 'tiny# ';
/** Generous: L1 is emulated by TCG on a shared host; Node alone takes ~12 s to start there. */
const BOOT_TIMEOUT_MS = Number(process.env.HANGAR_LAB_BOOT_TIMEOUT_MS ?? 240_000);
const STEP_TIMEOUT_MS = 120_000;

export interface ScenarioResult {
  scenario: string;
  ok: boolean;
  error?: string;
  vcpus: number;
  exitCode: number | null;
  exitRecord?: unknown;
  /** Milliseconds from spawning hangar-vmm. */
  ms: { apiUp?: number; banner?: number; prompt?: number; end?: number };
  /** Outputs of the shell commands run, by name. */
  answers: Record<string, string>;
  consoleBytes: number;
  metrics?: unknown;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function api(sock: string, method: string, urlPath: string, body?: unknown): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request({ socketPath: sock, method, path: urlPath, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => { text += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : undefined }));
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

class Guest {
  text = '';
  private sock?: net.Socket;
  private readonly t0 = Date.now();
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-lab-'));
  readonly apiSock = path.join(this.dir, 'api.sock');
  readonly conSock = path.join(this.dir, 'console.sock');
  readonly exitFile = path.join(this.dir, 'exit.json');
  private child?: ReturnType<typeof spawn>;
  exited?: Promise<number | null>;
  stderr = '';

  elapsed(): number { return Date.now() - this.t0; }

  async start(vcpus: number, memMib: number, drives: unknown[] = []): Promise<void> {
    const img = JSON.parse(fs.readFileSync(path.join(IMAGE_DIR, 'image.json'), 'utf8')) as { cmdline: string };
    const cfgPath = path.join(this.dir, 'vm.json');
    fs.writeFileSync(cfgPath, JSON.stringify({
      'machine-config': { vcpu_count: vcpus, mem_size_mib: memMib },
      'boot-source': { kernel_image_path: path.join(IMAGE_DIR, 'vmlinuz'), initrd_path: path.join(IMAGE_DIR, 'initrd.img'), boot_args: img.cmdline },
      ...(drives.length ? { drives } : {}),
    }));
    this.child = spawn(process.execPath, [...VMM_NODE_FLAGS, VMM_MAIN, '--config', cfgPath, '--api-sock', this.apiSock, '--console-sock', this.conSock,
      '--console-log', path.join(this.dir, 'console.log'), '--exit-file', this.exitFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child.stderr!.on('data', (d: Buffer) => { this.stderr += d.toString(); });
    const child = this.child;
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    // The console socket is up before the VM starts (main.ts opens it first).
    while (!fs.existsSync(this.conSock)) {
      if (child.exitCode !== null) throw new Error(`hangar-vmm exited early (${child.exitCode}): ${this.stderr}`);
      if (this.elapsed() > BOOT_TIMEOUT_MS) throw new Error('hangar-vmm did not open its console socket');
      await sleep(20);
    }
    this.sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(this.conSock, () => resolve(s));
      s.once('error', reject);
    });
    this.sock.on('data', (d: Buffer) => { this.text += d.toString('latin1'); });
    this.sock.on('error', () => {});
  }

  /** Resolves with the elapsed ms once the console shows `what` (after `from`), or throws with the console's tail. */
  async waitFor(what: string | RegExp, ms: number, from = 0): Promise<number> {
    const deadline = Date.now() + ms;
    for (;;) {
      const seen = this.text.slice(from);
      if (typeof what === 'string' ? seen.includes(what) : what.test(seen)) return this.elapsed();
      if (this.child?.exitCode !== null && this.child?.exitCode !== undefined) throw new Error(`hangar-vmm exited (${this.child.exitCode}) before the console showed ${String(what)}`);
      if (Date.now() > deadline) throw new Error(`console did not show ${String(what)} within ${ms} ms`);
      await sleep(50);
    }
  }

  /** Types one command line and returns what it printed (between two markers the typed line itself does not contain). */
  async run(cmd: string): Promise<string> {
    const from = this.text.length;
    this.sock!.write(`echo @@""B; ${cmd}; echo @@""E\n`);
    await this.waitFor(/@@E\r?\n/, STEP_TIMEOUT_MS, from);
    const m = /@@B\r?\n([\s\S]*?)@@E\r?\n/.exec(this.text.slice(from));
    return (m?.[1] ?? '').replace(/\r/g, '').trimEnd();
  }

  type(s: string): void { this.sock!.write(s); }

  async exit(ms: number): Promise<number | null> {
    const t = setTimeout(() => this.child?.kill('SIGKILL'), ms);
    const code = await this.exited!;
    clearTimeout(t);
    return code;
  }

  exitRecord(): unknown {
    try { return JSON.parse(fs.readFileSync(this.exitFile, 'utf8')); } catch { return undefined; }
  }

  async cleanup(): Promise<void> {
    this.sock?.destroy();
    const c = this.child;
    if (c && c.exitCode === null && c.signalCode === null) { c.kill('SIGKILL'); await this.exited; }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

type Step = (g: Guest, r: ScenarioResult) => Promise<void>;

/** The disk the blk-* scenarios share (in L1's /tmp): written by blk-write, read back by blk-read in a new hangar-vmm. */
const LAB_DISK = path.join(os.tmpdir(), 'hangar-lab-disk.img');
const BLK_PATTERN = 'hangar-lab-blk-0123456789';
const labDrive = () => {
  if (!fs.existsSync(LAB_DISK)) fs.writeFileSync(LAB_DISK, Buffer.alloc(8 * 1024 * 1024));
  return [{ drive_id: 'lab', path_on_host: LAB_DISK, is_root_device: false, is_read_only: false }];
};

/** A 4 MiB raw disk whose first bytes are VDA_MARKER, in the scenario's own folder (removed with it). */
const VDA_MARKER = 'hangar-lab-vda-marker-0042';
const VDA_BYTES = 4 * 1024 * 1024;
const markedDrive = (dir: string) => {
  const disk = path.join(dir, 'vda.img');
  const bytes = Buffer.alloc(VDA_BYTES);
  bytes.write(VDA_MARKER, 0, 'latin1');
  fs.writeFileSync(disk, bytes);
  return [{ drive_id: 'marked', path_on_host: disk, is_root_device: false, is_read_only: true }];
};

const scenarios: Record<string, { vcpus: number; expectExit: number; steps: Step; drives?: (dir: string) => unknown[] }> = {
  /**
   * 1 vCPU: the console works both ways, the DSDT's devices got their IRQs, the raw disk is
   * /dev/vda (the image's init loads virtio_mmio with insmod, so only the DSDT can announce
   * the device); `poweroff` ends the VM through ACPI S5.
   */
  shell: {
    vcpus: 1,
    expectExit: 0,
    drives: markedDrive,
    steps: async (g, r) => {
      r.answers.echo = await g.run('echo hangar-$((6 * 7))');
      r.answers.uname = await g.run('uname -r');
      r.answers.console = await g.run("dmesg | grep -E 'ttyS0|i8042|serio' | sed 's/^\\[[ 0-9.]*\\] //'");
      r.answers.interrupts = await g.run("grep -E 'ttyS|i8042' /proc/interrupts | tr -s ' '");
      r.answers.date = await g.run('date -u +%Y-%m-%dT%H:%M');
      r.answers.vdaSize = await g.run('cat /sys/block/vda/size 2>&1');
      r.answers.vdaHead = await g.run(`head -c ${VDA_MARKER.length} /dev/vda 2>&1`);
      r.answers.virtioMmio = await g.run('ls /sys/bus/platform/drivers/virtio-mmio/ 2>&1 | grep -v -E "^(bind|unbind|uevent|module)$"');
      r.answers.virtioIrq = await g.run("grep virtio /proc/interrupts | tr -s ' '");
      g.type('poweroff\n');
    },
  },
  /**
   * 2 vCPUs: both come up; then Ctrl-Alt-Del through the control API: scancodes on the i8042,
   * IRQ 1 (from the DSDT), and the kernel's default for Ctrl-Alt-Del (kernel.ctrl-alt-del = 1,
   * which the tiny image's init leaves as is) restarts at once → the reset ends the VM, exit 3.
   */
  smp: {
    vcpus: 2,
    expectExit: 3,
    steps: async (g, r) => {
      r.answers.cpus = await g.run('grep -c ^processor /proc/cpuinfo');
      r.answers.smpboot = await g.run("dmesg | grep -E 'smpboot|smp:' | sed 's/^\\[[ 0-9.]*\\] //'");
      r.answers.online = await g.run('cat /sys/devices/system/cpu/online');
      r.answers.cad = await g.run('cat /proc/sys/kernel/ctrl-alt-del');
      const from = g.text.length;
      const res = await api(g.apiSock, 'PUT', '/actions', { action_type: 'SendCtrlAltDel' });
      r.answers.sendCtrlAltDel = String(res.status);
      await g.waitFor('reboot: Restarting system', STEP_TIMEOUT_MS, from);
    },
  },
  /**
   * Console throughput (not in the suite: a measurement, docs/vmm.md): 4 000 bytes through the
   * tty (interrupt-driven, 16 bytes per THR-empty interrupt) and ~2 000 through printk (the
   * 8250 console polls LSR before every byte), timed by the guest's own clock, with
   * hangar-vmm's port-exit and fast-path counters before and after.
   */
  uart: {
    vcpus: 1,
    expectExit: 0,
    steps: async (g, r) => {
      const counters = async (): Promise<Record<string, number>> => {
        const m = (await api(g.apiSock, 'GET', '/metrics')).body as { vm: { vcpus: Array<{ pioExits: number }>; devices: { serial0: Record<string, number> } } };
        return { pio: m.vm.vcpus.reduce((n, v) => n + v.pioExits, 0), ...m.vm.devices.serial0 };
      };
      const line = '0123456789'.repeat(10);
      const c0 = await counters();
      const tty = await g.run(`t0=$(cut -d' ' -f1 /proc/uptime); i=0; while [ $i -lt 40 ]; do echo ${line}; i=$((i+1)); done; t1=$(cut -d' ' -f1 /proc/uptime); echo "tty $t0 $t1"`);
      const c1 = await counters();
      const kmsg = await g.run(`t0=$(cut -d' ' -f1 /proc/uptime); i=0; while [ $i -lt 20 ]; do echo "<3>lab-uart ${line.slice(0, 80)}" > /dev/kmsg; i=$((i+1)); done; t1=$(cut -d' ' -f1 /proc/uptime); echo "kmsg $t0 $t1"`);
      const c2 = await counters();
      const secs = (out: string, tag: string) => { const m = new RegExp(`${tag} ([0-9.]+) ([0-9.]+)`).exec(out); return m ? +(Number(m[2]) - Number(m[1])).toFixed(2) : NaN; };
      r.answers.ttySeconds = String(secs(tty, 'tty'));
      r.answers.ttyBytes = String(c1.txBytes! - c0.txBytes!);
      r.answers.ttyPioExits = String(c1.pio! - c0.pio!);
      r.answers.kmsgSeconds = String(secs(kmsg, 'kmsg'));
      r.answers.kmsgBytes = String(c2.txBytes! - c1.txBytes!);
      r.answers.kmsgPioExits = String(c2.pio! - c1.pio!);
      r.answers.fastTxBytes = String((c2.fastTxBytes ?? 0) - (c0.fastTxBytes ?? 0));
      g.type('poweroff\n');
    },
  },
  /** virtio-blk with Linux's own driver: the disk appears, a sector written at 1 MiB reads back (not in the suite). */
  'blk-write': {
    vcpus: 1,
    expectExit: 0,
    drives: labDrive,
    steps: async (g, r) => {
      r.answers.vda = await g.run('[ -b /dev/vda ] && echo block device || echo missing');
      if (r.answers.vda !== 'block device') throw new Error(`no /dev/vda in the guest: ${await g.run('cat /proc/partitions; dmesg | grep -i virtio')}`);
      r.answers.size = await g.run('cat /sys/block/vda/size');
      r.answers.write = await g.run(`echo ${BLK_PATTERN} | dd of=/dev/vda bs=512 seek=2048 count=1 conv=sync 2>&1 | tail -1; sync`);
      r.answers.readBack = await g.run('dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | head -c 25');
      g.type('poweroff\n');
    },
  },
  /** The same disk in a fresh hangar-vmm: what blk-write wrote is there. */
  'blk-read': {
    vcpus: 1,
    expectExit: 0,
    drives: labDrive,
    steps: async (g, r) => {
      r.answers.vda = await g.run('[ -b /dev/vda ] && echo block device || echo missing');
      if (r.answers.vda !== 'block device') throw new Error('no /dev/vda in the guest');
      r.answers.readBack = await g.run('dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | head -c 25');
      g.type('poweroff\n');
    },
  },
};

async function runScenario(name: string): Promise<ScenarioResult> {
  const sc = scenarios[name];
  if (!sc) throw new Error(`unknown scenario ${name} (${Object.keys(scenarios).join(', ')})`);
  const r: ScenarioResult = { scenario: name, ok: false, vcpus: sc.vcpus, exitCode: null, ms: {}, answers: {}, consoleBytes: 0 };
  const g = new Guest();
  try {
    await g.start(sc.vcpus, 256, sc.drives?.(g.dir) ?? []);
    r.ms.apiUp = g.elapsed();
    r.ms.banner = await g.waitFor('Hangar tiny image: user space is up', BOOT_TIMEOUT_MS);
    r.ms.prompt = await g.waitFor(PROMPT, STEP_TIMEOUT_MS);
    try { r.metrics = (await api(g.apiSock, 'GET', '/metrics')).body; } catch { /* informational */ }
    await sc.steps(g, r);
    r.exitCode = await g.exit(STEP_TIMEOUT_MS);
    r.ms.end = g.elapsed();
    r.exitRecord = g.exitRecord();
    r.ok = r.exitCode === sc.expectExit;
    if (!r.ok) r.error = `hangar-vmm exited with ${r.exitCode}, expected ${sc.expectExit}`;
  } catch (e) {
    r.error = (e as Error).message;
  } finally {
    r.consoleBytes = g.text.length;
    if (!r.ok) {
      for (const line of g.text.replace(/\r/g, '').split('\n').slice(-60)) process.stdout.write(`LAB-CONSOLE ${name}: ${line}\n`);
      if (g.stderr) process.stdout.write(`LAB-CONSOLE ${name}: hangar-vmm stderr: ${g.stderr.trim().split('\n').slice(-10).join(' | ')}\n`);
    }
    await g.cleanup();
  }
  return r;
}

const wanted = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(scenarios);
let allOk = true;
for (const name of wanted) {
  const r = await runScenario(name);
  allOk &&= r.ok;
  process.stdout.write(`LAB-RESULT ${JSON.stringify(r)}\n`);
}
process.exit(allOk ? 0 : 1);
