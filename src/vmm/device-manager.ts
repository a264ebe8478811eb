/**
 * The devices of one microVM and where the guest reaches them: the MMIO and
 * port-I/O buses, interrupt lines into the in-kernel irqchip, virtio-mmio
 * slots (which the DSDT describes to the guest), and ioeventfds. It is the
 * DeviceHost that device factories build on.
 *
 * Devices are added while the machine is built; virtio devices and
 * command-line fragments only until the kernel is loaded (the fragments are
 * part of its command line), other devices until the vCPUs start.
 */
import { HangarError, toHangarError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { CAP } from '../kvm/abi.js';
import { createEventFd, watchEventFd, type WatchedEventFd } from '../kvm/eventfd.js';
import type { Vm } from '../kvm/kvm.js';
import { libc } from '../kvm/libc.js';
import { MmioBus, PioBus, busMetrics } from './bus.js';
import type { DeviceMetrics, IrqLine, MmioDevice, PioDevice } from './devices/device.js';
import type { DeviceHost, DriveConfig, NetConfig } from './devices/host.js';
import { I8042 } from './devices/i8042.js';
import { AcpiSleepRegisters, PostPort, PowerPort } from './devices/power.js';
import { CmosRtc, RTC_PORT, RTC_PORT_COUNT } from './devices/rtc.js';
import { Serial } from './devices/serial.js';
import { KvmIrqLine } from './irq.js';
import * as L from './layout.js';
import type { MachineExit } from './machine.js';
import type { GuestRam } from './memory.js';
import { createVirtioDevices, type PlacedVirtioDevice, type VirtioSet } from './virtio/index.js';

export class DeviceManager implements DeviceHost {
  readonly mmio: MmioBus;
  readonly pio: PioBus;
  private readonly irqs = new Map<number, KvmIrqLine>();
  private nextVirtioSlot = 0;
  private readonly virtioSlotsInUse: L.MmioSlot[] = [];
  private readonly cmdline: string[] = [];
  private cmdlineTaken = false;
  private started = false;
  private readonly eventFds: WatchedEventFd[] = [];
  private virtio?: VirtioSet;

  constructor(private readonly vm: Vm, readonly memory: GuestRam, readonly log: Logger) {
    const onDeviceError = (dev: string, err: unknown) => log.error({ device: dev, err: toHangarError(err).message }, 'device model failed; access answered as unclaimed');
    this.mmio = new MmioBus(onDeviceError);
    this.pio = new PioBus(onDeviceError);
  }

  irqLine(gsi: number): IrqLine {
    let l = this.irqs.get(gsi);
    if (!l) { l = new KvmIrqLine(this.vm, gsi); this.irqs.set(gsi, l); }
    return l;
  }

  attachVirtioMmio<D extends MmioDevice>(make: (slot: L.MmioSlot, irq: IrqLine) => D): { device: D; slot: L.MmioSlot } {
    this.mustNotHaveLoadedKernel();
    if (this.nextVirtioSlot >= L.VIRTIO_MMIO_SLOTS) throw new HangarError('RESOURCE_EXHAUSTED', `all ${L.VIRTIO_MMIO_SLOTS} virtio-mmio slots are taken`);
    const slot = L.virtioMmioSlot(this.nextVirtioSlot);
    // The slot's GSI is its own. Its line is uncached: vCPU threads drive it too (virtio/interrupt-state.ts).
    if (this.irqs.has(slot.irq)) throw new HangarError('INTERNAL', `virtio-mmio slot ${slot.index}: IRQ ${slot.irq} is already in use`);
    const device = make(slot, new KvmIrqLine(this.vm, slot.irq, { cached: false }));
    this.mmio.register(slot.base, slot.size, device);
    this.nextVirtioSlot++;
    // The slot reaches the guest through the DSDT (an LNRO0005 device), not a `virtio_mmio.device=`
    // fragment: a Linux guest would register a device named both ways twice, and the fragment is
    // ignored anyway where virtio_mmio is a module loaded by an init without modprobe.
    this.virtioSlotsInUse.push(slot);
    return { device, slot };
  }

  addMmioDevice(base: number, size: number, device: MmioDevice): void {
    this.mustNotHaveStarted();
    if (base < this.memory.size) throw new HangarError('INVALID_ARGUMENT', `MMIO device ${device.name} at 0x${base.toString(16)} overlaps guest RAM`);
    this.mmio.register(base, size, device);
  }

  addPioDevice(port: number, count: number, device: PioDevice): void {
    this.mustNotHaveStarted();
    if (port + count > 0x10000) throw new HangarError('INVALID_ARGUMENT', `port range of ${device.name} exceeds 0xffff`);
    this.pio.register(port, count, device);
  }

  appendCmdline(fragment: string): void {
    this.mustNotHaveLoadedKernel();
    if (/[\0\n]/.test(fragment)) throw new HangarError('INVALID_ARGUMENT', 'command-line fragment contains NUL or newline');
    this.cmdline.push(fragment);
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

  /** The virtio devices of the configuration, in slot order: drives, network interfaces, then the rng. */
  addVirtioDevices(cfg: { drives: DriveConfig[]; nets: NetConfig[]; rng: boolean }): void {
    if (cfg.drives.length === 0 && cfg.nets.length === 0 && !cfg.rng) return;
    this.virtio = createVirtioDevices(this, cfg);
  }

  /** The virtio devices in slot order (drives, NICs, rng), for snapshots. */
  virtioDevices(): PlacedVirtioDevice[] {
    return [...(this.virtio?.devices ?? [])];
  }

  /** The virtio-mmio slots in use, in slot order, for the DSDT. */
  virtioSlots(): L.MmioSlot[] {
    return [...this.virtioSlotsInUse];
  }

  /** The command-line fragments the devices need; from here on no fragment or virtio device can be added. */
  takeCmdline(): string[] {
    this.cmdlineTaken = true;
    return [...this.cmdline];
  }

  /** The vCPUs are about to run: the device set is final. */
  seal(): void {
    this.started = true;
  }

  private mustNotHaveLoadedKernel(): void {
    if (this.cmdlineTaken) throw new HangarError('INVALID_STATE', 'virtio devices and command-line fragments must be added before the kernel is loaded');
  }

  private mustNotHaveStarted(): void {
    if (this.started) throw new HangarError('INVALID_STATE', 'devices must be added before the VM starts');
  }

  metrics(): { devices: Record<string, DeviceMetrics>; mmioBus: DeviceMetrics; pioBus: DeviceMetrics } {
    const devices: Record<string, DeviceMetrics> = {};
    for (const r of this.pio.devices()) {
      const m = r.device.metrics();
      if (Object.keys(m).length > 0) devices[r.device.name] = m; // fixed ports without counters stay out
    }
    for (const r of this.mmio.devices()) devices[r.device.name] = r.device.metrics();
    return { devices, mmioBus: busMetrics(this.mmio), pioBus: busMetrics(this.pio) };
  }

  /** Closes virtio backends (files, TAP fds, their ioeventfds) and every eventfd watched here. */
  close(): void {
    try { this.virtio?.close(); } catch (e) { this.log.warn({ err: String(e) }, 'closing virtio devices failed'); }
    this.virtio = undefined;
    for (const w of this.eventFds.splice(0)) w.close();
  }
}

/** The legacy devices the machine itself talks to (console, Ctrl-Alt-Del). */
export interface LegacyDevices {
  serial: Serial;
  i8042: I8042;
  rtc: CmosRtc;
}

/**
 * Every fixed port-I/O device of a Hangar microVM, at its layout.ts address.
 * A new legacy device is one more line here.
 */
export function registerLegacyDevices(dm: DeviceManager, on: { consoleOutput(bytes: Uint8Array): void; end(exit: MachineExit): void }): LegacyDevices {
  const serial = new Serial(dm.irqLine(L.SERIAL_COM1_IRQ), (b) => on.consoleOutput(b));
  const i8042 = new I8042(dm.irqLine(L.I8042_KBD_IRQ), () => on.end({ reason: 'reboot', detail: 'guest reset through the i8042 controller' }));
  dm.addPioDevice(L.SERIAL_COM1_PORT, L.SERIAL_PORT_COUNT, serial);
  dm.addPioDevice(L.I8042_DATA_PORT, 5, i8042);
  dm.addPioDevice(L.POWER_PORT, 1, new PowerPort((what) => on.end(
    what === 'poweroff' ? { reason: 'poweroff', detail: 'guest powered off (power port)' }
      : what === 'reset' ? { reason: 'reboot', detail: 'guest reset (power port)' }
        : { reason: 'crashed', detail: 'guest panicked (power port)' })));
  dm.addPioDevice(L.POST_PORT, 1, new PostPort());
  const rtc = new CmosRtc();
  dm.addPioDevice(RTC_PORT, RTC_PORT_COUNT, rtc);
  dm.addPioDevice(L.ACPI_SLEEP_CONTROL_PORT, 2, new AcpiSleepRegisters(() => on.end({ reason: 'poweroff', detail: 'guest powered off (ACPI S5)' })));
  return { serial, i8042, rtc };
}
