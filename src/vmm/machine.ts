/**
 * One microVM: KVM VM with its in-kernel irqchip and PIT, guest RAM, the
 * legacy devices (COM1 UART, i8042, power port), the MMIO and PIO buses,
 * the loaded kernel, and one worker thread per vCPU running KVM_RUN.
 *
 * Device models run here, on the main (device) thread, for every vCPU
 * count: the JS device objects then need no locking, console and control
 * sockets live on the same event loop, and a guest with several vCPUs sees
 * one consistent device state. vCPU workers forward their port-I/O and MMIO
 * exits through a SharedArrayBuffer mailbox and wait (Atomics.wait) for the
 * answer; interrupts go back through KVM_IRQ_LINE, which KVM delivers to a
 * running vCPU by itself.
 */
import { EventEmitter } from 'node:events';
import type { Worker } from 'node:worker_threads';
import { startVcpuThread } from './vcpu-thread.js';
import { HangarError, toHangarError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { CAP, EXIT_NAMES } from '../kvm/abi.js';
import { Kvm, type Vcpu, type Vm } from '../kvm/kvm.js';
import { libc } from '../kvm/libc.js';
import { KvmRunView } from '../kvm/run.js';
import { createEventFd, watchEventFd, type WatchedEventFd } from '../kvm/eventfd.js';
import { MmioBus, PioBus, busMetrics } from './bus.js';
import { normaliseCpuid } from './boot/cpuid.js';
import { BP, loadLinux, type LoadedKernel } from './boot/loader.js';
import { writeAcpiTables } from './boot/acpi.js';
import { writeMpTable } from './boot/mptable.js';
import { enterLongMode, wireLapic, writeBootGdt, writePageTables } from './boot/x86.js';
import type { IrqLine, MmioDevice, PioDevice } from './devices/device.js';
import type { CreateVirtioDevices, DeviceHost, DriveConfig, NetConfig } from './devices/host.js';
import { I8042 } from './devices/i8042.js';
import { AcpiSleepRegisters, PostPort, PowerPort } from './devices/power.js';
import { Serial } from './devices/serial.js';
import { KvmIrqLine } from './irq.js';
import * as L from './layout.js';
import { GuestRam } from './memory.js';
import { translate } from './pagewalk.js';
import {
  CMD_PAUSE, CMD_RUN, CMD_STOP, COUNTER_EXITS, COUNTER_FIRST_ENTRY_NS, COUNTER_FIRST_EXIT_ADDR, COUNTER_FIRST_EXIT_NS, COUNTER_FIRST_EXIT_REASON, COUNTER_MMIO, COUNTER_PIO, COUNTER_WORDS, CTL_CMD, CTL_RELEASED, CTL_WORDS, KIND_PIO, MB_ADDR_HI, MB_ADDR_LO,
  MB_BYTES, MB_COUNT, MB_DATA_OFFSET, MB_DATA_SIZE, MB_KIND, MB_RESPONSE, MB_SIZE, MB_STATE, MB_WRITE, type VcpuExitReason, type VcpuWorkerData,
  type WorkerMessage,
} from './vcpu-protocol.js';

export interface MachineConfig {
  vcpus: number;
  memBytes: number;
  kernel: string;
  initrd?: string;
  cmdline: string;
  drives?: DriveConfig[];
  nets?: NetConfig[];
  /** Add a virtio-rng device. */
  rng?: boolean;
  /** Mask CPU features nested KVM cannot emulate (default true). */
  conservativeCpuid?: boolean;
}

export type MachineState = 'NotStarted' | 'Running' | 'Paused' | 'Stopped';

export interface MachineExit {
  reason: VcpuExitReason;
  detail: string;
  vcpu?: number;
  rip?: string;
  /** Instruction bytes at RIP (from KVM, or read from guest memory). */
  insn?: number[];
}

interface VcpuSlot {
  vcpu: Vcpu;
  run: KvmRunView;
  ctl: Int32Array;
  mb: Int32Array;
  mbData: Uint8Array;
  counters: Float64Array;
  worker?: Worker;
  thread?: bigint;
  paused: boolean;
  exited: boolean;
}

const KICK_SIGNAL = 'SIGUSR2';
const SIGUSR2 = 12;
let kickHandlerInstalled = false;

export class Machine extends EventEmitter {
  state: MachineState = 'NotStarted';
  readonly mmio: MmioBus;
  readonly pio: PioBus;
  readonly serial: Serial;
  readonly i8042: I8042;
  kernel?: LoadedKernel;
  readonly startedAt = process.hrtime.bigint();
  firstOutputNs?: bigint;
  runStartNs?: bigint;
  private readonly slots: VcpuSlot[] = [];
  private readonly irqs = new Map<number, KvmIrqLine>();
  private nextVirtioSlot = 0;
  private readonly extraCmdline: string[] = [];
  private ending?: MachineExit;
  private pauseWaiters: Array<() => void> = [];
  private readonly exitPromise: Promise<MachineExit>;
  private resolveExit!: (e: MachineExit) => void;
  private virtioSet?: { close(): void };
  private readonly eventFds: WatchedEventFd[] = [];
  /** Drives and NICs accepted but without a device model to back them. */
  readonly unavailable: string[] = [];

  private constructor(
    readonly cfg: MachineConfig,
    readonly log: Logger,
    private readonly kvm: Kvm,
    readonly vm: Vm,
    readonly mem: GuestRam,
    onConsoleOutput: (b: Uint8Array) => void,
  ) {
    super();
    this.exitPromise = new Promise((r) => { this.resolveExit = r; });
    const onDeviceError = (dev: string, err: unknown) => this.log.error({ device: dev, err: toHangarError(err).message }, 'device model failed; access answered as unclaimed');
    this.mmio = new MmioBus(onDeviceError);
    this.pio = new PioBus(onDeviceError);
    this.serial = new Serial(this.irqLine(L.SERIAL_COM1_IRQ), (b) => {
      if (this.firstOutputNs === undefined) this.firstOutputNs = process.hrtime.bigint();
      onConsoleOutput(b);
    });
    this.i8042 = new I8042(this.irqLine(L.I8042_KBD_IRQ), () => this.end({ reason: 'reboot', detail: 'guest reset through the i8042 controller' }));
    this.pio.register(L.SERIAL_COM1_PORT, L.SERIAL_PORT_COUNT, this.serial);
    this.pio.register(L.I8042_DATA_PORT, 5, this.i8042);
    this.pio.register(L.POWER_PORT, 1, new PowerPort((what) => this.end(
      what === 'poweroff' ? { reason: 'poweroff', detail: 'guest powered off (power port)' }
        : what === 'reset' ? { reason: 'reboot', detail: 'guest reset (power port)' }
          : { reason: 'crashed', detail: 'guest panicked (power port)' })));
    this.pio.register(L.POST_PORT, 1, new PostPort());
    this.pio.register(L.ACPI_SLEEP_CONTROL_PORT, 2, new AcpiSleepRegisters(() => this.end({ reason: 'poweroff', detail: 'guest powered off (ACPI S5)' })));
  }

  /** Validates the configuration, creates the VM and its devices, and loads the kernel. Nothing runs yet. */
  static async create(cfg: MachineConfig, log: Logger, onConsoleOutput: (b: Uint8Array) => void): Promise<Machine> {
    if (!Number.isInteger(cfg.vcpus) || cfg.vcpus < 1 || cfg.vcpus > L.MAX_VCPUS) throw new HangarError('INVALID_ARGUMENT', `vcpu count must be 1..${L.MAX_VCPUS}, got ${cfg.vcpus}`);
    if (!Number.isInteger(cfg.memBytes) || cfg.memBytes < L.MIN_RAM || cfg.memBytes > L.MAX_RAM || cfg.memBytes % (2 * 1024 * 1024) !== 0) {
      throw new HangarError('INVALID_ARGUMENT', `memory must be a multiple of 2 MiB between ${L.MIN_RAM / 2 ** 20} MiB and ${L.MAX_RAM / 2 ** 20} MiB, got ${cfg.memBytes} bytes`);
    }
    const kvm = Kvm.open();
    let vm: Vm | undefined;
    let mem: GuestRam | undefined;
    try {
      vm = kvm.createVm();
      const maxVcpus = vm.checkExtension(CAP.MAX_VCPUS) || vm.checkExtension(CAP.NR_VCPUS) || 1;
      if (cfg.vcpus > maxVcpus) throw new HangarError('RESOURCE_EXHAUSTED', `this host's KVM allows ${maxVcpus} vCPUs per VM`);
      vm.setTssAddr(L.KVM_TSS);
      if (vm.checkExtension(CAP.SET_IDENTITY_MAP_ADDR)) vm.setIdentityMapAddr(L.KVM_IDENTITY_MAP);
      vm.createIrqchip();
      vm.createPit2();
      mem = GuestRam.allocate(cfg.memBytes);
      vm.setUserMemoryRegion(0, 0, cfg.memBytes, mem.hostAddr);
      const m = new Machine(cfg, log, kvm, vm, mem, onConsoleOutput);
      await m.createVirtioDevices();
      m.setupBoot();
      return m;
    } catch (e) {
      mem?.free();
      vm?.close();
      kvm.close();
      throw toHangarError(e, 'ENGINE_FAILED');
    }
  }

  // ---- DeviceHost -------------------------------------------------------

  irqLine(gsi: number): IrqLine {
    let l = this.irqs.get(gsi);
    if (!l) { l = new KvmIrqLine(this.vm, gsi); this.irqs.set(gsi, l); }
    return l;
  }

  deviceHost(): DeviceHost {
    return {
      memory: this.mem,
      log: this.log,
      irqLine: (gsi) => this.irqLine(gsi),
      attachVirtioMmio: (make) => this.attachVirtioMmio(make),
      addMmioDevice: (b, s, d) => this.addMmioDevice(b, s, d),
      addPioDevice: (p, c, d) => this.addPioDevice(p, c, d),
      appendCmdline: (f) => this.appendCmdline(f),
      ioEventFd: (addr, len, datamatch, onEvent) => this.ioEventFd(addr, len, datamatch, onEvent),
    };
  }

  /** KVM completes the guest's write itself and signals an eventfd watched here; null where the host lacks ioeventfd. */
  ioEventFd(addr: number, len: number, datamatch: number | undefined, onEvent: () => void): { close(): void } | null {
    if (!this.vm.checkExtension(CAP.IOEVENTFD)) return null;
    let fd = -1;
    try {
      fd = createEventFd();
      this.vm.ioeventfd(fd, addr, len, datamatch === undefined ? {} : { datamatch: BigInt(datamatch) });
    } catch (e) {
      if (fd >= 0) libc.close(fd);
      this.log.warn({ addr, err: String(e) }, 'ioeventfd not available; using MMIO exits');
      return null;
    }
    const w = watchEventFd(fd, onEvent);
    this.eventFds.push(w);
    const vm = this.vm;
    let closed = false;
    return {
      close() {
        if (closed) return;
        closed = true;
        w.close();
        try { vm.ioeventfd(fd, addr, len, datamatch === undefined ? { deassign: true } : { datamatch: BigInt(datamatch), deassign: true }); } catch { /* VM going away */ }
        libc.close(fd);
      },
    };
  }

  attachVirtioMmio<D extends MmioDevice>(make: (slot: L.MmioSlot, irq: IrqLine) => D): { device: D; slot: L.MmioSlot } {
    this.mustNotBeStarted();
    if (this.nextVirtioSlot >= L.VIRTIO_MMIO_SLOTS) throw new HangarError('RESOURCE_EXHAUSTED', `all ${L.VIRTIO_MMIO_SLOTS} virtio-mmio slots are taken`);
    const slot = L.virtioMmioSlot(this.nextVirtioSlot);
    const device = make(slot, this.irqLine(slot.irq));
    this.mmio.register(slot.base, slot.size, device);
    this.nextVirtioSlot++;
    this.extraCmdline.push(L.virtioMmioCmdline(slot));
    return { device, slot };
  }

  addMmioDevice(base: number, size: number, device: MmioDevice): void {
    this.mustNotRun();
    if (base < this.cfg.memBytes) throw new HangarError('INVALID_ARGUMENT', `MMIO device ${device.name} at 0x${base.toString(16)} overlaps guest RAM`);
    this.mmio.register(base, size, device);
  }

  addPioDevice(port: number, count: number, device: PioDevice): void {
    this.mustNotRun();
    if (port + count > 0x10000) throw new HangarError('INVALID_ARGUMENT', `port range of ${device.name} exceeds 0xffff`);
    this.pio.register(port, count, device);
  }

  appendCmdline(fragment: string): void {
    this.mustNotBeStarted();
    if (/[\0\n]/.test(fragment)) throw new HangarError('INVALID_ARGUMENT', 'command-line fragment contains NUL or newline');
    this.extraCmdline.push(fragment);
  }

  /** Whatever changes the kernel command line must happen before the kernel is loaded. */
  private mustNotBeStarted(): void {
    if (this.kernel) throw new HangarError('INVALID_STATE', 'virtio devices and command-line fragments must be added before the kernel is loaded');
  }

  private mustNotRun(): void {
    if (this.state !== 'NotStarted') throw new HangarError('INVALID_STATE', 'devices must be added before the VM starts');
  }

  private async createVirtioDevices(): Promise<void> {
    const drives = this.cfg.drives ?? [];
    const nets = this.cfg.nets ?? [];
    const rng = this.cfg.rng ?? false;
    if (drives.length === 0 && nets.length === 0 && !rng) return;
    let factory: CreateVirtioDevices | undefined;
    try {
      const mod = (await import('./virtio/index.js' as string)) as Record<string, unknown>;
      factory = mod.createVirtioDevices as CreateVirtioDevices | undefined;
    } catch (e) {
      this.log.warn({ err: String(e) }, 'virtio device models not available');
    }
    if (typeof factory !== 'function') {
      for (const d of drives) this.unavailable.push(`drive ${d.drive_id}: device not available`);
      for (const n of nets) this.unavailable.push(`network interface ${n.iface_id}: device not available`);
      if (rng) this.unavailable.push('entropy: device not available');
      this.log.warn({ unavailable: this.unavailable }, 'virtio devices requested but no device factory: device not available');
      return;
    }
    const set = (await factory(this.deviceHost(), { drives, nets, rng })) as { close?: () => void } | undefined;
    if (set && typeof set.close === 'function') this.virtioSet = { close: set.close.bind(set) };
  }

  private setupBoot(): void {
    const cmdline = [this.cfg.cmdline.trim(), ...this.extraCmdline].filter((s) => s.length > 0).join(' ');
    this.kernel = loadLinux(this.mem, { kernelPath: this.cfg.kernel, initrdPath: this.cfg.initrd, cmdline });
    writeBootGdt(this.mem);
    writePageTables(this.mem);
    if (this.cfg.vcpus > 1) writeMpTable(this.mem, this.cfg.vcpus);
    // ACPI for kernels that find CPUs only through the MADT; the zero page points at the RSDP too.
    this.mem.writeU64(L.ZERO_PAGE + BP.acpi_rsdp_addr, BigInt(writeAcpiTables(this.mem, this.cfg.vcpus)));
    const supported = this.kvm.supportedCpuid();
    for (let i = 0; i < this.cfg.vcpus; i++) {
      const vcpu = this.vm.createVcpu(i);
      vcpu.setCpuid(normaliseCpuid(supported, { vcpuIndex: i, vcpuCount: this.cfg.vcpus, conservative: this.cfg.conservativeCpuid ?? true }));
      wireLapic(vcpu, i === 0);
      if (i === 0 || this.kernel.apsAtEntry) {
        enterLongMode(vcpu, this.kernel.entry, i);
        if (i > 0) vcpu.setMpState(0); // runnable at the entry point instead of waiting for INIT/SIPI
      }
      const ctlSab = new SharedArrayBuffer(CTL_WORDS * 4);
      const mbSab = new SharedArrayBuffer(MB_BYTES);
      const cSab = new SharedArrayBuffer(COUNTER_WORDS * 8);
      this.slots.push({
        vcpu, run: new KvmRunView(vcpu.runAddr, vcpu.runSize), ctl: new Int32Array(ctlSab), mb: new Int32Array(mbSab),
        mbData: new Uint8Array(mbSab, MB_DATA_OFFSET, MB_DATA_SIZE), counters: new Float64Array(cSab), paused: false, exited: false,
      });
      this.slots[i]!.counters.fill(-1, COUNTER_FIRST_EXIT_REASON, COUNTER_FIRST_EXIT_ADDR + 1);
    }
  }

  // ---- lifecycle --------------------------------------------------------

  /** Starts every vCPU thread; resolves when all are running. */
  async start(): Promise<void> {
    if (this.state !== 'NotStarted') throw new HangarError('INVALID_STATE', `cannot start a VM that is ${this.state}`);
    if (!kickHandlerInstalled) {
      // A handler must exist so the kick signal interrupts KVM_RUN instead of killing the process.
      process.on(KICK_SIGNAL, () => {});
      kickHandlerInstalled = true;
    }
    const ready: Array<Promise<void>> = [];
    this.slots.forEach((s, index) => {
      const data: VcpuWorkerData = {
        index, fd: s.vcpu.fd, runAddr: s.vcpu.runAddr, runSize: s.vcpu.runSize,
        ctl: s.ctl.buffer as SharedArrayBuffer, mailbox: s.mb.buffer as SharedArrayBuffer, counters: s.counters.buffer as SharedArrayBuffer,
      };
      const w = startVcpuThread(data);
      s.worker = w;
      ready.push(new Promise((resolve, reject) => {
        w.on('message', (m: WorkerMessage) => {
          if (m.t === 'ready') { s.thread = BigInt(m.thread); resolve(); }
          else this.onWorkerMessage(s, m);
        });
        w.once('error', (e) => {
          reject(e);
          this.end({ reason: 'crashed', detail: `vCPU ${index} thread failed: ${e.message}`, vcpu: index });
        });
        w.once('exit', () => {
          if (!s.exited) { s.exited = true; this.checkAllExited(); }
        });
      }));
    });
    await Promise.all(ready);
    this.state = 'Running';
    this.runStartNs = process.hrtime.bigint();
    for (const s of this.slots) { Atomics.store(s.ctl, CTL_CMD, CMD_RUN); Atomics.notify(s.ctl, CTL_CMD); }
    this.emit('state', this.state);
  }

  private onWorkerMessage(s: VcpuSlot, m: WorkerMessage): void {
    switch (m.t) {
      case 'io': this.serviceMailbox(s); break;
      case 'paused':
        s.paused = true;
        if (this.slots.every((x) => x.paused || x.exited)) { const w = this.pauseWaiters; this.pauseWaiters = []; w.forEach((f) => f()); }
        break;
      case 'resumed': s.paused = false; break;
      case 'exit': {
        s.exited = true;
        // From here on this thread is never kicked again; let it end.
        Atomics.store(s.ctl, CTL_RELEASED, 1);
        Atomics.notify(s.ctl, CTL_RELEASED);
        if (m.reason !== 'stopped') {
          const exit: MachineExit = { reason: m.reason, detail: m.detail, vcpu: m.index };
          if (m.rip) exit.rip = m.rip;
          let insn = m.insn ?? [];
          if (insn.length === 0 && m.rip && m.cr3 !== undefined) insn = this.readInstruction(BigInt('0x' + m.rip), BigInt('0x' + m.cr3), m.paging ?? true);
          if (insn.length > 0) exit.insn = insn;
          if (m.reason === 'crashed' && m.rip) {
            exit.detail += ` at rip 0x${m.rip}` + (insn.length ? ` (instruction bytes: ${insn.map((b) => b.toString(16).padStart(2, '0')).join(' ')})` : '');
          }
          this.end(exit);
        }
        this.checkAllExited();
        break;
      }
      default: break;
    }
  }

  private readInstruction(rip: bigint, cr3: bigint, paging: boolean): number[] {
    const gpa = paging ? translate(this.mem, cr3, rip) : rip;
    if (gpa === null) return [];
    const n = Math.max(0, Math.min(15, this.mem.size - Number(gpa)));
    try { return [...this.mem.slice(gpa, n)]; } catch { return []; }
  }

  /** Answers one forwarded access: dispatch to the bus, store the result, wake the vCPU. */
  private serviceMailbox(s: VcpuSlot): void {
    const mb = s.mb;
    if (Atomics.load(mb, MB_STATE) !== 1) return;
    const write = mb[MB_WRITE] === 1;
    const addr = (mb[MB_ADDR_LO]! >>> 0) + (mb[MB_ADDR_HI]! >>> 0) * 2 ** 32;
    const size = mb[MB_SIZE]!;
    const count = mb[MB_COUNT]!;
    if (mb[MB_KIND] === KIND_PIO) {
      for (let i = 0; i < count; i++) {
        const d = s.mbData.subarray(i * size, (i + 1) * size);
        if (write) this.pio.write(addr, d); else this.pio.read(addr, d);
      }
    } else {
      const d = s.mbData.subarray(0, size);
      if (write) this.mmio.write(addr, d); else this.mmio.read(addr, d);
    }
    Atomics.store(mb, MB_STATE, MB_RESPONSE);
    Atomics.notify(mb, MB_STATE);
  }

  /** Makes every vCPU leave KVM_RUN promptly: immediate_exit covers the race where it was about to enter. */
  private kick(): void {
    for (const s of this.slots) {
      if (s.exited) continue;
      s.run.immediateExit = true;
      if (s.thread !== undefined) libc.pthreadKill(s.thread, SIGUSR2);
      Atomics.notify(s.ctl, CTL_CMD);
    }
  }

  private setCommand(cmd: number): void {
    for (const s of this.slots) { Atomics.store(s.ctl, CTL_CMD, cmd); Atomics.notify(s.ctl, CTL_CMD); }
    this.kick();
  }

  async pause(): Promise<void> {
    if (this.state === 'Paused') return;
    if (this.state !== 'Running') throw new HangarError('INVALID_STATE', `cannot pause a VM that is ${this.state}`);
    const done = new Promise<void>((r) => this.pauseWaiters.push(r));
    this.setCommand(CMD_PAUSE);
    await done;
    if (this.ending) return;
    this.state = 'Paused';
    this.emit('state', this.state);
  }

  async resume(): Promise<void> {
    if (this.state === 'Running') return;
    if (this.state !== 'Paused') throw new HangarError('INVALID_STATE', `cannot resume a VM that is ${this.state}`);
    for (const s of this.slots) s.paused = false;
    for (const s of this.slots) { Atomics.store(s.ctl, CTL_CMD, CMD_RUN); Atomics.notify(s.ctl, CTL_CMD); }
    this.state = 'Running';
    this.emit('state', this.state);
  }

  sendCtrlAltDel(): void {
    this.i8042.sendCtrlAltDel();
  }

  /** Ends the VM (idempotent: the first reason wins) and resolves when every vCPU thread is gone. */
  end(exit: MachineExit): Promise<MachineExit> {
    if (!this.ending) {
      this.ending = exit;
      this.log.info({ exit }, 'VM ending');
      this.setCommand(CMD_STOP);
      // Release anybody waiting for a pause that will never complete.
      const w = this.pauseWaiters; this.pauseWaiters = []; w.forEach((f) => f());
      if (this.slots.every((s) => !s.worker)) this.finish();
      else {
        // Stragglers: re-kick until all threads are out (a signal can land just before KVM_RUN is entered).
        const t = setInterval(() => this.kick(), 50);
        t.unref();
        this.exitPromise.finally(() => clearInterval(t));
        this.checkAllExited();
      }
    }
    return this.exitPromise;
  }

  stop(detail = 'stopped by request'): Promise<MachineExit> {
    return this.end({ reason: 'stopped', detail });
  }

  get exited(): Promise<MachineExit> {
    return this.exitPromise;
  }

  private checkAllExited(): void {
    if (this.ending && this.slots.every((s) => s.exited || !s.worker)) this.finish();
  }

  private finished = false;
  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.state = 'Stopped';
    this.emit('state', this.state);
    this.resolveExit(this.ending!);
  }

  /** Releases KVM objects and guest RAM; call after the VM ended. */
  close(): void {
    try { this.virtioSet?.close(); } catch (e) { this.log.warn({ err: String(e) }, 'closing virtio devices failed'); }
    for (const w of this.eventFds) w.close();
    for (const s of this.slots) s.vcpu.close();
    this.vm.close();
    this.kvm.close();
    this.mem.free();
  }

  /** Returns how many bytes the UART took; the caller offers the rest again later. */
  consoleInput(bytes: Uint8Array): number {
    return this.serial.input(bytes);
  }

  /**
   * Start-up timestamps of one vCPU (monotonic ns, as process.hrtime.bigint()): its first
   * KVM_RUN call, and the first time KVM_RUN came back with an exit, with that exit's reason
   * (KVM_EXIT_*) and port or address. Undefined while it has not happened.
   */
  firstRun(index: number): { entryNs?: bigint; exitNs?: bigint; exitReason?: number; exitAddr?: number } {
    const c = this.slots[index]?.counters;
    if (!c) return {};
    const at = (w: number) => (c[w]! > 0 ? BigInt(c[w]!) : undefined);
    const r: { entryNs?: bigint; exitNs?: bigint; exitReason?: number; exitAddr?: number } = {};
    const entryNs = at(COUNTER_FIRST_ENTRY_NS), exitNs = at(COUNTER_FIRST_EXIT_NS);
    if (entryNs !== undefined) r.entryNs = entryNs;
    if (exitNs !== undefined) { r.exitNs = exitNs; r.exitReason = c[COUNTER_FIRST_EXIT_REASON]!; r.exitAddr = c[COUNTER_FIRST_EXIT_ADDR]!; }
    return r;
  }

  metrics(): Record<string, unknown> {
    const vcpus = this.slots.map((s, i) => {
      const f = this.firstRun(i);
      return {
        index: i, exits: s.counters[COUNTER_EXITS], pioExits: s.counters[COUNTER_PIO], mmioExits: s.counters[COUNTER_MMIO],
        firstExitReason: f.exitReason === undefined ? null : (EXIT_NAMES[f.exitReason] ?? `EXIT_${f.exitReason}`), firstExitAddr: f.exitAddr ?? null,
      };
    });
    const devices: Record<string, unknown> = { serial0: this.serial.metrics(), i8042: this.i8042.metrics() };
    for (const r of this.mmio.devices()) devices[r.device.name] = r.device.metrics();
    return { state: this.state, vcpus, devices, mmioBus: busMetrics(this.mmio), pioBus: busMetrics(this.pio), memBytes: this.cfg.memBytes, guestRamResidentBytes: this.mem.residentBytes() };
  }
}
