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
import type { ChildProcess } from 'node:child_process';
import { DEFAULT_CONSOLE_LOG_LIMIT, consoleLogArgs } from '../../common/console-log/limits.js';
import type { Duplex } from 'node:stream';
import { HangarError, toHangarError } from '../../common/errors.js';
import { createLogger, type Logger } from '../../common/log.js';
import { projectRoot } from '../../common/paths.js';
import type { DeviceCounters, Engine, EngineCapabilities, EngineVmConfig, VmExit, VmHandle } from '../engine.js';
import { BaseVmHandle, PID_POLL_MS } from '../base/handle.js';
import { findOurProcess, isOurs, killOurProcess, type VmProcessIdentity } from '../base/identity.js';
import { spawnVmProcess } from '../base/spawn.js';
import { openTapFd } from '../base/tap.js';
import type { KvmProbe } from '../../kvm/probe.js';
import { ownProbe } from '../base/kvm.js';
import { MICRO_LIMITS } from './limits.js';
import { VMM_EXIT, type VmmExitRecord } from '../../vmm/exit-codes.js';
import { DEFAULT_BOOT_ARGS } from '../../vmm/controller.js';
import { VMM_NODE_FLAGS } from '../../vmm/process-flags.js';
import { VmmClient } from './client.js';
import { microDeviceCounters } from './device-counters.js';
import { cleanupStaleSandbox, loadVmSandbox, sandboxFor, type VmSandbox } from '../sandbox/index.js';

export interface MicroEngineOptions {
  logger?: Logger;
  /** How long start() waits for the control socket, and for each request that configures and boots the VM (default: microStartTimeoutMs()). */
  startTimeoutMs?: number;
  /** Path of hangar-vmm's compiled entry point (default <projectRoot>/dist/src/vmm/main.js). */
  vmmMain?: string;
  /** This host's KVM, probed once per daemon (the engine registry shares one probe between engines); an engine used alone probes once itself. */
  kvm?: () => Promise<KvmProbe>;
}

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

/** This VM's hangar-vmm: a process running vmm/main.js whose control socket is this runDir's. */
export function microIdentity(runDir: string): VmProcessIdentity {
  const files = microRunFiles(runDir);
  const main = path.join('vmm', 'main.js');
  return {
    pidFile: files.pidFile,
    matches: (argv) => argv.some((a) => a.endsWith(main)) && argv.includes(files.apiSocket),
  };
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

/**
 * How long a start may take before the engine gives up on hangar-vmm: HANGAR_VMM_START_TIMEOUT_S,
 * else 120 s. Generous on purpose: the wait ends at once when the process exits, and a slow host
 * is no fault. hangar-vmm is a Node process that loads its modules and, at InstanceStart, the
 * guest's kernel and initrd and one worker thread per vCPU: a fraction of a second on a quiet
 * host, but about a minute in the KVM lab (Node under nested TCG; docs/benchmarks.md), where a
 * 10 s limit failed every Debian launch through the daemon.
 */
export function microStartTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.HANGAR_VMM_START_TIMEOUT_S;
  if (raw === undefined || raw === '') return 120_000;
  const s = Number(raw);
  if (!Number.isFinite(s) || s <= 0 || s > 3600) throw new HangarError('INVALID_ARGUMENT', `HANGAR_VMM_START_TIMEOUT_S must be seconds between 0 and 3600, got ${JSON.stringify(raw)}`);
  return Math.round(s * 1000);
}

export class MicroVmHandle extends BaseVmHandle {
  readonly engine = 'micro' as const;
  private readonly client: VmmClient;

  constructor(pid: number, private readonly files: MicroRunFiles, identity: VmProcessIdentity, log: Logger, child: ChildProcess | null, sandbox: VmSandbox | null = null) {
    super(pid, identity, log, child, sandbox);
    this.client = new VmmClient(files.apiSocket);
    this.watchChild();
    // Not unref'd: watching an adopted VM is work the daemon must stay alive for (detach() stops it).
    if (!child) this.watchPid(PID_POLL_MS);
  }

  protected childExited(code: number | null, signal: NodeJS.Signals | null): void {
    this.ended(code, signal);
  }

  protected processGone(): void {
    this.ended(null, null);
  }

  protected closeControl(): void {
    /* hangar-vmm's API is one request per connection: nothing stays open */
  }

  private ended(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.exitInfo) return;
    const exit = vmExitFor(code, signal, readExitRecord(this.files.exitFile), this.killRequested);
    this.log.info({ exit }, 'hangar-vmm ended');
    this.finish(exit);
  }

  /**
   * Writes a snapshot of this VM (hangar-vmm's PUT /snapshot/create): pauses it if it runs,
   * and resumes it afterwards unless `leavePaused`. The files must be where the hangar-vmm
   * process may write (a confined one: inside its runDir).
   */
  async snapshot(files: MicroSnapshotFiles, opts: { leavePaused?: boolean } = {}): Promise<void> {
    this.usable('snapshot');
    const wasRunning = (await this.queryState()) === 'running';
    if (wasRunning) await this.client.action('Pause');
    try {
      // Writing guest memory takes as long as the memory in use (docs/vmm.md): no 10 s client timeout.
      await new VmmClient(this.files.apiSocket, SNAPSHOT_TIMEOUT_MS).snapshotCreate({ snapshot_path: files.snapshotPath, mem_file_path: files.memFilePath });
      // A confined VMM wrote them as its own uid: the daemon takes them, so this VM cannot change
      // them any more and another VM's sandbox can be granted read access (sandboxFor) to restore them.
      if (process.getuid?.() === 0) for (const f of [files.snapshotPath, files.memFilePath]) fs.chownSync(f, 0, 0);
    } finally {
      if (wasRunning && !opts.leavePaused) await this.client.action('Resume');
    }
  }

  /** Disk I/O as hangar-vmm counts it (GET /metrics); no guest memory figure. */
  async deviceCounters(): Promise<DeviceCounters> {
    this.usable('deviceCounters');
    return microDeviceCounters(await this.client.get('/metrics'));
  }

  async pause(): Promise<void> { this.usable('pause'); await this.client.action('Pause'); }
  async resume(): Promise<void> { this.usable('resume'); await this.client.action('Resume'); }
  async requestShutdown(): Promise<void> { this.usable('requestShutdown'); await this.client.action('RequestShutdown'); }

  async queryState(): Promise<'running' | 'paused'> {
    this.usable('queryState');
    const vm = (await this.client.get('/vm')) as { state?: string };
    if (vm.state === 'Paused') return 'paused';
    if (vm.state === 'Running' || vm.state === 'Not started') return 'running';
    throw new HangarError('INVALID_STATE', `the VM is ${vm.state}`);
  }

  openConsole(): Promise<Duplex> {
    this.usable('openConsole');
    return new Promise((resolve, reject) => {
      const s = net.connect(this.files.consoleSocket, () => { s.off('error', reject); resolve(s); });
      s.once('error', (e) => reject(new HangarError('UNAVAILABLE', `console socket ${this.files.consoleSocket}: ${e.message}`)));
    });
  }
}

/** A hangar-vmm snapshot: its state file and its memory file. */
export interface MicroSnapshotFiles {
  snapshotPath: string;
  memFilePath: string;
}

/** A snapshot of a VM with all its memory in use is written at the host's disk speed. */
const SNAPSHOT_TIMEOUT_MS = 10 * 60_000;

export class MicroEngine implements Engine {
  readonly name = 'micro' as const;
  /** hangar-vmm's own default: serial console on ttyS0 and the i8042 settings its Ctrl-Alt-Del needs. */
  readonly defaultCmdline = DEFAULT_BOOT_ARGS;
  private readonly log: Logger;
  private readonly startTimeoutMs: number;
  private readonly main: string;
  private readonly kvm: () => Promise<KvmProbe>;

  constructor(opts: MicroEngineOptions = {}) {
    this.log = (opts.logger ?? createLogger('hangar')).child({ component: 'micro-engine' });
    this.startTimeoutMs = opts.startTimeoutMs ?? microStartTimeoutMs();
    this.main = opts.vmmMain ?? path.join(projectRoot(), 'dist', 'src', 'vmm', 'main.js');
    this.kvm = opts.kvm ?? ownProbe();
  }

  /** What kind of KVM this host has (the daemon's one probe): the micro engine needs one; Linux guests need fullSystem. */
  probe(): Promise<KvmProbe> {
    return this.kvm();
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
      defaultAccel: p.present ? 'kvm' : null,
      limits: MICRO_LIMITS,
      // Through the daemon: snapshots as files (src/host/snapshots/micro.ts), memory ones included.
      snapshots: true,
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

  async start(config: EngineVmConfig): Promise<MicroVmHandle> {
    // A start from a snapshot (the daemon's restore): a fresh hangar-vmm loads its files and runs on.
    const files = config.loadSnapshot?.files;
    if (files) return this.restore(config, files);
    return this.launch(config, (c) => this.configureAndBoot(c, config));
  }

  /**
   * Starts a fresh hangar-vmm for `config` (its runDir, sockets, sandbox) and loads the snapshot
   * into it instead of booting: the VM runs on where the snapshot was taken (or stays paused with
   * `paused`). The snapshot says what the machine is (vCPUs, memory, drives at their paths, TAP
   * names); `config` gives the process its place.
   */
  async restore(config: EngineVmConfig, files: MicroSnapshotFiles, opts: { paused?: boolean } = {}): Promise<MicroVmHandle> {
    return this.launch(config, (c) => new VmmClient(c.socketPath, SNAPSHOT_TIMEOUT_MS).snapshotLoad({
      snapshot_path: files.snapshotPath, mem_file_path: files.memFilePath, resume_vm: !opts.paused,
    }), [files.snapshotPath, files.memFilePath]);
  }

  /** Spawns hangar-vmm for `config` (confined when the sandbox is on, with `extraReadFiles` readable), then `init` configures it. */
  private async launch(config: EngineVmConfig, init: (c: VmmClient) => Promise<void>, extraReadFiles: string[] = []): Promise<MicroVmHandle> {
    if (config.accel !== 'kvm') throw new HangarError('UNSUPPORTED', 'the micro engine runs on KVM only (accel "kvm")');
    for (const d of config.disks) {
      if (d.format !== 'raw') throw new HangarError('UNSUPPORTED', `disk ${d.id}: the micro engine supports raw disks only, not ${d.format}`);
    }
    if (!fs.existsSync(this.main)) throw new HangarError('UNAVAILABLE', `${this.main} is missing (run the build)`);
    const files = microRunFiles(config.runDir);
    const log = this.log.child({ vm: config.name });
    fs.mkdirSync(config.runDir, { recursive: true });
    for (const p of [files.apiSocket, files.consoleSocket, files.exitFile, files.pidFile]) removeStale(p);

    const sandbox = sandboxFor('micro', config, extraReadFiles);
    // A confined hangar-vmm cannot open /dev/kvm: it inherits the daemon's descriptor as fd 3.
    // Nor /dev/net/tun: each NIC's TAP, opened here, follows (--tap-fd NAME=FD).
    const args = sandbox ? [...this.args(config, files), '--kvm-fd', '3'] : this.args(config, files);
    const firstTap = sandbox ? 4 : 3;
    config.nics.forEach((n, i) => args.push('--tap-fd', `${n.tap}=${firstTap + i}`));
    let kvm: number | null = null;
    const taps: number[] = [];
    let child: ChildProcess;
    try {
      if (sandbox) kvm = fs.openSync('/dev/kvm', fs.constants.O_RDWR);
      // virtio-net headers: hangar-vmm offers checksum offload and TSO on them (HANGAR_VIRTIO_NET_OFFLOAD=0: plain TAPs).
      for (const n of config.nics) taps.push(openTapFd(n.tap, process.env.HANGAR_VIRTIO_NET_OFFLOAD !== '0'));
      child = spawnVmProcess({ command: process.execPath, args, logFile: files.processLog, sandbox, inheritFds: [...(kvm !== null ? [kvm] : []), ...taps] });
    } catch (e) {
      sandbox?.cleanup();
      throw e;
    } finally {
      if (kvm !== null) fs.closeSync(kvm);
      for (const fd of taps) fs.closeSync(fd);
    }
    const pid = child.pid;
    if (pid === undefined) { sandbox?.cleanup(); throw new HangarError('ENGINE_FAILED', 'hangar-vmm could not be started'); }
    // Synchronously, in the same tick as the spawn: there is no moment where the process runs unnamed.
    try { fs.writeFileSync(files.pidFile, `${pid}\n`, { mode: 0o600 }); } catch (e) { log.warn({ err: String(e) }, 'could not write the pid file'); }
    const handle = new MicroVmHandle(pid, files, microIdentity(config.runDir), log, child, sandbox);
    try {
      await this.waitForApi(files, child);
      // The start's own limit, not the client's 10 s default: InstanceStart loads the kernel and starts the vCPU threads.
      await init(new VmmClient(files.apiSocket, this.startTimeoutMs));
    } catch (e) {
      await handle.kill().catch(() => {});
      const tail = (() => { try { return fs.readFileSync(files.processLog, 'utf8').slice(-1000); } catch { return ''; } })();
      const he = toHangarError(e, 'ENGINE_FAILED');
      throw new HangarError(he.code === 'UNAVAILABLE' || he.code === 'TIMEOUT' ? 'ENGINE_FAILED' : he.code, `micro engine could not start ${config.name}: ${he.message}`, { log: tail });
    }
    log.info({ pid }, 'hangar-vmm started');
    return handle;
  }

  /** Tells a fresh hangar-vmm what to run (machine, boot source, drives, NICs) and starts the guest. */
  private async configureAndBoot(c: VmmClient, config: EngineVmConfig): Promise<void> {
    // Exact: the daemon admitted only sizes that are whole 2 MiB units (MICRO_LIMITS).
    await c.putMachineConfig({ vcpu_count: config.cpus, mem_size_mib: config.memoryBytes / 2 ** 20 });
    // hangar-vmm boots kernels only (its capabilities say so; the daemon refuses other boot modes at create).
    if (!config.boot || config.firmware || config.cdrom !== undefined || config.vnc) {
      throw new HangarError('UNSUPPORTED', 'the micro engine boots a kernel directly: no firmware, CD-ROM or display');
    }
    await c.putBootSource({
      kernel_image_path: config.boot.kernel,
      ...(config.boot.initrd ? { initrd_path: config.boot.initrd } : {}),
      ...(config.boot.cmdline !== undefined ? { boot_args: config.boot.cmdline } : {}),
    });
    for (const d of config.disks) {
      await c.putDrive({ drive_id: d.id, path_on_host: d.path, is_root_device: false, is_read_only: d.readOnly ?? false, ...(d.serial ? { serial: d.serial } : {}) });
    }
    for (const n of config.nics) await c.putNetworkInterface({ iface_id: n.id, host_dev_name: n.tap, ...(n.mac ? { guest_mac: n.mac } : {}) });
    await c.action('InstanceStart');
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
    const pid = findOurProcess(microIdentity(config.runDir), hint);
    if (pid === null) cleanupStaleSandbox(config.runDir);
    return pid;
  }

  async killProcess(config: EngineVmConfig, pid: number): Promise<boolean> {
    const killed = await killOurProcess(pid, microIdentity(config.runDir));
    this.log.warn({ vm: config.name, pid, gone: killed }, 'killed a stray hangar-vmm');
    if (killed) cleanupStaleSandbox(config.runDir);
    return killed;
  }

  async adopt(config: EngineVmConfig, pid: number): Promise<MicroVmHandle | null> {
    const files = microRunFiles(config.runDir);
    const identity = microIdentity(config.runDir);
    // The same check findProcess makes: still our hangar-vmm for this VM, not a recycled pid.
    if (!isOurs(pid, identity)) return null;
    try {
      await new VmmClient(files.apiSocket, 2000).get('/');
    } catch (e) {
      this.log.warn({ vm: config.name, pid, err: String(e) }, 'hangar-vmm alive but its control socket does not answer');
      return null;
    }
    return new MicroVmHandle(pid, files, identity, this.log.child({ vm: config.name }), null, loadVmSandbox(config.runDir));
  }
}

export function createMicroEngine(opts: MicroEngineOptions = {}): MicroEngine {
  return new MicroEngine(opts);
}
