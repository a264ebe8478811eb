/**
 * What KVM holds for a VM, as snapshot sections: per vCPU its registers,
 * special registers, FPU and XSAVE area, XCRs, debug registers, local APIC,
 * MSRs, pending events, MP state and CPUID; per VM the in-kernel irqchip
 * (both 8259 PICs and the IOAPIC), the PIT and kvmclock. Sections hold the
 * kernel's structs byte for byte (struct sizes are fixed by the KVM ABI,
 * checked in test/unit/kvm-abi.test.ts), except MSRs (index/value pairs)
 * and CPUID (kvm_cpuid_entry2 records), which carry a count.
 *
 * Reading happens while every vCPU thread is parked (paused, and each one
 * has re-entered KVM once to finish a pending port or MMIO access, see
 * vcpu-worker.ts). Order matters to KVM: MP state first when saving (it
 * makes the LAPIC accept pending INIT/SIPI), events last; when restoring,
 * CPUID first, then MP state, registers, special registers, XSAVE, XCRs,
 * debug registers, LAPIC (after sregs: APIC base), MSRs (after the LAPIC:
 * TSC deadline), events.
 */
import { CAP, IRQCHIP_ID, SIZE } from '../../kvm/abi.js';
import { decodeCpuid, type Kvm, type Vcpu, type Vm } from '../../kvm/kvm.js';
import { section, type Sections } from './format.js';
import { stateError } from './check.js';

/** Most MSRs one vCPU may carry in a snapshot; KVM lists a few dozen. */
export const MAX_MSRS = 1024;
/** KVM_MAX_CPUID_ENTRIES. */
export const MAX_CPUID_ENTRIES = 256;
const MSR_RECORD = 16;

/** Which optional kinds of vCPU state this host's KVM can save and restore, and the XSAVE area's size. */
export interface CpuStateSupport {
  xsave: boolean;
  xsaveSize: number;
  xcrs: boolean;
  debugregs: boolean;
  events: boolean;
  clock: boolean;
}

export function cpuStateSupport(vm: Vm): CpuStateSupport {
  const xsave = vm.checkExtension(CAP.XSAVE) > 0;
  const xsave2 = vm.checkExtension(CAP.XSAVE2);
  return {
    xsave, xsaveSize: xsave ? Math.max(SIZE.xsave, xsave2) : 0, xcrs: vm.checkExtension(CAP.XCRS) > 0, debugregs: vm.checkExtension(CAP.DEBUGREGS) > 0,
    events: vm.checkExtension(CAP.VCPU_EVENTS) > 0, clock: vm.checkExtension(CAP.ADJUST_CLOCK) > 0,
  };
}

/**
 * The MSRs worth saving: every MSR KVM lists as saved/restored
 * (KVM_GET_MSR_INDEX_LIST), minus those this vCPU cannot read (features its
 * CPUID does not have); getMsrs drops those itself.
 */
export function saveMsrs(kvm: Kvm, vcpu: Vcpu): Buffer {
  const msrs = vcpu.getMsrs(kvm.msrIndexList());
  const b = Buffer.alloc(msrs.length * MSR_RECORD);
  msrs.forEach((m, i) => {
    b.writeUInt32LE(m.index >>> 0, i * MSR_RECORD);
    b.writeBigUInt64LE(m.data, i * MSR_RECORD + 8);
  });
  return b;
}

const cpu = (i: number, what: string) => `cpu${i}/${what}`;

/** Adds the state of vCPU `i` to `out`. */
export function saveVcpu(kvm: Kvm, vcpu: Vcpu, i: number, support: CpuStateSupport, out: Sections): void {
  const mp = Buffer.alloc(SIZE.mp_state);
  mp.writeUInt32LE(vcpu.getMpState(), 0);
  out.set(cpu(i, 'mpstate'), mp);
  out.set(cpu(i, 'regs'), vcpu.getRegsRaw());
  out.set(cpu(i, 'sregs'), vcpu.getSregsRaw());
  out.set(cpu(i, 'fpu'), vcpu.getFpu());
  if (support.xsave) out.set(cpu(i, 'xsave'), vcpu.getXsave(support.xsaveSize));
  if (support.xcrs) out.set(cpu(i, 'xcrs'), vcpu.getXcrs());
  if (support.debugregs) out.set(cpu(i, 'debugregs'), vcpu.getDebugRegs());
  out.set(cpu(i, 'lapic'), vcpu.getLapic());
  out.set(cpu(i, 'msrs'), saveMsrs(kvm, vcpu));
  const entries = vcpu.getCpuid();
  const cpuid = Buffer.alloc(entries.length * SIZE.cpuid_entry2);
  entries.forEach((e, k) => {
    const o = k * SIZE.cpuid_entry2;
    cpuid.writeUInt32LE(e.function >>> 0, o); cpuid.writeUInt32LE(e.index >>> 0, o + 4); cpuid.writeUInt32LE(e.flags >>> 0, o + 8);
    cpuid.writeUInt32LE(e.eax >>> 0, o + 12); cpuid.writeUInt32LE(e.ebx >>> 0, o + 16); cpuid.writeUInt32LE(e.ecx >>> 0, o + 20); cpuid.writeUInt32LE(e.edx >>> 0, o + 24);
  });
  out.set(cpu(i, 'cpuid'), cpuid);
  if (support.events) out.set(cpu(i, 'events'), vcpu.getVcpuEvents());
}

/** Adds the irqchip, PIT and kvmclock state of the VM to `out`. */
export function saveVmState(vm: Vm, support: CpuStateSupport, out: Sections): void {
  out.set('vm/pic-master', vm.getIrqchip(IRQCHIP_ID.PIC_MASTER));
  out.set('vm/pic-slave', vm.getIrqchip(IRQCHIP_ID.PIC_SLAVE));
  out.set('vm/ioapic', vm.getIrqchip(IRQCHIP_ID.IOAPIC));
  out.set('vm/pit2', vm.getPit2());
  if (support.clock) out.set('vm/clock', vm.getClock());
}

/** The vCPU and VM sections a snapshot of `vcpus` vCPUs may have; anything else in the file is refused. */
export function knownStateSections(vcpus: number): Set<string> {
  const names = new Set(['manifest', 'vm/pic-master', 'vm/pic-slave', 'vm/ioapic', 'vm/pit2', 'vm/clock']);
  for (let i = 0; i < vcpus; i++) {
    for (const k of ['mpstate', 'regs', 'sregs', 'fpu', 'xsave', 'xcrs', 'debugregs', 'lapic', 'msrs', 'cpuid', 'events']) names.add(cpu(i, k));
  }
  return names;
}

/**
 * Checks every state section against this host before anything is created:
 * fixed-size structs have their exact size, counted records a whole number
 * of records within the limits, optional kinds present only where this
 * host's KVM can restore them, MSRs only those KVM lists.
 */
export function checkStateSections(s: Sections, vcpus: number, support: CpuStateSupport, hostMsrs: ReadonlySet<number>): void {
  const known = knownStateSections(vcpus);
  for (const name of s.keys()) if (!known.has(name)) throw stateError('file', `unexpected section "${name}" for a VM with ${vcpus} vCPUs`);
  const optional = (name: string, have: boolean, size: number, what: string): void => {
    if (!s.has(name)) return;
    if (!have) throw stateError(name, `this host's KVM cannot restore ${what}`);
    section(s, name, size);
  };
  for (let i = 0; i < vcpus; i++) {
    section(s, cpu(i, 'mpstate'), SIZE.mp_state);
    if (s.get(cpu(i, 'mpstate'))!.readUInt32LE(0) > 9) throw stateError(cpu(i, 'mpstate'), 'is not a KVM_MP_STATE value');
    section(s, cpu(i, 'regs'), SIZE.regs);
    section(s, cpu(i, 'sregs'), SIZE.sregs);
    section(s, cpu(i, 'fpu'), SIZE.fpu);
    section(s, cpu(i, 'lapic'), SIZE.lapic_state);
    optional(cpu(i, 'xsave'), support.xsave, support.xsaveSize, `an XSAVE area of ${s.get(cpu(i, 'xsave'))?.length} bytes`);
    optional(cpu(i, 'xcrs'), support.xcrs, SIZE.xcrs, 'XCRs');
    optional(cpu(i, 'debugregs'), support.debugregs, SIZE.debugregs, 'debug registers');
    optional(cpu(i, 'events'), support.events, SIZE.vcpu_events, 'vCPU events');
    const xcrs = s.get(cpu(i, 'xcrs'));
    if (xcrs && xcrs.readUInt32LE(0) > 16) throw stateError(cpu(i, 'xcrs'), `holds ${xcrs.readUInt32LE(0)} XCRs (at most 16)`);
    const msrs = section(s, cpu(i, 'msrs'));
    if (msrs.length % MSR_RECORD !== 0 || msrs.length / MSR_RECORD > MAX_MSRS) throw stateError(cpu(i, 'msrs'), `${msrs.length} bytes is not a list of at most ${MAX_MSRS} MSRs`);
    for (let o = 0; o < msrs.length; o += MSR_RECORD) {
      const idx = msrs.readUInt32LE(o);
      if (!hostMsrs.has(idx)) throw stateError(cpu(i, 'msrs'), `MSR 0x${idx.toString(16)} is not one this host's KVM saves and restores`);
      if (msrs.readUInt32LE(o + 4) !== 0) throw stateError(cpu(i, 'msrs'), 'reserved bytes are not zero');
    }
    const cpuid = section(s, cpu(i, 'cpuid'));
    if (cpuid.length % SIZE.cpuid_entry2 !== 0 || cpuid.length === 0 || cpuid.length / SIZE.cpuid_entry2 > MAX_CPUID_ENTRIES) {
      throw stateError(cpu(i, 'cpuid'), `${cpuid.length} bytes is not a list of 1 to ${MAX_CPUID_ENTRIES} CPUID entries`);
    }
  }
  const chip = (name: string, id: number): void => {
    const b = section(s, name, SIZE.irqchip);
    if (b.readUInt32LE(0) !== id) throw stateError(name, `is for irqchip ${b.readUInt32LE(0)}, expected ${id}`);
  };
  chip('vm/pic-master', IRQCHIP_ID.PIC_MASTER);
  chip('vm/pic-slave', IRQCHIP_ID.PIC_SLAVE);
  chip('vm/ioapic', IRQCHIP_ID.IOAPIC);
  section(s, 'vm/pit2', SIZE.pit_state2);
  optional('vm/clock', support.clock, SIZE.clock_data, 'kvmclock');
}

/** Which step failed, so a refusal by KVM names what it refused. */
function step<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw stateError(what, `KVM refused it: ${(e as Error).message}`);
  }
}

/** Puts vCPU `i` (created, never run) in its saved state; sections were checked by checkStateSections. */
export function restoreVcpu(vcpu: Vcpu, i: number, s: Sections): void {
  const cpuid = s.get(cpu(i, 'cpuid'))!;
  const head = Buffer.alloc(SIZE.cpuid2);
  head.writeUInt32LE(cpuid.length / SIZE.cpuid_entry2, 0);
  step(cpu(i, 'cpuid'), () => vcpu.setCpuid(decodeCpuid(Buffer.concat([head, cpuid]))));
  step(cpu(i, 'mpstate'), () => vcpu.setMpState(s.get(cpu(i, 'mpstate'))!.readUInt32LE(0)));
  step(cpu(i, 'regs'), () => vcpu.setRegsRaw(s.get(cpu(i, 'regs'))!));
  step(cpu(i, 'sregs'), () => vcpu.setSregsRaw(s.get(cpu(i, 'sregs'))!));
  step(cpu(i, 'fpu'), () => vcpu.setFpu(s.get(cpu(i, 'fpu'))!));
  const xsave = s.get(cpu(i, 'xsave'));
  if (xsave) step(cpu(i, 'xsave'), () => vcpu.setXsave(xsave));
  const xcrs = s.get(cpu(i, 'xcrs'));
  if (xcrs) step(cpu(i, 'xcrs'), () => vcpu.setXcrs(xcrs));
  const dr = s.get(cpu(i, 'debugregs'));
  if (dr) step(cpu(i, 'debugregs'), () => vcpu.setDebugRegs(dr));
  step(cpu(i, 'lapic'), () => vcpu.setLapic(s.get(cpu(i, 'lapic'))!));
  const msrs = s.get(cpu(i, 'msrs'))!;
  const list = Array.from({ length: msrs.length / MSR_RECORD }, (_, k) => ({ index: msrs.readUInt32LE(k * MSR_RECORD), data: msrs.readBigUInt64LE(k * MSR_RECORD + 8) }));
  const set = step(cpu(i, 'msrs'), () => vcpu.setMsrs(list));
  if (set !== list.length) throw stateError(cpu(i, 'msrs'), `KVM refused MSR 0x${list[set]!.index.toString(16)} = 0x${list[set]!.data.toString(16)}`);
  const ev = s.get(cpu(i, 'events'));
  if (ev) step(cpu(i, 'events'), () => vcpu.setVcpuEvents(ev));
}

/** Puts the irqchip, PIT and kvmclock in their saved state. */
export function restoreVmState(vm: Vm, s: Sections): void {
  for (const name of ['vm/pic-master', 'vm/pic-slave', 'vm/ioapic']) step(name, () => vm.setIrqchip(Buffer.from(s.get(name)!)));
  step('vm/pit2', () => vm.setPit2(s.get('vm/pit2')!));
  const clock = s.get('vm/clock');
  if (clock) {
    // Only the clock value: the flags GET_CLOCK reports (TSC stable, realtime, host TSC) would make
    // KVM add the time that passed since the snapshot, and a restored guest continues where it stopped.
    const c = Buffer.alloc(SIZE.clock_data);
    clock.copy(c, 0, 0, 8);
    step('vm/clock', () => vm.setClock(c));
  }
}
