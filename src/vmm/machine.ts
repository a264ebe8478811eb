/**
 * One running microVM, as the controller sees it: its state (NotStarted →
 * Running ⇄ Paused → Stopped), start/pause/resume/stop, how it ended, and
 * its metrics. builder.ts makes one (KVM VM, guest RAM, devices, loaded
 * kernel, vCPUs); device-manager.ts holds its devices and buses;
 * vcpu-runner.ts runs its vCPU threads.
 *
 * Device models run on the main (device) thread for every vCPU count: the
 * JS device objects then need no locking, console and control sockets live
 * on the same event loop, and a guest with several vCPUs sees one
 * consistent device state. Interrupts go back through KVM_IRQ_LINE, which
 * KVM delivers to a running vCPU by itself.
 */
import { EventEmitter } from 'node:events';
import { HangarError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Kvm, Vm } from '../kvm/kvm.js';
import type { LoadedKernel } from './boot/loader.js';
import type { DeviceManager, LegacyDevices } from './device-manager.js';
import type { DriveConfig, NetConfig } from './devices/host.js';
import type { GuestRam } from './memory.js';
import type { VcpuExitReason } from './vcpu-protocol.js';
import { VcpuRunner, type FirstRun } from './vcpu-runner.js';
import { blkIoThreadWanted, startBlkIoThread, type BlkIoThread } from './virtio/blk-iothread.js';
import { netIoThreadWanted, startNetIoThread, type NetIoThread } from './virtio/net-io-thread.js';
import { VirtioNet } from './virtio/net.js';
import { IRQCHIP_ID } from '../kvm/abi.js';
import { ACPI_GED_GSI } from './layout.js';

/** struct kvm_irqchip for the IOAPIC: chip id and padding (8 bytes), then kvm_ioapic_state, whose redirection table starts 24 bytes in. */
const IOAPIC_REDIRTBL_OFFSET = 8 + 24;
const IOAPIC_PINS = 24;
const IOAPIC_MASKED = 1n << 16n;

/** Whether redirection entry `pin` of an IOAPIC state (KVM_GET_IRQCHIP) is unmasked. */
export function ioapicPinUnmasked(chip: Buffer, pin: number): boolean {
  if (!Number.isInteger(pin) || pin < 0 || pin >= IOAPIC_PINS) throw new RangeError(`IOAPIC pin ${pin} out of range`);
  return (chip.readBigUInt64LE(IOAPIC_REDIRTBL_OFFSET + 8 * pin) & IOAPIC_MASKED) === 0n;
}

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

/** What builder.ts hands over: everything made, nothing running. */
export interface MachineParts {
  cfg: MachineConfig;
  log: Logger;
  kvm: Kvm;
  vm: Vm;
  mem: GuestRam;
  devices: DeviceManager;
  legacy: LegacyDevices;
  kernel: LoadedKernel;
}

export class Machine extends EventEmitter {
  state: MachineState = 'NotStarted';
  readonly cfg: MachineConfig;
  readonly log: Logger;
  readonly vm: Vm;
  readonly mem: GuestRam;
  readonly devices: DeviceManager;
  readonly kernel: LoadedKernel;
  readonly vcpus: VcpuRunner;
  readonly startedAt = process.hrtime.bigint();
  firstOutputNs?: bigint;
  runStartNs?: bigint;
  private readonly kvm: Kvm;
  private readonly legacy: LegacyDevices;
  private ending?: MachineExit;
  private finished = false;
  private readonly blkIoThreads: BlkIoThread[] = [];
  private readonly netIoThreads: NetIoThread[] = [];
  private readonly exitPromise: Promise<MachineExit>;
  private resolveExit!: (e: MachineExit) => void;

  constructor(parts: MachineParts) {
    super();
    ({ cfg: this.cfg, log: this.log, kvm: this.kvm, vm: this.vm, mem: this.mem, devices: this.devices, legacy: this.legacy, kernel: this.kernel } = parts);
    this.exitPromise = new Promise((r) => { this.resolveExit = r; });
    this.vcpus = new VcpuRunner(this.devices, this.mem, { exit: (e) => { void this.end(e); }, allExited: () => this.finish() });
  }

  /** Called by the console path on each guest output: the first one is a start-up milestone. */
  noteOutput(): void {
    if (this.firstOutputNs === undefined) this.firstOutputNs = process.hrtime.bigint();
  }

  /**
   * Starts every vCPU thread; resolves when all are running — or, with `paused` (a VM restored
   * from a snapshot and not resumed yet), when all are ready and held: the VM is then Paused
   * and resume() lets it run.
   */
  async start(opts: { paused?: boolean } = {}): Promise<void> {
    if (this.state !== 'NotStarted') throw new HangarError('INVALID_STATE', `cannot start a VM that is ${this.state}`);
    this.devices.seal();
    const virtio = this.devices.virtioDevices();
    const fastBlk = virtio.flatMap((d) => (d.fast ? [{ share: d.fast, used: () => d.device.fastPathUsed(), fail: (e: Error) => d.device.fail(e) }] : []));
    const fastNet = virtio.flatMap((d) => (d.netFast ? [{ share: d.netFast, used: () => d.device.fastPathUsed(), fail: (e: Error) => d.device.fail(e) }] : []));
    const irqs = virtio.flatMap((d) => (d.irqShare ? [d.irqShare] : []));
    if (blkIoThreadWanted()) {
      // Opt-in: an I/O thread per drive woken by an ioeventfd, instead of the notifying vCPU thread.
      for (const b of fastBlk) {
        const dev = this.devices.virtioDevices().find((d) => d.fast === b.share)!.device;
        const t = startBlkIoThread(this.vm, b.share, { hostAddr: this.mem.hostAddr, size: this.mem.size }, this.log, {
          used: () => dev.fastPathUsed(), forward: () => dev.notifyQueue(0), fail: (e) => dev.fail(e),
        });
        if (t) this.blkIoThreads.push(t);
      }
    }
    if (netIoThreadWanted()) {
      // Each NIC on a TAP: one I/O thread woken by ioeventfds and the TAP (net-io-thread.ts).
      for (const d of virtio) {
        const model = d.device.device;
        if (!d.netFast || !d.irqShare || !(model instanceof VirtioNet)) continue;
        const dev = d.device;
        const t = startNetIoThread(this.vm, d.netFast, d.irqShare, { hostAddr: this.mem.hostAddr, size: this.mem.size }, this.log, {
          forward: (q) => dev.notifyQueue(q), fail: (e) => dev.fail(e),
        });
        if (!t) continue;
        // A machine restored from a snapshot starts paused: nothing moves until resume().
        if (opts.paused) t.hold(true);
        model.attachIoThread(t);
        this.netIoThreads.push(t);
      }
    }
    await this.vcpus.start({ serialFast: this.legacy.serial.fastPath() }, { blk: fastBlk, net: fastNet, irqs });
    if (opts.paused) {
      this.state = 'Paused';
      this.emit('state', this.state);
      return;
    }
    this.state = 'Running';
    this.runStartNs = process.hrtime.bigint();
    this.vcpus.release();
    this.emit('state', this.state);
  }

  /** The fixed port-I/O devices whose state a snapshot carries. */
  legacyDevices(): LegacyDevices {
    return this.legacy;
  }

  async pause(): Promise<void> {
    if (this.state === 'Paused') return;
    if (this.state !== 'Running') throw new HangarError('INVALID_STATE', `cannot pause a VM that is ${this.state}`);
    await this.vcpus.pause();
    // No frame moves while paused (a snapshot sees the rings as they stand).
    for (const t of this.netIoThreads) t.hold(true);
    if (this.ending) return;
    this.state = 'Paused';
    this.emit('state', this.state);
  }

  async resume(): Promise<void> {
    if (this.state === 'Running') return;
    if (this.state !== 'Paused') throw new HangarError('INVALID_STATE', `cannot resume a VM that is ${this.state}`);
    this.runStartNs ??= process.hrtime.bigint();
    for (const t of this.netIoThreads) t.hold(false);
    this.vcpus.release();
    this.state = 'Running';
    this.emit('state', this.state);
  }

  sendCtrlAltDel(): void {
    this.legacy.i8042.sendCtrlAltDel();
  }

  /** Presses the ACPI power button: an edge on the Generic Event Device's GSI (see boot/acpi.ts). */
  pressPowerButton(): void {
    this.devices.irqLine(ACPI_GED_GSI).pulse();
  }

  /**
   * Whether the guest's OS listens for the power button: an ACPI OS that bound the Generic
   * Event Device unmasked its GSI in the IOAPIC. Guests without ACPI (the ring-3 test guests)
   * leave it masked, as KVM resets it.
   */
  powerButtonListened(): boolean {
    return ioapicPinUnmasked(this.vm.getIrqchip(IRQCHIP_ID.IOAPIC), ACPI_GED_GSI);
  }

  /**
   * A graceful shutdown request (the daemon's stop path): the ACPI power button where the
   * guest listens for it, otherwise Ctrl-Alt-Del on the i8042 (which guests without ACPI
   * treat as their shutdown request, and which a Linux guest would take as a reboot).
   */
  requestShutdown(): 'power-button' | 'ctrl-alt-del' {
    if (this.powerButtonListened()) { this.pressPowerButton(); return 'power-button'; }
    this.sendCtrlAltDel();
    return 'ctrl-alt-del';
  }

  /** Returns how many bytes the UART took; the caller offers the rest again later. */
  consoleInput(bytes: Uint8Array): number {
    return this.legacy.serial.input(bytes);
  }

  /** Ends the VM (idempotent: the first reason wins) and resolves when every vCPU thread is gone. */
  end(exit: MachineExit): Promise<MachineExit> {
    if (!this.ending) {
      this.ending = exit;
      this.log.info({ exit }, 'VM ending');
      this.vcpus.stop();
    }
    return this.exitPromise;
  }

  stop(detail = 'stopped by request'): Promise<MachineExit> {
    return this.end({ reason: 'stopped', detail });
  }

  get exited(): Promise<MachineExit> {
    return this.exitPromise;
  }

  private finish(): void {
    if (this.finished || !this.ending) return;
    this.finished = true;
    this.legacy.serial.flushFastPath(); // console bytes the vCPU threads wrote last
    this.state = 'Stopped';
    this.emit('state', this.state);
    this.resolveExit(this.ending);
  }

  /** Releases devices, KVM objects and guest RAM; call after the VM ended (or instead of starting it). */
  close(): void {
    for (const t of this.blkIoThreads.splice(0)) t.close();
    for (const t of this.netIoThreads.splice(0)) t.close();
    this.devices.close();
    this.vcpus.close();
    this.vm.close();
    this.kvm.close();
    this.mem.free();
  }

  /** Start-up timestamps of one vCPU (see VcpuRunner.firstRun). */
  firstRun(index: number): FirstRun {
    return this.vcpus.firstRun(index);
  }

  metrics(): Record<string, unknown> {
    const d = this.devices.metrics();
    return {
      state: this.state, vcpus: this.vcpus.metrics(), devices: d.devices, mmioBus: d.mmioBus, pioBus: d.pioBus,
      memBytes: this.cfg.memBytes, guestRamResidentBytes: this.mem.residentBytes(),
    };
  }
}
