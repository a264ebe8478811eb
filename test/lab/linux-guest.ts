/**
 * The L2 side of the KVM lab (scripts/kvm-lab.sh runs it inside L1, against
 * L1's /dev/kvm): boots the tiny image (Debian cloud kernel + busybox
 * initramfs, its own command line with `quiet`) on hangar-vmm, the way the
 * micro engine does — `--config`, console on a socket — and drives its shell.
 *
 *   node dist/test/lab/linux-guest.js [SCENARIO...]     (default: all of them)
 *
 * Both suite scenarios boot the tiny image's kernel and initramfs with the
 * lab's overlay appended (scripts/kvm-lab.sh, build_l2: virtio_rng and
 * /lab-init) and `rdinit=/lab-init hangar.root=/dev/vda`: Linux's own
 * virtio-blk and ext4 drivers mount the lab's root disk (a copy in L1's
 * /tmp, shared by the scenarios) and switch to it.
 *
 * Scenarios (each boot costs a Node start and a boot under TCG, so the
 * checks are batched into two):
 *   shell   1 vCPU: root on virtio-blk (ext4, read/write), prompt, commands
 *           answered, Ctrl-C at the console, console and i8042 IRQs from the
 *           DSDT, a second raw disk as /dev/vdb, virtio-rng as the kernel's
 *           hw_random source, virtio-net to a TAP in L1 (ping, a file over
 *           HTTP); then a snapshot: paused, written, loaded into a FRESH
 *           hangar-vmm, where the shell's counter keeps counting and the disk
 *           and network keep working; then RequestShutdown through the
 *           control API (the daemon's graceful stop) → the ACPI power button
 *           → acpid → poweroff → ACPI S5 → exit 0
 *   smp     2 vCPUs, a new hangar-vmm on the same root disk: what `shell`
 *           wrote is there; both CPUs up (/proc/cpuinfo, smpboot); then
 *           Ctrl-Alt-Del through the control API (PUT /actions SendCtrlAltDel)
 *           → the kernel restarts → the reset ends the VM → exit 3 (reboot)
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
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { VMM_NODE_FLAGS } from '../../src/vmm/process-flags.js';
import { decodeSnapshotFile } from '../../src/vmm/snapshot/format.js';
import { describeVmState } from './vcpu-dump.js';
import { loginAsRoot } from './serial-login.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const VMM_MAIN = path.join(ROOT, 'dist', 'src', 'vmm', 'main.js');
const IMAGE_DIR = path.join(process.env.HANGAR_IMAGE_DIR ?? path.join(ROOT, '.cache', 'images'), 'tiny');
/** What scripts/kvm-lab.sh puts next to the tiny image (build_l2): the initramfs overlay and the root disk. */
const LAB_L2 = path.join(ROOT, '.cache', 'lab-l2');
const PROMPT = 'lab# ';
const BANNER = 'Hangar lab root: user space is up';
/** The guest's network, on a TAP hangar-vmm creates inside L1 (L1 has no other network). */
const TAP = 'labtap0';
const L1_ADDR = '10.0.2.1';
const GUEST_ADDR = '10.0.2.2';
const HTTP_PORT = 8080;
/** Generous: L1 is emulated by TCG on a shared host; Node alone takes ~12 s to start there. */
const BOOT_TIMEOUT_MS = Number(process.env.HANGAR_LAB_BOOT_TIMEOUT_MS ?? 240_000);
const STEP_TIMEOUT_MS = 120_000;
/**
 * The stall detector: a guest whose console shows nothing new for this long while the lab
 * waits on it is taken as stalled (no step stays quiet this long, even under TCG on a busy
 * host); the lab then dumps what hangar-vmm and L1 can say (dumpStalled) and fails the
 * scenario at once instead of waiting out the step's timeout.
 */
const STALL_MS = Number(process.env.HANGAR_LAB_STALL_S ?? 90) * 1000;

export interface ScenarioResult {
  scenario: string;
  ok: boolean;
  error?: string;
  vcpus: number;
  exitCode: number | null;
  exitRecord?: unknown;
  /** Milliseconds from spawning hangar-vmm (restore*: from spawning the restoring one). */
  ms: { apiUp?: number; banner?: number; prompt?: number; end?: number; restartLogin?: number; restoreApiUp?: number; restoreLoad?: number; restoreAnswer?: number };
  /** Outputs of the shell commands run, by name. */
  answers: Record<string, string>;
  consoleBytes: number;
  metrics?: unknown;
  /** Set when the scenario failed: what hangar-vmm and L1 said about the guest then (dumpStalled). */
  stall?: string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function api(sock: string, method: string, urlPath: string, body?: unknown): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    // agent: false: a fresh connection each time (a kept-alive one may be closed by hangar-vmm just as it is reused).
    const req = http.request({ socketPath: sock, agent: false, method, path: urlPath, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => { text += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : undefined }));
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

/** A control-API call that must succeed (2xx), or throws with hangar-vmm's fault message. */
async function apiOk(sock: string, method: string, urlPath: string, body?: unknown): Promise<unknown> {
  const res = await api(sock, method, urlPath, body);
  if (res.status < 200 || res.status > 299) throw new Error(`${method} ${urlPath}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
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
  /** When the console last showed a byte (or the guest started): the stall detector's clock. */
  lastOutputAt = Date.now();

  elapsed(): number { return Date.now() - this.t0; }

  /** Boots the tiny image's kernel with the lab overlay, root on the first drive. */
  async start(vcpus: number, memMib: number, devices: { drives: unknown[]; nets?: unknown[]; rng?: boolean }, boot?: Boot): Promise<void> {
    if (boot) {
      const cfg = path.join(this.dir, 'vm.json');
      fs.writeFileSync(cfg, JSON.stringify({
        'machine-config': { vcpu_count: vcpus, mem_size_mib: memMib },
        'boot-source': { kernel_image_path: boot.kernel, initrd_path: boot.initrd, boot_args: boot.cmdline },
        drives: devices.drives,
      }));
      await this.spawnVmm(['--config', cfg]);
      return;
    }
    const img = JSON.parse(fs.readFileSync(path.join(IMAGE_DIR, 'image.json'), 'utf8')) as { cmdline: string };
    // Linux unpacks concatenated initramfs archives in turn (each may be compressed or not); the
    // next one must start on a 4-byte boundary, zeros in between are skipped.
    const tinyInitrd = fs.readFileSync(path.join(IMAGE_DIR, 'initrd.img'));
    const initrd = path.join(this.dir, 'initrd-lab.img');
    fs.writeFileSync(initrd, Buffer.concat([tinyInitrd, Buffer.alloc((4 - (tinyInitrd.length % 4)) % 4), fs.readFileSync(path.join(LAB_L2, 'overlay.cpio'))]));
    const cfgPath = path.join(this.dir, 'vm.json');
    fs.writeFileSync(cfgPath, JSON.stringify({
      'machine-config': { vcpu_count: vcpus, mem_size_mib: memMib },
      'boot-source': { kernel_image_path: path.join(IMAGE_DIR, 'vmlinuz'), initrd_path: initrd, boot_args: `${img.cmdline} rdinit=/lab-init hangar.root=/dev/vda` },
      drives: devices.drives,
      ...(devices.nets?.length ? { 'network-interfaces': devices.nets } : {}),
      ...(devices.rng ? { entropy: {} } : {}),
    }));
    await this.spawnVmm(['--config', cfgPath]);
  }

  /** A fresh hangar-vmm with nothing configured; restore() then loads a snapshot into it. */
  async startEmpty(): Promise<void> {
    await this.spawnVmm([]);
    while (!fs.existsSync(this.apiSock)) {
      if (this.elapsed() > BOOT_TIMEOUT_MS) throw new Error('hangar-vmm did not open its API socket');
      await sleep(20);
    }
  }

  private async spawnVmm(extra: string[]): Promise<void> {
    this.child = spawn(process.execPath, [...VMM_NODE_FLAGS, VMM_MAIN, ...extra, '--api-sock', this.apiSock, '--console-sock', this.conSock,
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
    this.sock.on('data', (d: Buffer) => { this.text += d.toString('latin1'); this.lastOutputAt = Date.now(); });
    this.lastOutputAt = Date.now();
    current = this;
    this.sock.on('error', () => {});
  }

  /** Resolves with the elapsed ms once the console shows `what` (after `from`), or throws with the console's tail. */
  async waitFor(what: string | RegExp, ms: number, from = 0, stallMs = STALL_MS): Promise<number> {
    const deadline = Date.now() + ms;
    for (;;) {
      const seen = this.text.slice(from);
      if (typeof what === 'string' ? seen.includes(what) : what.test(seen)) return this.elapsed();
      if (this.child?.exitCode !== null && this.child?.exitCode !== undefined) throw new Error(`hangar-vmm exited (${this.child.exitCode}) before the console showed ${String(what)}`);
      const quiet = Date.now() - this.lastOutputAt;
      if (quiet > stallMs) throw new StallError(`guest stalled: its console showed nothing for ${Math.round(quiet / 1000)} s while the lab waited for ${String(what)}`);
      if (Date.now() > deadline) throw new Error(`console did not show ${String(what)} within ${ms} ms`);
      await sleep(50);
    }
  }

  /** Types one command line and returns what it printed (between two markers the typed line itself does not contain). */
  /**
   * Where the console should show the shell's next prompt (set after each command): typing
   * before the prompt is there races the line editor (busybox asks the terminal for its cursor
   * position with the prompt and reads the answer from the same input), so run() waits for it.
   */
  promptFrom?: number;

  async run(cmd: string): Promise<string> {
    if (this.promptFrom !== undefined) await this.waitFor(PROMPT, STEP_TIMEOUT_MS, this.promptFrom);
    const from = this.text.length;
    this.sock!.write(`echo @@""B; ${cmd}; echo @@""E\n`);
    await this.waitFor(/@@E\r?\n/, STEP_TIMEOUT_MS, from);
    const m = /@@B\r?\n([\s\S]*?)@@E\r?\n/.exec(this.text.slice(from));
    this.promptFrom = from + (m ? m.index + m[0].length : 0);
    // Progress on L1's console: where a run that fails later got to, and when.
    process.stdout.write(`lab: +${(this.elapsed() / 1000).toFixed(1)}s ${cmd.slice(0, 60)}\n`);
    return (m?.[1] ?? '').replace(/\r/g, '').trimEnd();
  }

  type(s: string): void { this.sock!.write(s); }

  /** Whether this hangar-vmm still runs (a dump can ask it). */
  alive(): boolean { return !!this.child && this.child.exitCode === null && this.child.signalCode === null; }

  async exit(ms: number): Promise<number | null> {
    const t = setTimeout(() => this.child?.kill('SIGKILL'), ms);
    const code = await this.exited!;
    clearTimeout(t);
    return code;
  }

  exitRecord(): unknown {
    try { return JSON.parse(fs.readFileSync(this.exitFile, 'utf8')); } catch { return undefined; }
  }

  private readonly extraDirs: string[] = [];
  /** Another folder to remove with this guest's (a snapshot's files). */
  alsoRemove(dir: string): void { this.extraDirs.push(dir); }

  async cleanup(): Promise<void> {
    this.sock?.destroy();
    const c = this.child;
    if (c && c.exitCode === null && c.signalCode === null) { c.kill('SIGKILL'); await this.exited; }
    for (const d of [this.dir, ...this.extraDirs]) fs.rmSync(d, { recursive: true, force: true });
  }
}

/** A scenario's own kernel, initramfs and command line (instead of the tiny image with the lab overlay). */
interface Boot { kernel: string; initrd: string; cmdline: string }

/**
 * The debian-12 image as scripts/kvm-lab.sh --with-debian puts it in L1 (/data/debian-12): its
 * kernel, initramfs and root disk (a raw copy of the image's base), written through a snapshot
 * overlay of L1's, so the cached copy never changes.
 */
const DEBIAN_DIR = '/data/debian-12';
const DEBIAN_MEM_MIB = 1024;
const DEBIAN_BANNER = /Debian GNU\/Linux 12 \S+ ttyS0/;
const DEBIAN_BOOT_MS = Number(process.env.HANGAR_LAB_DEBIAN_TIMEOUT_S ?? 2400) * 1000;
/** systemd's stop under nested TCG: minutes. */
const DEBIAN_STOP_MS = 600_000;

/** The image's own kernel, initramfs and command line (the serial console only: no display here). */
function debianBoot(): Boot {
  const img = JSON.parse(fs.readFileSync(path.join(DEBIAN_DIR, 'image.json'), 'utf8')) as { cmdline: string };
  return { kernel: path.join(DEBIAN_DIR, 'vmlinuz'), initrd: path.join(DEBIAN_DIR, 'initrd.img'), cmdline: img.cmdline.replace(/console=tty0\s*/, '') };
}

/** The root disk (read/write) and the lab's cloud-init seed (scripts/kvm-lab.sh, build_debian_seed). */
function debianDrives(): unknown[] {
  return [
    { drive_id: 'root', path_on_host: path.join(DEBIAN_DIR, 'disk.raw'), is_root_device: true, is_read_only: false },
    { drive_id: 'cidata', path_on_host: path.join(DEBIAN_DIR, 'cidata.img'), is_root_device: false, is_read_only: true },
  ];
}

/** root logs in at agetty's prompt (test/lab/serial-login.ts); g.run works from then on. */
async function debianLogin(g: Guest, r: ScenarioResult, which: string): Promise<void> {
  g.lastOutputAt = Date.now();
  await loginAsRoot(g, STEP_TIMEOUT_MS);
  g.promptFrom = undefined;
  process.stdout.write(`lab: logged in as root (${which} boot) after ${(g.elapsed() / 1000).toFixed(1)}s\n`);
  r.answers[`${which}Shell`] = await g.run('echo "$(id -un)@$(hostname) $(cut -d\' \' -f1 /proc/uptime)s up"');
}

/** RequestShutdown (the ACPI power button) and systemd's way down to S5. */
async function debianPowerButton(g: Guest, r: ScenarioResult, which: string): Promise<void> {
  const from = g.text.length;
  r.answers[`${which}RequestShutdown`] = String((await api(g.apiSock, 'PUT', '/actions', { action_type: 'RequestShutdown' })).status);
  await g.waitFor(/reboot: Power down/, DEBIAN_STOP_MS, from, DEBIAN_STOP_MS);
  const said = g.text.slice(from).replace(/\r/g, '').split('\n');
  r.answers[`${which}Stop`] = `${said.filter((l) => /Stopped|Unmount|Reached target/.test(l)).length} stop lines; ${said.filter((l) => /reboot: Power down|System Power Off/.test(l)).map((l) => l.trim()).join(' | ')}`;
  process.stdout.write(`lab: ${which} boot powered down after the power button at ${(g.elapsed() / 1000).toFixed(1)}s\n`);
}

/** The guest the lab talks to now (the latest hangar-vmm started): what a failure's dump looks at. */
let current: Guest | undefined;

class StallError extends Error {}

/** Resolves with `p`, or rejects after `ms` (a dump must not hang on a stuck hangar-vmm). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms).unref())]);
}

/**
 * What can be learned about a guest that stopped making progress, as lines: hangar-vmm's
 * state and vCPU exit counts twice, 2 s apart (a vCPU whose count does not move is halted or
 * stuck in the guest); then the VM paused and snapshotted, and the KVM state in the snapshot
 * (test/lab/vcpu-dump.ts: MP state, RIP, IF, LAPIC timer and IRR/ISR, TSC deadline, IOAPIC);
 * L1's load and uptime. Best effort: each part that fails says so.
 */
async function dumpStalled(g: Guest): Promise<string[]> {
  const out: string[] = [];
  const part = async (name: string, f: () => Promise<string[]>) => {
    try { out.push(...(await within(f(), 30_000, name)).map((l) => `${name}: ${l}`)); } catch (e) { out.push(`${name}: failed: ${(e as Error).message}`); }
  };
  out.push(`console quiet for ${Math.round((Date.now() - g.lastOutputAt) / 1000)} s; ${g.text.length} bytes in all`);
  await part('L1', async () => [`loadavg ${fs.readFileSync('/proc/loadavg', 'utf8').trim()}; uptime ${fs.readFileSync('/proc/uptime', 'utf8').trim()}`]);
  if (!g.alive()) { out.push('hangar-vmm has exited'); return out; }
  await part('metrics', async () => {
    type M = { vm?: { state: string; vcpus: Array<{ index: number; exits: number; pioExits: number; mmioExits: number }>; devices: Record<string, unknown> } };
    const m1 = (await api(g.apiSock, 'GET', '/metrics')).body as M;
    await sleep(2000);
    const m2 = (await api(g.apiSock, 'GET', '/metrics')).body as M;
    const lines = [`vm state ${m2.vm?.state}`];
    for (const v of m2.vm?.vcpus ?? []) {
      const before = m1.vm?.vcpus.find((x) => x.index === v.index);
      lines.push(`vcpu${v.index}: ${v.exits} exits (${v.pioExits} pio, ${v.mmioExits} mmio), ${before ? v.exits - before.exits : '?'} in the last 2 s`);
    }
    lines.push(`devices ${JSON.stringify(m2.vm?.devices)}`);
    return lines;
  });
  await part('kvm', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-lab-stall-'));
    try {
      await apiOk(g.apiSock, 'PUT', '/actions', { action_type: 'Pause' });
      const snap = path.join(dir, 'vm.snap');
      await apiOk(g.apiSock, 'PUT', '/snapshot/create', { snapshot_path: snap, mem_file_path: path.join(dir, 'vm.mem') });
      await apiOk(g.apiSock, 'PUT', '/actions', { action_type: 'Resume' });
      return describeVmState(decodeSnapshotFile(fs.readFileSync(snap)));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  return out;
}

/** A scenario's checks; a step that hands the VM over to a new hangar-vmm (a restore) returns the new Guest. */
type Step = (g: Guest, r: ScenarioResult) => Promise<Guest | void>;

/** A 4 MiB raw disk whose first bytes are VDA_MARKER, in the scenario's own folder (removed with it). */
const VDA_MARKER = 'hangar-lab-vda-marker-0042';
const VDA_BYTES = 4 * 1024 * 1024;
const markedDrive = (dir: string) => {
  const disk = path.join(dir, 'vda.img');
  const bytes = Buffer.alloc(VDA_BYTES);
  bytes.write(VDA_MARKER, 0, 'latin1');
  fs.writeFileSync(disk, bytes);
  return { drive_id: 'marked', path_on_host: disk, is_root_device: false, is_read_only: true };
};

/** The lab's root disk (ext4, from build_l2), copied into L1's /tmp by the first scenario and kept for the next. */
const ROOT_DISK = path.join(os.tmpdir(), 'hangar-lab-root.ext4');
const rootDrive = (fresh: boolean) => {
  if (fresh || !fs.existsSync(ROOT_DISK)) fs.copyFileSync(path.join(LAB_L2, 'root.ext4'), ROOT_DISK);
  return { drive_id: 'root', path_on_host: ROOT_DISK, is_root_device: true, is_read_only: false };
};
/** What `shell` writes to the root disk and `smp`, in a new hangar-vmm, reads back. */
const PERSIST_TOKEN = `hangar-lab-persist-${process.pid}`;
const labNet = () => ({ iface_id: 'eth0', host_dev_name: TAP, guest_mac: '02:00:00:0a:00:02' });

/** L1's side of the guest's network: the address on the TAP hangar-vmm made (a fresh TAP for each hangar-vmm). */
function setUpTap(): void {
  // A fixed MAC: the restored guest's ARP entry for L1 stays right for the new TAP.
  execFileSync('ip', ['link', 'set', TAP, 'address', '02:00:00:0a:00:01']);
  execFileSync('ip', ['addr', 'add', `${L1_ADDR}/24`, 'dev', TAP]);
  execFileSync('ip', ['link', 'set', TAP, 'up']);
}

/** A file the guest fetches over TCP: 256 KiB of random bytes, served on L1's TAP address. */
const HTTP_FILE = crypto.randomBytes(256 * 1024);
async function serveFile(): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.url !== '/lab-file') { res.writeHead(404).end(); return; }
    res.writeHead(200, { 'content-length': HTTP_FILE.length }).end(HTTP_FILE);
  });
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(HTTP_PORT, L1_ADDR, resolve); });
  return server;
}

/** The shell's counter (started by `shell`): its current value. */
async function counter(g: Guest): Promise<number> {
  return Number(await g.run('cat /tmp/count'));
}

async function rngBytes(g: Guest): Promise<number> {
  const m = (await api(g.apiSock, 'GET', '/metrics')).body as { vm: { devices: Record<string, Record<string, number>> } };
  return Object.entries(m.vm.devices).filter(([k]) => k.includes('rng')).reduce((n, [, v]) => n + (v.bytes ?? 0), 0);
}

const scenarios: Record<string, { vcpus: number; expectExit: number; steps: Step; memMib?: number; boot?: () => Boot; booted?: { banner: string | RegExp; prompt: string | RegExp; timeoutMs: number }; devices?: (dir: string) => { drives: unknown[]; nets?: unknown[]; rng?: boolean } }> = {
  /**
   * 1 vCPU: root on virtio-blk, the console both ways, the DSDT's devices and their IRQs, a
   * second (raw, read-only) disk, virtio-rng, virtio-net; then snapshot → restore in a fresh
   * hangar-vmm → the guest keeps running; then the graceful stop (RequestShutdown, as the
   * daemon's stop sends it) → ACPI power button → S5.
   */
  shell: {
    vcpus: 1,
    expectExit: 0,
    devices: (dir) => ({ drives: [rootDrive(true), markedDrive(dir)], nets: [labNet()], rng: true }),
    steps: async (g, r) => {
      r.answers.echo = await g.run('echo hangar-$((6 * 7))');
      r.answers.uname = await g.run('uname -r');
      // Root: Linux's virtio-blk and ext4 drivers, read/write; the mark survives into `smp`.
      r.answers.rootMount = await g.run("grep ' / ' /proc/mounts");
      r.answers.persistWrite = await g.run(`echo ${PERSIST_TOKEN} > /persist.txt && sync && cat /persist.txt`);
      // The console's input side: Ctrl-C reaches the shell's foreground job as SIGINT (a sleep
      // that would outlast the step's timeout).
      await g.waitFor(PROMPT, STEP_TIMEOUT_MS, g.promptFrom);
      const typed = g.text.length;
      g.type('sleep 1000\n');
      await g.waitFor(/sleep 1000\r?\n/, STEP_TIMEOUT_MS, typed);
      await sleep(1500);
      g.promptFrom = g.text.length;
      g.type('\x03');
      r.answers.ctrlC = await g.run('echo after-ctrl-c');
      r.answers.console = await g.run("dmesg | grep -E 'ttyS0|i8042|serio' | sed 's/^\\[[ 0-9.]*\\] //'");
      r.answers.interrupts = await g.run("grep -E 'ttyS|i8042' /proc/interrupts | tr -s ' '");
      r.answers.date = await g.run('date -u +%Y-%m-%dT%H:%M');
      r.answers.vdbSize = await g.run('cat /sys/block/vdb/size 2>&1');
      r.answers.vdbHead = await g.run(`head -c ${VDA_MARKER.length} /dev/vdb 2>&1`);
      r.answers.virtioMmio = await g.run('ls /sys/bus/platform/drivers/virtio-mmio/ 2>&1 | grep -v -E "^(bind|unbind|uevent|module)$"');
      r.answers.virtioIrq = await g.run("grep virtio /proc/interrupts | tr -s ' '");
      // virtio-rng: the kernel's hw_random source, and what is read through it comes from the device.
      r.answers.rngCurrent = await g.run('cat /sys/class/misc/hw_random/rng_current 2>&1');
      const rng0 = await rngBytes(g);
      r.answers.hwrngRead = await g.run('head -c 4096 /dev/hwrng | wc -c');
      r.answers.rngDeviceBytes = String((await rngBytes(g)) - rng0);
      r.answers.rngBytesAtBoot = String(rng0);
      // virtio-net to a TAP in L1: ping, and 256 KiB over TCP (busybox wget) checked by its hash.
      setUpTap();
      const server = await serveFile();
      try {
        r.answers.netUp = await g.run(`ip addr add ${GUEST_ADDR}/24 dev eth0 && ip link set eth0 up && echo up`);
        r.answers.ping = await g.run(`ping -c 2 -W 10 ${L1_ADDR} | grep -c 'bytes from'`);
        r.answers.fetch = await g.run(`wget -q -O /tmp/lab-file http://${L1_ADDR}:${HTTP_PORT}/lab-file && md5sum < /tmp/lab-file | cut -d' ' -f1 && wc -c < /tmp/lab-file`);
        r.answers.fetchExpected = `${crypto.createHash('md5').update(HTTP_FILE).digest('hex')}\n${HTTP_FILE.length}`;
      } finally {
        server.close();
      }

      // Snapshot and restore: a counter runs in the shell's background; the VM is paused and
      // written, this hangar-vmm stopped; a fresh one loads the files and resumes.
      await g.run('{ (i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 1; done) > /dev/null 2>&1 & }');
      while (!((await counter(g)) >= 3)) await sleep(1000);
      const snapDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-lab-snap-'));
      const files = { snapshot_path: path.join(snapDir, 'vm.snap'), mem_file_path: path.join(snapDir, 'vm.mem') };
      r.answers.beforeSnapshot = String(await counter(g));
      await apiOk(g.apiSock, 'PUT', '/actions', { action_type: 'Pause' });
      await apiOk(g.apiSock, 'PUT', '/snapshot/create', files);
      await apiOk(g.apiSock, 'PUT', '/actions', { action_type: 'Stop' });
      r.answers.firstExit = String(await g.exit(STEP_TIMEOUT_MS));

      const h = new Guest();
      h.alsoRemove(snapDir);
      await h.startEmpty();
      r.ms.restoreApiUp = h.elapsed();
      const t0 = h.elapsed();
      await apiOk(h.apiSock, 'PUT', '/snapshot/load', { ...files, resume_vm: true });
      r.ms.restoreLoad = h.elapsed() - t0;
      r.answers.afterRestore = String(await counter(h));
      r.ms.restoreAnswer = h.elapsed() - t0;
      await sleep(3000);
      r.answers.afterRestoreLater = String(await counter(h));
      r.answers.restoredWrite = await h.run(`echo restored-${PERSIST_TOKEN} > /restored.txt && sync && cat /restored.txt`);
      setUpTap();
      r.answers.restoredPing = await h.run(`ping -c 2 -W 10 ${L1_ADDR} | grep -c 'bytes from'`);

      // The daemon's graceful stop: this guest listens for the power button, so that is pressed.
      const from = h.text.length;
      r.answers.requestShutdown = String((await api(h.apiSock, 'PUT', '/actions', { action_type: 'RequestShutdown' })).status);
      await h.waitFor('lab: power button pressed', STEP_TIMEOUT_MS, from);
      r.answers.powerButton = 'seen';
      return h;
    },
  },
  /**
   * 2 vCPUs, a new hangar-vmm on the root disk `shell` wrote: its files are there. Both CPUs
   * come up; then Ctrl-Alt-Del through the control API: scancodes on the i8042, IRQ 1 (from
   * the DSDT); busybox init (which set kernel.ctrl-alt-del to 0) gets SIGINT and reboots →
   * the reset ends the VM, exit 3.
   */
  smp: {
    vcpus: 2,
    expectExit: 3,
    devices: () => ({ drives: [rootDrive(false)] }),
    steps: async (g, r) => {
      r.answers.persisted = await g.run('cat /persist.txt /restored.txt 2>&1');
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
   * issue 7 (not in the suite: a Debian boot under nested TCG takes many minutes): the debian-12
   * image's own kernel and initramfs with its root disk (raw, virtio-blk) and the lab's cloud-init
   * seed (a second, read-only disk) on hangar-vmm, to agetty's login prompt on ttyS0; root logs in
   * (the seed's password), checks the kernel, root mount and disks, writes a file to the root disk;
   * the graceful stop (power button → systemd-logind → poweroff → S5, exit 0); then a NEW
   * hangar-vmm boots the same disk to a login again and the file is there; the power button ends
   * that one too. Run: scripts/kvm-lab.sh --with-debian --timeout 3000 -- node
   * dist/test/lab/linux-guest.js debian.
   */
  debian: {
    vcpus: 1,
    memMib: DEBIAN_MEM_MIB,
    expectExit: 0,
    boot: debianBoot,
    devices: () => ({ drives: debianDrives() }),
    // agetty's banner and prompt on ttyS0 (systemd printed no "Reached target multi-user.target" on the
    // console in the lab's run; cloud-init's messages may split "debian login: " across lines).
    booted: { banner: DEBIAN_BANNER, prompt: /login: /, timeoutMs: DEBIAN_BOOT_MS },
    steps: async (g, r) => {
      r.answers.login = DEBIAN_BANNER.exec(g.text)?.[0] ?? '';
      r.answers.milestones = ['Run /init', 'EXT4-fs (vda', 'systemd[1]', 'Reached target', 'login:', 'Cloud-init v. 22.4.2 finished']
        .map((m) => { const i = g.text.indexOf(m); return `${m}@${i}`; }).join(' ');
      await debianLogin(g, r, 'first');
      r.answers.kernel = await g.run('uname -r; cat /proc/cmdline');
      r.answers.rootMount = await g.run("grep ' / ' /proc/mounts; ls /sys/block | tr '\\n' ' '");
      r.answers.virtioBlk = await g.run('ls /sys/bus/virtio/drivers/virtio_blk | grep -c virtio');
      r.answers.systemState = await g.run('systemctl is-system-running 2>&1; systemctl --failed --no-legend --plain 2>&1 | head -5');
      r.answers.persistWrite = await g.run(`echo ${PERSIST_TOKEN} > /root/hangar-lab-persist && sync && cat /root/hangar-lab-persist`);
      if (r.answers.persistWrite !== PERSIST_TOKEN) throw new Error(`the root disk did not take the write: ${r.answers.persistWrite}`);

      // The daemon's graceful stop: RequestShutdown presses the ACPI power button; systemd-logind
      // powers off; S5 ends hangar-vmm with exit 0.
      await debianPowerButton(g, r, 'first');
      r.answers.firstExit = String(await g.exit(STEP_TIMEOUT_MS));
      if (r.answers.firstExit !== '0') throw new Error(`the first hangar-vmm exited with ${r.answers.firstExit} after the power button, expected 0`);

      // A new hangar-vmm on the same root disk: the file written before the stop is there.
      const h = new Guest();
      await h.start(1, DEBIAN_MEM_MIB, { drives: debianDrives() }, debianBoot());
      await h.waitFor(DEBIAN_BANNER, DEBIAN_BOOT_MS, 0, DEBIAN_BOOT_MS);
      await h.waitFor(/login: /, DEBIAN_BOOT_MS, 0, DEBIAN_BOOT_MS);
      r.ms.restartLogin = h.elapsed();
      process.stdout.write(`lab: restarted guest at its login prompt after ${(h.elapsed() / 1000).toFixed(1)}s\n`);
      await debianLogin(h, r, 'second');
      r.answers.persisted = await h.run('cat /root/hangar-lab-persist 2>&1');
      r.answers.previousBoot = await h.run('journalctl -b -1 --no-pager -o cat -u systemd-logind 2>&1 | tail -4');
      if (r.answers.persisted !== PERSIST_TOKEN) throw new Error(`after the restart the file holds ${JSON.stringify(r.answers.persisted)}, expected ${PERSIST_TOKEN}`);
      await debianPowerButton(h, r, 'second');
      return h;
    },
  },
  /**
   * The stall detector on a real guest (not in the suite; run with HANGAR_LAB_STALL_S=20): the
   * guest sleeps with a quiet console, so the lab must fail this scenario as stalled and dump
   * its vCPU (halted, interrupts on, timer armed) instead of waiting out the step.
   */
  quiet: {
    vcpus: 1,
    expectExit: 0,
    steps: async (g) => {
      g.type('sleep 600; echo woke""-up\n'); // the echoed line must not match
      await g.waitFor('woke-up', 700_000);
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
};

async function runScenario(name: string): Promise<ScenarioResult> {
  const sc = scenarios[name];
  if (!sc) throw new Error(`unknown scenario ${name} (${Object.keys(scenarios).join(', ')})`);
  const r: ScenarioResult = { scenario: name, ok: false, vcpus: sc.vcpus, exitCode: null, ms: {}, answers: {}, consoleBytes: 0 };
  current = undefined;
  const first = new Guest();
  let g = first;
  try {
    await g.start(sc.vcpus, sc.memMib ?? 256, sc.devices?.(g.dir) ?? { drives: [rootDrive(false)] }, sc.boot?.());
    r.ms.apiUp = g.elapsed();
    const b = sc.booted ?? { banner: BANNER, prompt: PROMPT, timeoutMs: BOOT_TIMEOUT_MS };
    // The boot may be quiet for long (`quiet`, TCG under load): only its timeout counts there.
    r.ms.banner = await g.waitFor(b.banner, b.timeoutMs, 0, b.timeoutMs);
    r.ms.prompt = await g.waitFor(b.prompt, b.timeoutMs, 0, sc.booted ? b.timeoutMs : STALL_MS);
    try { r.metrics = (await api(g.apiSock, 'GET', '/metrics')).body; } catch { /* informational */ }
    const next = await sc.steps(g, r);
    if (next) g = next;
    r.exitCode = await g.exit(STEP_TIMEOUT_MS);
    r.ms.end = g.elapsed();
    r.exitRecord = g.exitRecord();
    r.ok = r.exitCode === sc.expectExit;
    if (!r.ok) r.error = `hangar-vmm exited with ${r.exitCode}, expected ${sc.expectExit}`;
  } catch (e) {
    r.error = (e as Error).message;
    // Whatever failed, the guest the lab was talking to is described while it still runs.
    const stalled = current ?? g;
    if (current) g = current;
    r.stall = await dumpStalled(stalled);
    if (e instanceof StallError) r.error += `\n${r.stall.join('\n')}`;
    for (const line of r.stall) process.stdout.write(`LAB-STALL ${name}: ${line}\n`);
  } finally {
    r.consoleBytes = g.text.length;
    if (!r.ok) {
      for (const line of g.text.replace(/\r/g, '').split('\n').slice(-60)) process.stdout.write(`LAB-CONSOLE ${name}: ${line}\n`);
      for (const x of new Set([first, g])) if (x.stderr) process.stdout.write(`LAB-CONSOLE ${name}: hangar-vmm stderr: ${x.stderr.trim().split('\n').slice(-10).join(' | ')}\n`);
    }
    for (const x of new Set([first, g])) await x.cleanup();
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
