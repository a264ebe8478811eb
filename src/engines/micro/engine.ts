/**
 * The `micro` engine: each VM is a hangar-vmm process (node dist/src/vmm/main.js)
 * driven over its control socket in the VM's runDir, with its serial console
 * on a second socket there and its console log where the daemon wants it.
 *
 * hangar-vmm runs in its own session (detached), so a daemon restart leaves it
 * running; adopt() finds it again through the sockets in runDir and, since the
 * process is then no longer our child, watches its pid in /proc and reads the
 * exit record hangar-vmm writes to runDir/exit.json just before it exits.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { DEFAULT_CONSOLE_LOG_LIMIT, consoleLogArgs } from '../console-log/limits.js';
import type { Duplex } from 'node:stream';
import { HangarError, toHangarError } from '../../common/errors.js';
import { createLogger, type Logger } from '../../common/log.js';
import { projectRoot } from '../../common/paths.js';
import type { Engine, EngineCapabilities, EngineVmConfig, VmExit, VmHandle, VmStats } from '../engine.js';
import { processAlive, processArgs, processCpuSeconds, processRssBytes, findVerifiedProcess, killVerified } from '../qemu/procfs.js';
import { probeKvm, type KvmProbe } from '../../kvm/probe.js';
import { VMM_EXIT, type VmmExitRecord } from '../../vmm/exit-codes.js';
import { DEFAULT_BOOT_ARGS } from '../../vmm/controller.js';
import { VMM_NODE_FLAGS } from '../../vmm/process-flags.js';
import { VmmClient } from './client.js';

export interface MicroEngineOptions {
  logger?: Logger;
  /** How long start() waits for the control socket. */
  startTimeoutMs?: number;
  /** Path of hangar-vmm's compiled entry point (default <projectRoot>/dist/src/vmm/main.js). */
  vmmMain?: string;
}

const PID_POLL_MS = 200;

export interface MicroRunFiles {
  apiSocket: string;
  consoleSocket: string;
  exitFile: string;
  processLog: string;
  /** Written by the engine right after the spawn, so a restarted daemon can find a VM whose start it never recorded. */
  pidFile: string;
}

export function microRunFiles(runDir: string): MicroRunFiles {
  return {
    apiSocket: path.join(runDir, 'vmm.sock'),
    consoleSocket: path.join(runDir, 'console.sock'),
    exitFile: path.join(runDir, 'exit.json'),
    processLog: path.join(runDir, 'vmm.log'),
    pidFile: path.join(runDir, 'vmm.pid'),
  };
}

/** True while pid is alive and is the hangar-vmm serving this runDir's control socket (not a recycled pid). */
function isVmmOf(pid: number, files: MicroRunFiles): boolean {
  if (!processAlive(pid)) return false;
  const args = processArgs(pid);
  return args !== null && args.some((a) => a.endsWith(path.join('vmm', 'main.js'))) && args.includes(files.apiSocket);
}

/** Maps how hangar-vmm ended (exit record, exit code, signal) to a VmExit. */
export function vmExitFor(code: number | null, signal: string | null, rec: VmmExitRecord | null, killRequested: boolean): VmExit {
  if (signal) {
    return { reason: 'killed', detail: killRequested ? 'killed on request' : `hangar-vmm was killed by ${signal}`, exitCode: code, signal };
  }
  const c = code ?? rec?.code ?? null;
  const detail = rec?.detail;
  const withDetail = (e: VmExit): VmExit => (detail ? { ...e, detail } : e);
  switch (c) {
    case VMM_EXIT.POWEROFF: return withDetail({ reason: 'poweroff', exitCode: c, signal: null });
    case VMM_EXIT.REBOOT: return withDetail({ reason: 'reboot', exitCode: c, signal: null });
    case VMM_EXIT.STOPPED: return withDetail({ reason: 'stopped', exitCode: c, signal: null });
    case VMM_EXIT.CRASHED: return withDetail({ reason: 'crashed', exitCode: c, signal: null });
    case null: return { reason: killRequested ? 'killed' : 'crashed', detail: detail ?? 'hangar-vmm ended without an exit record', exitCode: null, signal: null };
    default: return { reason: 'crashed', detail: detail ?? `hangar-vmm exited with code ${c}`, exitCode: c, signal: null };
  }
}

function readExitRecord(file: string): VmmExitRecord | null {
  try {
    const r = JSON.parse(fs.readFileSync(file, 'utf8')) as VmmExitRecord;
    return typeof r.code === 'number' && typeof r.reason === 'string' ? r : null;
  } catch {
    return null;
  }
}

function removeStale(p: string): void {
  try { fs.unlinkSync(p); } catch { /* not there */ }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class MicroVmHandle implements VmHandle {
  readonly engine = 'micro' as const;
  private readonly client: VmmClient;
  private listeners: Array<(e: VmExit) => void> = [];
  private exit: VmExit | null = null;
  private killRequested = false;
  private poll: NodeJS.Timeout | null = null;
  private readonly exitWaiters: Array<() => void> = [];
  private detached = false;

  constructor(readonly pid: number, private readonly files: MicroRunFiles, private readonly log: Logger, private readonly child: ChildProcess | null) {
    this.client = new VmmClient(files.apiSocket);
    if (child) {
      child.once('exit', (code, signal) => this.ended(code, signal));
    } else {
      // Not unref'd: watching an adopted VM is work the daemon must stay alive for (detach() stops it).
      this.poll = setInterval(() => { if (!processAlive(pid)) this.ended(null, null); }, PID_POLL_MS);
    }
  }

  private ended(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.exit) return;
    if (this.poll) { clearInterval(this.poll); this.poll = null; }
    this.exit = vmExitFor(code, signal, readExitRecord(this.files.exitFile), this.killRequested);
    this.log.info({ exit: this.exit }, 'hangar-vmm ended');
    for (const w of this.exitWaiters.splice(0)) w();
    if (this.detached) return;
    for (const l of this.listeners) {
      try { l(this.exit); } catch (e) { this.log.error({ err: String(e) }, 'exit listener failed'); }
    }
  }

  private alive(): void {
    if (this.exit) throw new HangarError('INVALID_STATE', `the VM process has ended (${this.exit.reason})`);
  }

  async pause(): Promise<void> { this.alive(); await this.client.action('Pause'); }
  async resume(): Promise<void> { this.alive(); await this.client.action('Resume'); }
  async requestShutdown(): Promise<void> { this.alive(); await this.client.action('SendCtrlAltDel'); }

  async kill(): Promise<void> {
    if (this.exit) return;
    this.killRequested = true;
    const done = new Promise<void>((r) => this.exitWaiters.push(r));
    try { process.kill(this.pid, 'SIGKILL'); } catch { /* already gone */ }
    if (!this.child && !this.poll) this.poll = setInterval(() => { if (!processAlive(this.pid)) this.ended(null, 'SIGKILL'); }, PID_POLL_MS);
    await done;
  }

  async queryState(): Promise<'running' | 'paused'> {
    this.alive();
    const vm = (await this.client.get('/vm')) as { state?: string };
    if (vm.state === 'Paused') return 'paused';
    if (vm.state === 'Running' || vm.state === 'Not started') return 'running';
    throw new HangarError('INVALID_STATE', `the VM is ${vm.state}`);
  }

  async stats(): Promise<VmStats> {
    const state = await this.queryState();
    return { pid: this.pid, rssBytes: processRssBytes(this.pid), cpuSeconds: processCpuSeconds(this.pid), state };
  }

  openConsole(): Promise<Duplex> {
    this.alive();
    return new Promise((resolve, reject) => {
      const s = net.connect(this.files.consoleSocket, () => { s.off('error', reject); resolve(s); });
      s.once('error', (e) => reject(new HangarError('UNAVAILABLE', `console socket ${this.files.consoleSocket}: ${e.message}`)));
    });
  }

  onExit(listener: (exit: VmExit) => void): void {
    if (this.exit && !this.detached) { queueMicrotask(() => listener(this.exit!)); return; }
    this.listeners.push(listener);
  }

  detach(): void {
    this.detached = true;
    this.listeners = [];
    if (this.poll) { clearInterval(this.poll); this.poll = null; }
    if (this.child) { this.child.removeAllListeners('exit'); this.child.unref(); }
  }
}

export class MicroEngine implements Engine {
  readonly name = 'micro' as const;
  /** hangar-vmm's own default: serial console on ttyS0 and the i8042 settings its Ctrl-Alt-Del needs. */
  readonly defaultCmdline = DEFAULT_BOOT_ARGS;
  private readonly log: Logger;
  private readonly startTimeoutMs: number;
  private readonly main: string;
  private probeResult?: Promise<KvmProbe>;

  constructor(opts: MicroEngineOptions = {}) {
    this.log = (opts.logger ?? createLogger('hangar')).child({ component: 'micro-engine' });
    this.startTimeoutMs = opts.startTimeoutMs ?? 10_000;
    this.main = opts.vmmMain ?? path.join(projectRoot(), 'dist', 'src', 'vmm', 'main.js');
  }

  /** What kind of KVM this host has (cached): the micro engine needs one; Linux guests need fullSystem. */
  probe(): Promise<KvmProbe> {
    this.probeResult ??= probeKvm();
    return this.probeResult;
  }

  async capabilities(): Promise<EngineCapabilities> {
    const p = await this.probe();
    const built = fs.existsSync(this.main);
    const virtio = fs.existsSync(path.join(path.dirname(this.main), 'virtio', 'index.js'));
    const caps: EngineCapabilities = {
      name: 'micro',
      available: p.present && built,
      version: '0.1.0',
      bootModes: ['kernel'],
      devices: virtio ? ['serial', 'i8042', 'virtio-blk', 'virtio-net', 'virtio-rng'] : ['serial', 'i8042'],
      accelerators: p.present ? ['kvm'] : [],
      snapshots: false,
      migration: false,
    };
    if (!p.present) caps.reason = `no usable KVM: ${p.detail}`;
    else if (!built) caps.reason = `${this.main} is missing (run the build)`;
    return caps;
  }

  private args(config: EngineVmConfig, files: MicroRunFiles): string[] {
    return [...VMM_NODE_FLAGS, this.main, '--id', config.id, '--api-sock', files.apiSocket, '--console-sock', files.consoleSocket,
      '--console-log', config.consoleLog, ...consoleLogArgs(config.consoleLogLimit ?? DEFAULT_CONSOLE_LOG_LIMIT), '--exit-file', files.exitFile];
  }

  async start(config: EngineVmConfig): Promise<VmHandle> {
    if (config.accel !== 'kvm') throw new HangarError('UNSUPPORTED', 'the micro engine runs on KVM only (accel "kvm")');
    for (const d of config.disks) {
      if (d.format !== 'raw') throw new HangarError('UNSUPPORTED', `disk ${d.id}: the micro engine supports raw disks only, not ${d.format}`);
    }
    if (!fs.existsSync(this.main)) throw new HangarError('UNAVAILABLE', `${this.main} is missing (run the build)`);
    const files = microRunFiles(config.runDir);
    const log = this.log.child({ vm: config.name });
    fs.mkdirSync(config.runDir, { recursive: true });
    for (const p of [files.apiSocket, files.consoleSocket, files.exitFile, files.pidFile]) removeStale(p);

    const out = fs.openSync(files.processLog, 'a');
    let child: ChildProcess;
    try {
      // detached: its own session, so signals to the daemon's process group do not reach the VM.
      child = spawn(process.execPath, this.args(config, files), { detached: true, stdio: ['ignore', out, out] });
    } finally {
      fs.closeSync(out);
    }
    const pid = child.pid;
    if (pid === undefined) throw new HangarError('ENGINE_FAILED', 'hangar-vmm could not be started');
    // Synchronously, in the same tick as the spawn: there is no moment where the process runs unnamed.
    try { fs.writeFileSync(files.pidFile, `${pid}\n`, { mode: 0o600 }); } catch (e) { log.warn({ err: String(e) }, 'could not write the pid file'); }
    const handle = new MicroVmHandle(pid, files, log, child);
    try {
      await this.waitForApi(files, child);
      const c = new VmmClient(files.apiSocket);
      await c.put('/machine-config', { vcpu_count: config.cpus, mem_size_mib: Math.floor(config.memoryBytes / 2 ** 20) });
      const boot: Record<string, string> = { kernel_image_path: config.boot.kernel };
      if (config.boot.initrd) boot.initrd_path = config.boot.initrd;
      if (config.boot.cmdline !== undefined) boot.boot_args = config.boot.cmdline;
      await c.put('/boot-source', boot);
      for (const d of config.disks) {
        const drive: Record<string, unknown> = { drive_id: d.id, path_on_host: d.path, is_root_device: false, is_read_only: d.readOnly ?? false };
        if (d.serial) drive.serial = d.serial;
        await c.put(`/drives/${encodeURIComponent(d.id)}`, drive);
      }
      for (const n of config.nics) await c.put(`/network-interfaces/${encodeURIComponent(n.id)}`, { iface_id: n.id, host_dev_name: n.tap, guest_mac: n.mac });
      await c.action('InstanceStart');
    } catch (e) {
      await handle.kill().catch(() => {});
      const tail = (() => { try { return fs.readFileSync(files.processLog, 'utf8').slice(-1000); } catch { return ''; } })();
      const he = toHangarError(e, 'ENGINE_FAILED');
      throw new HangarError(he.code === 'UNAVAILABLE' || he.code === 'TIMEOUT' ? 'ENGINE_FAILED' : he.code, `micro engine could not start ${config.name}: ${he.message}`, { log: tail });
    }
    log.info({ pid }, 'hangar-vmm started');
    return handle;
  }

  private async waitForApi(files: MicroRunFiles, child: ChildProcess): Promise<void> {
    const deadline = Date.now() + this.startTimeoutMs;
    const c = new VmmClient(files.apiSocket, 1000);
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new HangarError('ENGINE_FAILED', `hangar-vmm exited during start-up (code ${child.exitCode}, signal ${child.signalCode})`);
      if (fs.existsSync(files.apiSocket)) {
        try { await c.get('/'); return; } catch { /* not listening yet */ }
      }
      if (Date.now() > deadline) throw new HangarError('TIMEOUT', `hangar-vmm did not open ${files.apiSocket} within ${this.startTimeoutMs} ms`);
      await sleep(10);
    }
  }

  /** This VM's hangar-vmm: `hint` if it still is, else the pid in runDir/vmm.pid if that one is. */
  async findProcess(config: EngineVmConfig, hint?: number): Promise<number | null> {
    const files = microRunFiles(config.runDir);
    return findVerifiedProcess(files.pidFile, (pid) => isVmmOf(pid, files), hint);
  }

  async killProcess(config: EngineVmConfig, pid: number): Promise<boolean> {
    const files = microRunFiles(config.runDir);
    const killed = await killVerified(pid, () => isVmmOf(pid, files));
    this.log.warn({ vm: config.name, pid, gone: killed }, 'killed a stray hangar-vmm');
    return killed;
  }

  async adopt(config: EngineVmConfig, pid: number): Promise<VmHandle | null> {
    const files = microRunFiles(config.runDir);
    if (!processAlive(pid)) return null;
    // Make sure the pid is still our hangar-vmm for this VM, not a recycled pid.
    const args = processArgs(pid);
    if (!args || !args.some((a) => a.endsWith(path.join('vmm', 'main.js'))) || !args.includes(files.apiSocket)) return null;
    try {
      await new VmmClient(files.apiSocket, 2000).get('/');
    } catch (e) {
      this.log.warn({ vm: config.name, pid, err: String(e) }, 'hangar-vmm alive but its control socket does not answer');
      return null;
    }
    return new MicroVmHandle(pid, files, this.log.child({ vm: config.name }), null);
  }
}

export function createMicroEngine(opts: MicroEngineOptions = {}): MicroEngine {
  return new MicroEngine(opts);
}
