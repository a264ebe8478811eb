/**
 * The state machine behind hangar-vmm's control API and config file:
 * configuration is collected until InstanceStart, then the Machine is built
 * and started; Pause/Resume/SendCtrlAltDel/Stop act on it. When the machine
 * ends, `onExit` fires once with the exit.
 */
import { HangarError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
// Types only: the schemas module loads TypeBox, which the control API's answers do not need.
import type { VmmSnapshotCreate, VmmSnapshotLoad } from '../api/vmm.js';
import type { BootSourceBody, MachineConfigBody } from './config.js';
import type { ConsoleHub } from './console.js';
import type { DriveConfig, NetConfig } from './devices/host.js';
import type { Machine, MachineExit } from './machine.js';
import type { SnapshotCreateResult } from './snapshot/create.js';

export const VMM_VERSION = '0.1.0';
/**
 * The DSDT describes COM1 and the i8042 (PNP0501, PNP0303), so Linux finds both through
 * ACPI PNP with their interrupts; the keyboard controller carries SendCtrlAltDel, and
 * reboot=k resets through it; panic=1 reboots (and so ends the VM) one second after a panic.
 */
export const DEFAULT_BOOT_ARGS = 'console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd';

export class VmmController {
  machineConfig: MachineConfigBody = { vcpu_count: 1, mem_size_mib: 128 };
  bootSource?: BootSourceBody;
  readonly drives = new Map<string, DriveConfig>();
  readonly nets = new Map<string, NetConfig>();
  entropy = false;
  machine?: Machine;
  private starting = false;
  private exitListeners: Array<(e: MachineExit) => void> = [];
  readonly processStartNs = process.hrtime.bigint();
  /** When InstanceStart was received (monotonic ns). */
  instanceStartNs?: bigint;
  /** When PUT /snapshot/load was received, and when the restored machine was ready (monotonic ns). */
  snapshotLoadNs?: bigint;
  snapshotLoadedNs?: bigint;
  /** Within a load: modules and logger ready, machine rebuilt (vCPU threads not started yet). */
  private snapshotModulesNs?: bigint;
  private snapshotRestoredNs?: bigint;
  /** The last snapshot written, for GET /metrics. */
  lastSnapshot?: SnapshotCreateResult & { snapshot_path: string; mem_file_path: string };
  /** Something was configured through the API or config file (a snapshot load is then refused). */
  private configured = false;

  private log?: Logger;
  /** Called once the machine runs, before InstanceStart answers; a throw fails the start. */
  onRunning?: () => void | Promise<void>;

  /**
   * `log` may be a loader: hangar-vmm passes one so the logging library is loaded only once
   * the control socket answers (see main.ts), not on the path to it.
   */
  constructor(readonly id: string, private readonly logSource: Logger | (() => Promise<Logger>), private readonly console: ConsoleHub) {
    if (typeof logSource !== 'function') this.log = logSource;
    console.setInput((b) => this.machine?.consoleInput(b) ?? b.length);
  }

  private async logger(): Promise<Logger> {
    if (!this.log) this.log = await (this.logSource as () => Promise<Logger>)();
    return this.log;
  }

  onExit(fn: (e: MachineExit) => void): void {
    this.exitListeners.push(fn);
  }

  private mustBeConfigurable(): void {
    if (this.machine || this.starting) throw new HangarError('INVALID_STATE', 'the VM has started; configuration can no longer change');
  }

  setMachineConfig(c: MachineConfigBody): void { this.mustBeConfigurable(); this.machineConfig = c; this.configured = true; }
  setBootSource(b: BootSourceBody): void { this.mustBeConfigurable(); this.bootSource = b; this.configured = true; }
  putDrive(d: DriveConfig): void { this.mustBeConfigurable(); this.drives.set(d.drive_id, d); this.configured = true; }
  putNet(n: NetConfig): void { this.mustBeConfigurable(); this.nets.set(n.iface_id, n); this.configured = true; }
  setEntropy(on: boolean): void { this.mustBeConfigurable(); this.entropy = on; this.configured = true; }

  get state(): 'Not started' | 'Running' | 'Paused' | 'Stopped' {
    if (!this.machine) return 'Not started';
    const s = this.machine.state;
    return s === 'NotStarted' ? 'Not started' : s;
  }

  async action(type: string): Promise<void> {
    switch (type) {
      case 'InstanceStart': return this.start();
      case 'Pause': return this.running('Pause').pause();
      case 'Resume': return this.running('Resume').resume();
      case 'SendCtrlAltDel': this.running('SendCtrlAltDel').sendCtrlAltDel(); return;
      case 'SendPowerButton': this.running('SendPowerButton').pressPowerButton(); return;
      case 'RequestShutdown': {
        const how = this.running('RequestShutdown').requestShutdown();
        (await this.logger()).info({ how }, 'shutdown requested');
        return;
      }
      case 'Stop': { const m = this.running('Stop'); void m.stop('stopped by API action'); await m.exited; return; }
      default: {
        // Unreachable through the API and config file (their schema lists the actions); TypeBox loads only here.
        const { VMM_ACTIONS } = await import('../api/vmm.js');
        throw new HangarError('INVALID_ARGUMENT', `unknown action_type "${type}" (${VMM_ACTIONS.join(', ')})`);
      }
    }
  }

  private running(what: string): Machine {
    if (!this.machine || this.machine.state === 'NotStarted' || this.machine.state === 'Stopped') {
      throw new HangarError('INVALID_STATE', `${what}: the VM is ${this.state}`);
    }
    return this.machine;
  }

  async start(): Promise<void> {
    this.mustBeConfigurable();
    if (!this.bootSource) throw new HangarError('INVALID_STATE', 'InstanceStart: set /boot-source first');
    this.starting = true;
    this.instanceStartNs = process.hrtime.bigint();
    try {
      // Loaded on first start (or preloaded once the socket answers, see main.ts), so the control
      // socket answers before KVM and the FFI are even loaded.
      // Both at once: on a cold start the machine model and the logger are still loading.
      const [log, { buildMachine }] = await Promise.all([this.logger(), import('./builder.js')]);
      const m = await buildMachine({
        vcpus: this.machineConfig.vcpu_count,
        memBytes: this.machineConfig.mem_size_mib * 1024 * 1024,
        kernel: this.bootSource.kernel_image_path,
        ...(this.bootSource.initrd_path ? { initrd: this.bootSource.initrd_path } : {}),
        cmdline: this.bootSource.boot_args ?? DEFAULT_BOOT_ARGS,
        drives: [...this.drives.values()],
        nets: [...this.nets.values()],
        rng: this.entropy,
        conservativeCpuid: this.machineConfig.conservative_cpuid ?? true,
      }, log, (b) => this.console.write(b));
      this.machine = m;
      void m.exited.then((e) => { for (const f of this.exitListeners) f(e); });
      await m.start();
      // Lock the process down once the vCPU threads exist (main.ts: the seccomp filter).
      await this.onRunning?.();
      log.info({ kernel: m.kernel.kind, entry: m.kernel.entry, cmdline: m.kernel.cmdline }, 'VM started');
    } finally {
      this.starting = false;
    }
  }

  /** PUT /snapshot/create: writes the paused VM's state and memory (src/vmm/snapshot/create.ts). */
  async createSnapshot(body: VmmSnapshotCreate): Promise<void> {
    const m = this.machine;
    if (!m || m.state !== 'Paused') throw new HangarError('INVALID_STATE', `snapshot/create: the VM must be Paused; it is ${this.state}`);
    const { createSnapshot } = await import('./snapshot/create.js');
    const r = createSnapshot(m, { snapshotPath: body.snapshot_path, memFilePath: body.mem_file_path });
    this.lastSnapshot = { ...r, snapshot_path: body.snapshot_path, mem_file_path: body.mem_file_path };
    (await this.logger()).info({ ...this.lastSnapshot }, 'snapshot written');
  }

  /**
   * PUT /snapshot/load: rebuilds the machine of a snapshot in this fresh process
   * (src/vmm/snapshot/restore.ts) instead of InstanceStart. It stays Paused unless resume_vm.
   */
  async loadSnapshot(body: VmmSnapshotLoad): Promise<void> {
    this.mustBeConfigurable();
    if (this.configured) throw new HangarError('INVALID_STATE', 'snapshot/load: only a hangar-vmm with nothing configured can load a snapshot (the snapshot says what the machine is)');
    this.starting = true;
    this.snapshotLoadNs = process.hrtime.bigint();
    try {
      const [log, { restoreMachine }] = await Promise.all([this.logger(), import('./snapshot/restore.js')]);
      this.snapshotModulesNs = process.hrtime.bigint();
      const { machine: m, manifest } = await restoreMachine({ snapshotPath: body.snapshot_path, memFilePath: body.mem_file_path }, log, (b) => this.console.write(b));
      this.snapshotRestoredNs = process.hrtime.bigint();
      this.machine = m;
      this.machineConfig = { vcpu_count: manifest.machine.vcpus, mem_size_mib: manifest.machine.mem_bytes / 2 ** 20, conservative_cpuid: manifest.machine.conservative_cpuid };
      for (const d of m.cfg.drives ?? []) this.drives.set(d.drive_id, d);
      for (const n of m.cfg.nets ?? []) this.nets.set(n.iface_id, n);
      this.entropy = m.cfg.rng ?? false;
      void m.exited.then((e) => { for (const f of this.exitListeners) f(e); });
      await m.start({ paused: body.resume_vm !== true });
      this.snapshotLoadedNs = process.hrtime.bigint();
      await this.onRunning?.();
      log.info({ snapshot: body.snapshot_path, state: m.state }, 'VM restored from snapshot');
    } finally {
      this.starting = false;
    }
  }

  instanceInfo(): Record<string, unknown> {
    return { app_name: 'hangar-vmm', id: this.id, state: this.state, vmm_version: VMM_VERSION };
  }

  vmInfo(): Record<string, unknown> {
    const m = this.machine;
    return {
      id: this.id,
      state: this.state,
      vcpu_count: this.machineConfig.vcpu_count,
      mem_size_mib: this.machineConfig.mem_size_mib,
      boot_source: this.bootSource ?? null,
      cmdline: m?.kernel.cmdline ?? null,
      kernel_kind: m?.kernel.kind ?? null,
      drives: [...this.drives.values()],
      network_interfaces: [...this.nets.values()],
      pid: process.pid,
    };
  }

  metrics(): Record<string, unknown> {
    const mem = process.memoryUsage();
    const ns = (t?: bigint) => (t === undefined ? null : Number(t - this.processStartNs) / 1e6);
    const first = this.machine?.firstRun(0);
    return {
      state: this.state,
      process: { pid: process.pid, rss_bytes: mem.rss, heap_used_bytes: mem.heapUsed, heap_total_bytes: mem.heapTotal, external_bytes: mem.external, cpu_us: process.cpuUsage(),
        // Time the device thread's event loop spent running callbacks (not waiting), since start.
        device_thread_busy_ms: Math.round(performance.eventLoopUtilization().active) },
      // Milliseconds since this controller was created at start-up, on the monotonic clock every thread shares.
      // first_vcpu_entry / first_guest_exit are the boot vCPU's first KVM_RUN call and the first time it
      // returned with an exit: for a guest whose first instruction exits (guests/first-insn.c), the
      // moment that instruction ran, plus the exit's way back into the vCPU thread.
      timing_ms: {
        instance_start: ns(this.instanceStartNs),
        run_start: ns(this.machine?.runStartNs),
        first_vcpu_entry: ns(first?.entryNs),
        first_guest_exit: ns(first?.exitNs),
        first_console_byte: ns(this.machine?.firstOutputNs),
        snapshot_load: ns(this.snapshotLoadNs),
        snapshot_modules_ready: ns(this.snapshotModulesNs),
        snapshot_restored: ns(this.snapshotRestoredNs),
        snapshot_loaded: ns(this.snapshotLoadedNs),
      },
      ...(this.lastSnapshot ? { last_snapshot: this.lastSnapshot } : {}),
      console_bytes: this.console.bytesOut,
      ...(this.machine ? { vm: this.machine.metrics() } : {}),
    };
  }
}
