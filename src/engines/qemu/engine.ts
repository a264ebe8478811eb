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
import type { ChildProcess } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { HangarError, toHangarError } from '../../common/errors.js';
import { createLogger, type Logger } from '../../common/log.js';
import type { KvmProbe } from '../../kvm/probe.js';
import { ownProbe } from '../base/kvm.js';
import type { Accel, DeviceCounters, DiskAttachment, Engine, HostForward, NicAttachment, EngineCapabilities, EngineVmConfig, ExitReason, GuestExecRequest, GuestExecResult, VmExit, VmHandle } from '../engine.js';
import { BaseVmHandle, PID_POLL_MS } from '../base/handle.js';
import { findOurProcess, isOurs, killOurProcess, type VmProcessIdentity } from '../base/identity.js';
import { processAlive } from '../base/procfs.js';
import { spawnVmProcess } from '../base/spawn.js';
import { openTapFd } from '../base/tap.js';
import { buildQemuArgs, qemuIdentity, runFiles, CDROM_FD, FIRST_TAP_FD, type QemuMachine, type QemuRunFiles } from './cmdline.js';
import { ensureVarsFile, findOvmf, requireOvmf, vmVarsFile } from './firmware.js';
import { openCdrom } from './cdrom.js';
import { screendump } from './screendump.js';
import { QEMU_LIMITS } from './limits.js';
import { startConsoleLogWriter, type ConsoleLogPipe } from '../console-log/writer.js';
import { DEFAULT_CONSOLE_LOG_LIMIT } from '../../common/console-log/limits.js';
import { diskNames, probeDiskIo, type DiskIoMode } from './disks.js';
import { hotplugDisk, hotunplugDisk, resizeDiskOnline } from './hotplug.js';
import { ejectMedium, insertMedium, queryMedium } from './media.js';
import { addHostForward, hotplugNic, hotunplugNic, removeHostForward } from './nic-hotplug.js';
import { connectQmp, type QmpClient, type QmpEvent } from './qmp.js';
import { QemuDeviceCounters } from './device-counters.js';
import { GuestAgent } from './guest-agent.js';
import { qemuSnapshotControl } from './snapshots.js';
import { startJobId, type LiveSnapshotControl } from '../snapshot-control.js';
import { qemuBinary, qemuVersion } from './version.js';
import { cleanupStaleSandbox, loadVmSandbox, sandboxFor, type VmSandbox } from '../sandbox/index.js';

export interface QemuEngineOptions {
  machine?: QemuMachine;
  logger?: Logger;
  /** How long start() waits for QMP to answer (TCG start-up on a busy host can be slow). */
  startTimeoutMs?: number;
  /** This host's KVM, probed once per daemon (the engine registry shares one probe between engines); an engine used alone probes once itself. */
  kvm?: () => Promise<KvmProbe>;
}

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

class QemuVmHandle extends BaseVmHandle {
  readonly engine = 'qemu' as const;
  private shutdownReason: string | null = null;
  private childExit: ChildExit | null = null;
  private deadSince: number | null = null;
  readonly snapshots: LiveSnapshotControl;

  /** The guest agent client, when the VM has a guest agent channel. */
  private readonly agent: GuestAgent | null;

  constructor(pid: number, private readonly qmp: QmpClient, private readonly files: QemuRunFiles, identity: VmProcessIdentity, log: Logger, child: ChildProcess | null, sandbox: VmSandbox | null = null, agentSocket?: string, private readonly hasDisplay = false) {
    super(pid, identity, log, child, sandbox);
    this.agent = agentSocket ? new GuestAgent({ socket: agentSocket }) : null;
    this.snapshots = qemuSnapshotControl({ execute: (cmd, args, opts) => this.command('snapshot', cmd, args, opts) });
    qmp.on('event', (ev: QmpEvent) => this.onEvent(ev));
    qmp.on('close', () => this.onQmpClosed());
    this.watchChild();
    // Safety net: even with QMP open, look now and then whether the process is still there.
    this.watchPid(SLOW_POLL_MS, true);
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
    if (this.child && this.childExit) this.done();
    else if (!this.child) this.watchPid(PID_POLL_MS);
  }

  protected childExited(code: number | null, signal: NodeJS.Signals | null): void {
    this.childExit = { code, signal };
    // The SHUTDOWN event may still sit unread in the QMP socket: Node can report the
    // exit first. Finish once QMP has drained to its close (it will: the peer is gone).
    if (this.qmp.closed) this.done();
    else setTimeout(() => this.done(), QMP_DRAIN_MS);
  }

  protected processGone(): void {
    // Gone: let QMP deliver what QEMU said last (SHUTDOWN) before reporting.
    this.deadSince ??= Date.now();
    if (this.qmp.closed || Date.now() - this.deadSince >= QMP_DRAIN_MS) this.done();
  }

  protected closeControl(): void {
    this.qmp.close();
    this.agent?.close();
  }

  private done(): void {
    if (this.exitInfo || this.detached) return;
    const signal = this.childExit?.signal ?? null;
    const { reason, detail } = exitReasonFor(this.shutdownReason, this.killRequested, signal);
    const exit: VmExit = { reason, detail, exitCode: this.childExit?.code ?? null, signal };
    this.log.info({ pid: this.pid, ...exit }, 'qemu exited');
    this.finish(exit);
  }

  private async command<T>(what: string, cmd: string, args?: Record<string, unknown>, opts?: { timeoutMs?: number }): Promise<T> {
    this.usable(what);
    return this.qmp.execute<T>(cmd, args, opts);
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

  async exec(req: GuestExecRequest): Promise<GuestExecResult> {
    this.usable('exec');
    if (!this.agent) throw new HangarError('AGENT_UNAVAILABLE', 'this VM was started without a guest agent channel');
    return this.agent.exec(req);
  }

  private counters: QemuDeviceCounters | null = null;

  /** Disk I/O and guest memory for the daemon's sampler (src/host/monitor). */
  async deviceCounters(): Promise<DeviceCounters> {
    this.usable('deviceCounters');
    this.counters ??= new QemuDeviceCounters((cmd, args, opts) => this.qmp.execute(cmd, args, opts));
    return this.counters.read();
  }

  async queryState(): Promise<'running' | 'paused'> {
    const st = await this.command<{ running?: boolean; status?: string }>('queryState', 'query-status');
    return st?.running ? 'running' : 'paused';
  }

  async screendump(file: string, format: 'png' | 'ppm'): Promise<void> {
    this.usable('screendump');
    if (!this.hasDisplay) throw new HangarError('INVALID_STATE', 'this VM has no display (it boots its kernel directly and is headless)');
    await screendump(this.qmp, file, format);
  }

  async changeMedium(file: string | null): Promise<void> {
    this.usable('changeMedium');
    if (file === null) return ejectMedium(this.qmp);
    // The confined QEMU opens the new ISO itself: let it read the file first.
    this.sandbox?.grant([file], []);
    await insertMedium(this.qmp, file);
  }

  async cdromMedium(): Promise<{ inserted: boolean; file: string | null; trayOpen: boolean } | null> {
    this.usable('cdromMedium');
    return queryMedium(this.qmp);
  }

  async attachDisk(disk: DiskAttachment): Promise<void> {
    this.usable('attachDisk');
    // The confined QEMU opens the file itself: lend it (and let it read the backing chain) first.
    this.sandbox?.grant([...(disk.readOnly ? [disk.path] : []), ...(disk.backingFiles ?? [])], disk.readOnly ? [] : [disk.path]);
    try {
      await hotplugDisk(this.qmp, disk, probeDiskIo(disk.path));
    } catch (e) {
      this.sandbox?.revoke([disk.path]);
      throw e;
    }
  }

  async detachDisk(id: string): Promise<void> {
    this.usable('detachDisk');
    const file = await this.diskFile(id);
    await hotunplugDisk(this.qmp, id);
    if (file !== null) this.sandbox?.revoke([file]);
  }

  async attachNic(nic: NicAttachment): Promise<void> {
    this.usable('attachNic');
    if (nic.user) return hotplugNic(this.qmp, nic, null);
    // Opened here (the daemon may; the confined QEMU may not), lent to QEMU, and our copy closed.
    const fd = openTapFd(nic.tap, true);
    try {
      await hotplugNic(this.qmp, nic, fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  async detachNic(id: string): Promise<void> {
    this.usable('detachNic');
    await hotunplugNic(this.qmp, id);
  }

  async addHostForward(nicId: string, fwd: HostForward): Promise<void> {
    this.usable('addHostForward');
    await addHostForward(this.qmp, nicId, fwd);
  }

  async removeHostForward(nicId: string, fwd: HostForward): Promise<void> {
    this.usable('removeHostForward');
    await removeHostForward(this.qmp, nicId, fwd);
  }

  async resizeDisk(id: string, sizeBytes: number): Promise<void> {
    this.usable('resizeDisk');
    await resizeDiskOnline(this.qmp, id, sizeBytes);
  }

  /** The host file behind disk `id` as QEMU has it open, or null when it has no such disk. */
  private async diskFile(id: string): Promise<string | null> {
    const nodes = await this.qmp.execute<Array<{ 'node-name'?: string; file?: string }>>('query-named-block-nodes', { flat: true });
    return nodes.find((n) => n['node-name'] === diskNames(id).file)?.file ?? null;
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

export class QemuEngine implements Engine {
  readonly name = 'qemu' as const;
  private readonly machine: QemuMachine;
  private readonly log: Logger;
  private readonly startTimeoutMs: number;
  private readonly kvm: () => Promise<KvmProbe>;
  private version?: Promise<string | null>;

  constructor(opts: QemuEngineOptions = {}) {
    this.machine = opts.machine ?? 'q35';
    this.log = (opts.logger ?? createLogger('hangar')).child({ component: 'qemu-engine' });
    this.startTimeoutMs = opts.startTimeoutMs ?? 30_000;
    this.kvm = opts.kvm ?? ownProbe();
  }

  async capabilities(): Promise<EngineCapabilities> {
    // The binary does not change under a running daemon: asked once.
    this.version ??= qemuVersion().catch(() => null);
    const [version, kvm] = await Promise.all([this.version, this.kvm()]);
    const accelerators: Accel[] = kvm.present ? ['kvm', 'tcg'] : ['tcg'];
    const caps: EngineCapabilities = {
      name: 'qemu',
      available: version !== null,
      // UEFI only where OVMF is installed; SeaBIOS comes with QEMU.
      bootModes: findOvmf() ? ['kernel', 'bios', 'uefi'] : ['kernel', 'bios'],
      devices: ['serial', 'virtio-blk', 'virtio-net', 'guest-agent', 'cdrom', 'vga', 'vnc'],
      accelerators,
      // KVM only where it runs guest kernel mode natively; elsewhere TCG is faster and always works.
      defaultAccel: kvm.fullSystem ? 'kvm' : 'tcg',
      limits: QEMU_LIMITS,
      snapshots: true,
      migration: false,
    };
    if (version !== null) caps.version = version;
    else caps.reason = `${qemuBinary()} is not installed or does not run`;
    return caps;
  }

  async start(config: EngineVmConfig): Promise<VmHandle> {
    // A UEFI VM's variable store is named explicitly from here on (the sandbox lends it to the VM's uid).
    if (config.firmware?.kind === 'uefi') config = { ...config, firmware: { ...config.firmware, varsFile: config.firmware.varsFile ?? vmVarsFile(config.runDir) } };
    const ovmf = config.firmware?.kind === 'uefi' ? requireOvmf() : null;
    // O_DIRECT where each disk's filesystem takes it (disks.ts explains the choice).
    const diskIo: Record<string, DiskIoMode> = {};
    for (const d of config.disks) diskIo[d.id] = probeDiskIo(d.path);
    // A confined QEMU cannot open /dev/net/tun: it inherits each TAP, opened here, after the console log's
    // descriptor and the ISO's (when there is one).
    const firstTapFd = FIRST_TAP_FD + (config.cdrom !== undefined ? 1 : 0);
    // User-mode NICs have no TAP (their slot is -1, unused).
    let nextTap = firstTapFd;
    const tapFds = config.nics.map((n) => (n.user ? -1 : nextTap++));
    const args = buildQemuArgs(config, { machine: this.machine, diskIo, ...(ovmf ? { ovmfCode: ovmf.code } : {}), ...(tapFds.length ? { tapFds } : {}) });
    const files = runFiles(config.runDir);
    const log = this.log.child({ vm: config.name });
    fs.mkdirSync(config.runDir, { recursive: true });
    // Sockets left by an earlier run of this VM would make QEMU's bind fail.
    removeStale(files.qmpSocket);
    removeStale(files.consoleSocket);
    removeStale(files.pidFile);
    if (config.guestAgent) removeStale(config.guestAgent.socket);
    if (config.vnc) removeStale(config.vnc.socket);
    if (ovmf && config.firmware?.varsFile) ensureVarsFile(config.firmware.varsFile, ovmf);
    // Opened here, as the daemon: QEMU reads the ISO through this descriptor (fd CDROM_FD).
    const cdromFd = config.cdrom !== undefined ? openCdrom(config.cdrom) : null;

    let sandbox: VmSandbox | null = null;
    let conlog: ConsoleLogPipe | null = null;
    let child: ChildProcess;
    const writerErr = fs.openSync(files.processLog, 'a', 0o600);
    const taps: number[] = [];
    try {
      sandbox = sandboxFor('qemu', config);
      for (const n of config.nics) if (!n.user) taps.push(openTapFd(n.tap, true));
      conlog = startConsoleLogWriter(config.consoleLog, config.consoleLogLimit ?? DEFAULT_CONSOLE_LOG_LIMIT, config.runDir, writerErr);
      // QEMU inherits the pipe's write end as fd 3 (-add-fd): its serial log goes to the writer; the ISO comes next, as fd 4, then the TAPs.
      const inheritFds = cdromFd !== null ? [conlog.writeFd, cdromFd, ...taps] : [conlog.writeFd, ...taps];
      if (cdromFd !== null && inheritFds.indexOf(cdromFd) + 3 !== CDROM_FD) throw new HangarError('INTERNAL', 'the CD-ROM descriptor is not where the argv says');
      child = spawnVmProcess({ command: qemuBinary(), args, logFile: files.processLog, sandbox, inheritFds });
    } catch (e) {
      sandbox?.cleanup();
      throw e;
    } finally {
      // QEMU holds the only write end from here on: the writer ends when QEMU does.
      conlog?.closeWriteEnd();
      fs.closeSync(writerErr);
      if (cdromFd !== null) fs.closeSync(cdromFd);
      for (const fd of taps) fs.closeSync(fd);
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
      if (config.loadSnapshot) {
        const { name, ...target } = config.loadSnapshot;
        await qemuSnapshotControl(qmp).load(name, target, startJobId(name));
        await qmp.execute('cont');
      }
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
      sandbox?.cleanup();
      const why = spawnError ? (spawnError as Error).message : tail(files.processLog);
      throw new HangarError('ENGINE_FAILED', `QEMU did not start: ${toHangarError(e).message}${why ? `: ${why}` : ''}`, { log: files.processLog });
    }
    log.info({ pid: child.pid }, 'qemu running');
    return new QemuVmHandle(child.pid, qmp, files, qemuIdentity(config.runDir), log, child, sandbox, config.guestAgent?.socket, config.vnc !== undefined);
  }

  /**
   * This VM's QEMU: `hint` if it still is, else the pid in QEMU's -pidfile
   * (QEMU writes it itself early in its start-up, so it exists even when the
   * daemon died before learning the pid). Either counts only while the
   * process is alive and its arguments hold this VM's QMP socket argument.
   */
  async findProcess(config: EngineVmConfig, hint?: number): Promise<number | null> {
    const pid = findOurProcess(qemuIdentity(config.runDir), hint);
    if (pid === null) cleanupStaleSandbox(config.runDir);
    return pid;
  }

  async killProcess(config: EngineVmConfig, pid: number): Promise<boolean> {
    const killed = await killOurProcess(pid, qemuIdentity(config.runDir));
    this.log.warn({ vm: config.name, pid, gone: killed }, 'killed a stray qemu');
    if (killed) cleanupStaleSandbox(config.runDir);
    return killed;
  }

  async adopt(config: EngineVmConfig, pid: number): Promise<VmHandle | null> {
    if (!Number.isSafeInteger(pid) || pid <= 0) throw new HangarError('INVALID_ARGUMENT', `pid must be a positive integer, got ${pid}`);
    const files = runFiles(config.runDir);
    const identity = qemuIdentity(config.runDir);
    const log = this.log.child({ vm: config.name });
    // The pid may have been reused by an unrelated process: the same check findProcess makes.
    if (!isOurs(pid, identity)) {
      log.info({ pid }, 'nothing to adopt: process gone or not ours');
      return null;
    }
    try {
      const qmp = await connectQmp(files.qmpSocket, { connectTimeoutMs: 5000, keepTrying: () => processAlive(pid) });
      log.info({ pid }, 'adopted qemu');
      return new QemuVmHandle(pid, qmp, files, identity, log, null, loadVmSandbox(config.runDir), config.guestAgent?.socket, config.vnc !== undefined);
    } catch (e) {
      if (!processAlive(pid)) return null;
      throw new HangarError('ENGINE_FAILED', `QEMU pid ${pid} is running but its QMP socket does not answer: ${toHangarError(e).message}`);
    }
  }
}
