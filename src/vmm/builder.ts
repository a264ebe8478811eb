/**
 * Builds a microVM from its configuration, in the order the pieces depend on
 * each other: KVM VM with its in-kernel irqchip and PIT, guest RAM, the
 * legacy and virtio devices (whose command-line fragments the kernel needs),
 * the kernel with its boot structures (zero page, GDT, page tables, MP and
 * ACPI tables), then one vCPU per configured CPU in 64-bit mode at the
 * entry point. Nothing runs yet. A failure anywhere releases what was made.
 */
import { HangarError, toHangarError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { CAP } from '../kvm/abi.js';
import { Kvm, type Vcpu, type Vm } from '../kvm/kvm.js';
import { normaliseCpuid } from './boot/cpuid.js';
import { BP, loadLinux, type LoadedKernel } from './boot/loader.js';
import { writeAcpiTables } from './boot/acpi.js';
import { writeMpTable } from './boot/mptable.js';
import { enterLongMode, wireLapic, writeBootGdt, writePageTables } from './boot/x86.js';
import { DeviceManager, registerLegacyDevices, type LegacyDevices } from './device-manager.js';
import * as L from './layout.js';
import { Machine, type MachineConfig } from './machine.js';
import { GuestRam } from './memory.js';

/** The limits hangar-vmm enforces whatever the caller checked before. */
export function checkLimits(cfg: Pick<MachineConfig, 'vcpus' | 'memBytes'>): void {
  if (!Number.isInteger(cfg.vcpus) || cfg.vcpus < 1 || cfg.vcpus > L.MAX_VCPUS) throw new HangarError('INVALID_ARGUMENT', `vcpu count must be 1..${L.MAX_VCPUS}, got ${cfg.vcpus}`);
  if (!Number.isInteger(cfg.memBytes) || cfg.memBytes < L.MIN_RAM || cfg.memBytes > L.MAX_RAM || cfg.memBytes % (2 * 1024 * 1024) !== 0) {
    throw new HangarError('INVALID_ARGUMENT', `memory must be a multiple of 2 MiB between ${L.MIN_RAM / 2 ** 20} MiB and ${L.MAX_RAM / 2 ** 20} MiB, got ${cfg.memBytes} bytes`);
  }
}

/** A KVM VM with what every Hangar microVM has in the kernel: irqchip, PIT, TSS and identity map. */
export function createVm(kvm: Kvm, vcpus: number): Vm {
  const vm = kvm.createVm();
  try {
    const maxVcpus = vm.checkExtension(CAP.MAX_VCPUS) || vm.checkExtension(CAP.NR_VCPUS) || 1;
    if (vcpus > maxVcpus) throw new HangarError('RESOURCE_EXHAUSTED', `this host's KVM allows ${maxVcpus} vCPUs per VM`);
    vm.setTssAddr(L.KVM_TSS);
    if (vm.checkExtension(CAP.SET_IDENTITY_MAP_ADDR)) vm.setIdentityMapAddr(L.KVM_IDENTITY_MAP);
    vm.createIrqchip();
    vm.createPit2();
    return vm;
  } catch (e) {
    vm.close();
    throw e;
  }
}

/** Loads the kernel with the devices' command-line fragments and writes the boot structures around it. */
function loadKernel(mem: GuestRam, cfg: MachineConfig, deviceCmdline: string[], virtioSlots: L.MmioSlot[]): LoadedKernel {
  const cmdline = [cfg.cmdline.trim(), ...deviceCmdline].filter((s) => s.length > 0).join(' ');
  const kernel = loadLinux(mem, { kernelPath: cfg.kernel, ...(cfg.initrd !== undefined ? { initrdPath: cfg.initrd } : {}), cmdline });
  writeBootGdt(mem);
  writePageTables(mem);
  if (cfg.vcpus > 1) writeMpTable(mem, cfg.vcpus);
  // ACPI for kernels that find CPUs only through the MADT; the zero page points at the RSDP too.
  mem.writeU64(L.ZERO_PAGE + BP.acpi_rsdp_addr, BigInt(writeAcpiTables(mem, cfg.vcpus, virtioSlots)));
  return kernel;
}

/** vCPUs with normalised CPUID and LAPIC; the boot vCPU (and every vCPU of a guest that asks for it) at the entry point. */
function createVcpus(kvm: Kvm, vm: Vm, cfg: MachineConfig, kernel: LoadedKernel): Vcpu[] {
  const supported = kvm.supportedCpuid();
  const vcpus: Vcpu[] = [];
  try {
    for (let i = 0; i < cfg.vcpus; i++) {
      const vcpu = vm.createVcpu(i);
      vcpus.push(vcpu);
      vcpu.setCpuid(normaliseCpuid(supported, { vcpuIndex: i, vcpuCount: cfg.vcpus, conservative: cfg.conservativeCpuid ?? true }));
      wireLapic(vcpu, i === 0);
      if (i === 0 || kernel.apsAtEntry) {
        enterLongMode(vcpu, kernel.entry, i);
        if (i > 0) vcpu.setMpState(0); // runnable at the entry point instead of waiting for INIT/SIPI
      }
    }
    return vcpus;
  } catch (e) {
    for (const v of vcpus) v.close();
    throw e;
  }
}

/**
 * The devices of a machine being assembled (a fresh one or one restored from
 * a snapshot): the legacy devices, which reach the machine (console output,
 * guest reset and power-off) only once `machine()` returns it, then the
 * virtio devices `cfg` names. A failure releases the device manager.
 */
export function createDevices(vm: Vm, mem: GuestRam, cfg: MachineConfig, log: Logger, onConsoleOutput: (b: Uint8Array) => void, machine: () => Machine | undefined): { devices: DeviceManager; legacy: LegacyDevices } {
  const devices = new DeviceManager(vm, mem, log);
  try {
    const legacy = registerLegacyDevices(devices, {
      consoleOutput: (b) => { machine()?.noteOutput(); onConsoleOutput(b); },
      end: (e) => { void machine()?.end(e); },
    });
    devices.addVirtioDevices({ drives: cfg.drives ?? [], nets: cfg.nets ?? [], rng: cfg.rng ?? false });
    return { devices, legacy };
  } catch (e) {
    devices.close();
    throw e;
  }
}

/** What an assembly made before it failed, released last made first. */
export function releaseParts(p: { kvm: Kvm; vm?: Vm | undefined; mem?: GuestRam | undefined; devices?: DeviceManager | undefined; vcpus?: Vcpu[] }): void {
  for (const v of p.vcpus ?? []) v.close();
  p.devices?.close();
  p.mem?.free();
  p.vm?.close();
  p.kvm.close();
}

/** Validates the configuration, creates the VM and its devices, and loads the kernel. Nothing runs yet. */
export async function buildMachine(cfg: MachineConfig, log: Logger, onConsoleOutput: (b: Uint8Array) => void): Promise<Machine> {
  checkLimits(cfg);
  const kvm = Kvm.open();
  let vm: Vm | undefined;
  let mem: GuestRam | undefined;
  let devices: DeviceManager | undefined;
  let vcpus: Vcpu[] = [];
  try {
    vm = createVm(kvm, cfg.vcpus);
    mem = GuestRam.allocate(cfg.memBytes);
    vm.setUserMemoryRegion(0, 0, cfg.memBytes, mem.hostAddr);
    let machine: Machine | undefined;
    const made = createDevices(vm, mem, cfg, log, onConsoleOutput, () => machine);
    devices = made.devices;
    const kernel = loadKernel(mem, cfg, devices.takeCmdline(), devices.virtioSlots());
    vcpus = createVcpus(kvm, vm, cfg, kernel);
    machine = new Machine({ cfg, log, kvm, vm, mem, devices, legacy: made.legacy, kernel });
    for (const v of vcpus) machine.vcpus.add(v);
    return machine;
  } catch (e) {
    releaseParts({ kvm, vm, mem, devices, vcpus });
    throw toHangarError(e, 'ENGINE_FAILED');
  }
}
