/**
 * The QEMU engine: one qemu-system-x86_64 process per VM, driven over QMP.
 *
 * QEMU is spawned detached (its own session, stdio to a file in runDir), so
 * it outlives the daemon; a restarted daemon finds it again
 * with `adopt()`. Exit is detected from the QMP socket closing plus, for a
 * process we did not spawn ourselves, polling /proc/<pid>.
 */
import fs from 'node:fs';
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { HangarError, toHangarError } from '../../common/errors.js';
import { createLogger, type Logger } from '../../common/log.js';
import { startConsoleLogWriter, type ConsoleLogPipe } from '../console-log/writer.js';
import { DEFAULT_CONSOLE_LOG_LIMIT } from '../console-log/limits.js';
import type { Accel, Engine, EngineCapabilities, EngineVmConfig, ExitReason, VmExit, VmHandle, VmStats } from '../engine.js';
import { buildQemuArgs, optValue, runFiles, type QemuMachine, type QemuRunFiles } from './cmdline.js';
import { connectQmp, type QmpClient, type QmpEvent } from './qmp.js';
import { processAlive, processArgs, processCpuSeconds, processRssBytes, findVerifiedProcess, killVerified } from './procfs.js';
import { qemuBinary, qemuVersion } from './version.js';

export interface QemuEngineOptions {
  machine?: QemuMachine;
  logger?: Logger;
  /** How long start() waits for QMP to answer (TCG start-up on a busy host can be slow). */
  startTimeoutMs?: number;
}

/** How often we look at /proc/<pid> for a process we are not the parent of. */
const PID_POLL_MS = 200;
/** Safety net: even with QMP open, look now and then whether the process is still there. */
const SLOW_POLL_MS = 2000;
/** Longest wait, after the process is gone, for QMP to hand over its last events. */
const QMP_DRAIN_MS = 1000;

/** What ended a child we spawned, as Node saw it. */
interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Maps QEMU's SHUTDOWN reason to ours. See docs/engines.md. */
export function exitReasonFor(shutdownReason: string | null, killRequested: boolean, signal: string | null): { reason: ExitReason; detail: string } {
  if (killRequested) return { reason: 'killed', detail: 'killed on request' };
  switch (shutdownReason) {
    case 'guest-shutdown':
      return { reason: 'poweroff', detail: 'the guest powered off' };
    case 'guest-reset':
      return { reason: 'reboot', detail: 'the guest asked for a reboot' };
    case 'host-qmp-quit':
      return { reason: 'stopped', detail: 'QEMU was told to quit over QMP' };
    case 'host-qmp-system-reset':
      return { reason: 'reboot', detail: 'a reset was requested over QMP' };
    case 'host-signal':
      return { reason: 'killed', detail: 'QEMU was ended by a signal (SIGTERM/SIGINT/SIGHUP)' };
    case 'guest-panic':
      return { reason: 'crashed', detail: 'the guest kernel panicked' };
    case null:
      return { reason: 'crashed', detail: signal ? `QEMU died from ${signal} without a shutdown` : 'QEMU ended without a shutdown event' };
    default:
      return { reason: 'crashed', detail: `QEMU shut down: ${shutdownReason}` };
  }
}

class QemuVmHandle implements VmHandle {
  readonly engine = 'qemu' as const;
  private shutdownReason: string | null = null;
  private killRequested = false;
  private exitInfo: VmExit | null = null;
  private readonly listeners: Array<(e: VmExit) => void> = [];
  private readonly exited: Promise<VmExit>;
  private resolveExited!: (e: VmExit) => void;
  private detached = false;
  private pidTimer: NodeJS.Timeout | null = null;
  private childExit: ChildExit | null = null;
  private deadSince: number | null = null;

  constructor(
    readonly pid: number,
    private readonly qmp: QmpClient,
    private readonly files: QemuRunFiles,
    private readonly log: Logger,
    /** Present when we spawned the process ourselves and Node will tell us its exit status. */
    private readonly child: ChildProcess | null,
  ) {
    this.exited = new Promise((r) => (this.resolveExited = r));
    qmp.on('event', (ev: QmpEvent) => this.onEvent(ev));
    qmp.on('close', () => this.onQmpClosed());
    if (child) {
      if (child.exitCode !== null || child.signalCode !== null) this.onChildExit({ code: child.exitCode, signal: child.signalCode });
      else child.once('exit', (code, signal) => this.onChildExit({ code, signal }));
    }
    this.watchPid(SLOW_POLL_MS);
  }

  private onEvent(ev: QmpEvent): void {
    this.log.debug({ event: ev.event, data: ev.data }, 'qmp event');
    if (ev.event === 'SHUTDOWN') {
      const reason = ev.data?.reason;
      this.shutdownReason = typeof reason === 'string' ? reason : 'unknown';
    }
  }

  private onQmpClosed(): void {
    if (this.detached || this.exitInfo) return;
    // QMP closes when QEMU exits; confirm with the pid (a child reports through 'exit').
    if (this.child && this.childExit) this.finish();
    else if (!this.child) this.watchPid(PID_POLL_MS);
  }

  private onChildExit(e: ChildExit): void {
    this.childExit = e;
    // The SHUTDOWN event may still sit unread in the QMP socket: Node can report the
    // exit first. Finish once QMP has drained to its close (it will: the peer is gone).
    if (this.qmp.closed) this.finish();
    else setTimeout(() => this.finish(), QMP_DRAIN_MS);
  }

  private watchPid(interval: number): void {
    if (this.pidTimer) clearInterval(this.pidTimer);
    this.pidTimer = setInterval(() => {
      if (this.detached || this.exitInfo) return this.stopWatching();
      // A child of ours stays a zombie until Node reaps it and emits 'exit', which carries the status.
      if (this.child || processAlive(this.pid)) return;
      // Gone: let QMP deliver what QEMU said last (SHUTDOWN) before reporting.
      this.deadSince ??= Date.now();
      if (this.qmp.closed || Date.now() - this.deadSince >= QMP_DRAIN_MS) this.finish();
    }, interval);
    // The slow safety-net poll must not keep a process alive by itself; the fast
    // one runs only while an exit is due, and a caller is waiting for it.
    if (interval === SLOW_POLL_MS) this.pidTimer.unref();
  }

  private stopWatching(): void {
    if (this.pidTimer) clearInterval(this.pidTimer);
    this.pidTimer = null;
  }

  private finish(): void {
    if (this.exitInfo || this.detached) return;
    this.stopWatching();
    const signal = this.childExit?.signal ?? null;
    const { reason, detail } = exitReasonFor(this.shutdownReason, this.killRequested, signal);
    const exit: VmExit = { reason, detail, exitCode: this.childExit?.code ?? null, signal };
    this.exitInfo = exit;
    this.qmp.close();
    this.log.info({ pid: this.pid, ...exit }, 'qemu exited');
    this.resolveExited(exit);
    for (const l of this.listeners.splice(0)) {
      try {
        l(exit);
      } catch (e) {
        this.log.error({ err: e }, 'exit listener threw');
      }
    }
  }

  private usable(what: string): void {
    if (this.exitInfo) throw new HangarError('INVALID_STATE', `${what}: the VM process has exited (${this.exitInfo.reason})`);
    if (this.detached) throw new HangarError('INVALID_STATE', `${what}: the handle was detached`);
  }

  private async command<T>(what: string, cmd: string, args?: Record<string, unknown>): Promise<T> {
    this.usable(what);
    return this.qmp.execute<T>(cmd, args);
  }

  async pause(): Promise<void> {
    await this.command('pause', 'stop');
  }

  async resume(): Promise<void> {
    await this.command('resume', 'cont');
  }

  async requestShutdown(): Promise<void> {
    // ACPI power button; the tiny image's acpid turns it into poweroff.
    await this.command('requestShutdown', 'system_powerdown');
  }

  async kill(): Promise<void> {
    if (this.exitInfo) return;
    this.usable('kill');
    this.killRequested = true;
    // A process we did not spawn could have ended unnoticed and its pid been reused: check it is still ours.
    if (!this.child && !processArgs(this.pid)?.some((a) => a.includes(this.files.qmpSocket))) {
      this.watchPid(PID_POLL_MS);
      await this.exited;
      return;
    }
    try {
      process.kill(this.pid, 'SIGKILL');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw toHangarError(e, 'ENGINE_FAILED');
    }
    if (!this.child) this.watchPid(PID_POLL_MS);
    await this.exited;
  }

  async queryState(): Promise<'running' | 'paused'> {
    const st = await this.command<{ running?: boolean; status?: string }>('queryState', 'query-status');
    return st?.running ? 'running' : 'paused';
  }

  async stats(): Promise<VmStats> {
    const state = await this.queryState();
    return { pid: this.pid, rssBytes: processRssBytes(this.pid), cpuSeconds: processCpuSeconds(this.pid), state };
  }

  /**
   * Connects to the serial console socket. QEMU serves one client at a time:
   * a second connection is accepted by the kernel but sees no data until the
   * first one closes. The daemon keeps one and fans it out.
   */
  async openConsole(): Promise<Duplex> {
    this.usable('openConsole');
    return new Promise<Duplex>((resolve, reject) => {
      const s = net.connect(this.files.consoleSocket);
      s.once('connect', () => {
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (err) => reject(new HangarError('UNAVAILABLE', `console socket: ${err.message}`, { path: this.files.consoleSocket })));
    });
  }

  onExit(listener: (exit: VmExit) => void): void {
    if (this.exitInfo) {
      const e = this.exitInfo;
      queueMicrotask(() => listener(e));
    } else {
      this.listeners.push(listener);
    }
  }

  detach(): void {
    if (this.detached) return;
    this.detached = true;
    this.stopWatching();
    this.qmp.close();
    this.child?.removeAllListeners('exit');
    // From now on the VM lives on its own: it must not keep this process running.
    this.child?.unref();
  }
}

function tail(file: string, bytes = 2000): string {
  try {
    const buf = fs.readFileSync(file);
    return buf.subarray(Math.max(0, buf.length - bytes)).toString('utf8').trim();
  } catch {
    return '';
  }
}

function removeStale(p: string): void {
  try {
    fs.unlinkSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw toHangarError(e);
  }
}

function kvmUsable(): boolean {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** True while pid is alive and its arguments name this runDir's QMP socket (so it is this VM's QEMU, not a recycled pid). */
function isQemuOf(pid: number, files: QemuRunFiles): boolean {
  if (!processAlive(pid)) return false;
  const argv = processArgs(pid);
  return argv !== null && argv.some((a) => a.includes(optValue(files.qmpSocket)));
}

export class QemuEngine implements Engine {
  readonly name = 'qemu' as const;
  private readonly machine: QemuMachine;
  private readonly log: Logger;
  private readonly startTimeoutMs: number;

  constructor(opts: QemuEngineOptions = {}) {
    this.machine = opts.machine ?? 'q35';
    this.log = (opts.logger ?? createLogger('hangar')).child({ component: 'qemu-engine' });
    this.startTimeoutMs = opts.startTimeoutMs ?? 30_000;
  }

  async capabilities(): Promise<EngineCapabilities> {
    const version = await qemuVersion();
    const accelerators: Accel[] = kvmUsable() ? ['kvm', 'tcg'] : ['tcg'];
    const caps: EngineCapabilities = {
      name: 'qemu',
      available: version !== null,
      bootModes: ['kernel'],
      devices: ['serial', 'virtio-blk', 'virtio-net'],
      accelerators,
      snapshots: false,
      migration: false,
    };
    if (version !== null) caps.version = version;
    else caps.reason = `${qemuBinary()} is not installed or does not run`;
    return caps;
  }

  async start(config: EngineVmConfig): Promise<VmHandle> {
    const args = buildQemuArgs(config, { machine: this.machine });
    const files = runFiles(config.runDir);
    const log = this.log.child({ vm: config.name });
    fs.mkdirSync(config.runDir, { recursive: true });
    // Sockets left by an earlier run of this VM would make QEMU's bind fail.
    removeStale(files.qmpSocket);
    removeStale(files.consoleSocket);
    removeStale(files.pidFile);

    const out = fs.openSync(files.processLog, 'a');
    let child: ChildProcess;
    let conlog: ConsoleLogPipe | null = null;
    try {
      conlog = startConsoleLogWriter(config.consoleLog, config.consoleLogLimit ?? DEFAULT_CONSOLE_LOG_LIMIT, config.runDir, out);
      // detached: own session and process group, so signals to the daemon's group
      // (Ctrl-C, systemd stopping the daemon) do not reach the VM.
      child = spawn(qemuBinary(), args, { detached: true, stdio: ['ignore', out, out, conlog.writeFd] });
    } finally {
      // QEMU holds the only write end from here on: the writer ends when QEMU does.
      conlog?.closeWriteEnd();
      fs.closeSync(out);
    }
    // The child stays referenced while a handle watches it (so its exit is
    // always delivered); detach() unrefs it. It outlives us either way.
    let spawnError: Error | null = null;
    child.once('error', (e) => (spawnError = e));
    const running = () => spawnError === null && child.exitCode === null && child.signalCode === null;
    log.info({ pid: child.pid, argv: args }, 'starting qemu');

    let qmp: QmpClient | null = null;
    try {
      qmp = await connectQmp(files.qmpSocket, { connectTimeoutMs: this.startTimeoutMs, keepTrying: running });
      const st = await qmp.execute<{ running?: boolean; status?: string }>('query-status');
      if (!st?.running) throw new HangarError('ENGINE_FAILED', `QEMU started but the VM is ${st?.status ?? 'not running'}`);
      if (child.pid === undefined) throw new HangarError('ENGINE_FAILED', 'QEMU has no pid');
    } catch (e) {
      qmp?.close();
      if (child.pid !== undefined && running()) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
      // Give QEMU's last words a moment to reach the log.
      await new Promise((r) => setTimeout(r, 50));
      const why = spawnError ? (spawnError as Error).message : tail(files.processLog);
      throw new HangarError('ENGINE_FAILED', `QEMU did not start: ${toHangarError(e).message}${why ? `: ${why}` : ''}`, { log: files.processLog });
    }
    log.info({ pid: child.pid }, 'qemu running');
    return new QemuVmHandle(child.pid, qmp, files, log, child);
  }

  /**
   * This VM's QEMU: `hint` if it still is, else the pid in QEMU's -pidfile
   * (QEMU writes it itself early in its start-up, so it exists even when the
   * daemon died before learning the pid). Either counts only while the
   * process is alive and its arguments name this VM's QMP socket.
   */
  async findProcess(config: EngineVmConfig, hint?: number): Promise<number | null> {
    const files = runFiles(config.runDir);
    return findVerifiedProcess(files.pidFile, (pid) => isQemuOf(pid, files), hint);
  }

  async killProcess(config: EngineVmConfig, pid: number): Promise<boolean> {
    const files = runFiles(config.runDir);
    const killed = await killVerified(pid, () => isQemuOf(pid, files));
    this.log.warn({ vm: config.name, pid, gone: killed }, 'killed a stray qemu');
    return killed;
  }

  async adopt(config: EngineVmConfig, pid: number): Promise<VmHandle | null> {
    if (!Number.isSafeInteger(pid) || pid <= 0) throw new HangarError('INVALID_ARGUMENT', `pid must be a positive integer, got ${pid}`);
    const files = runFiles(config.runDir);
    const log = this.log.child({ vm: config.name });
    // The pid may have been reused by an unrelated process: ours names its runDir in its arguments.
    const argv = processArgs(pid);
    if (!processAlive(pid) || argv === null || !argv.some((a) => a.includes(files.qmpSocket))) {
      log.info({ pid }, 'nothing to adopt: process gone or not ours');
      return null;
    }
    try {
      const qmp = await connectQmp(files.qmpSocket, { connectTimeoutMs: 5000, keepTrying: () => processAlive(pid) });
      log.info({ pid }, 'adopted qemu');
      return new QemuVmHandle(pid, qmp, files, log, null);
    } catch (e) {
      if (!processAlive(pid)) return null;
      throw new HangarError('ENGINE_FAILED', `QEMU pid ${pid} is running but its QMP socket does not answer: ${toHangarError(e).message}`);
    }
  }
}
