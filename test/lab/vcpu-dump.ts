/**
 * What a stalled guest's vCPUs are doing, read from hangar-vmm itself: the
 * lab (test/lab/linux-guest.ts) pauses a guest whose console went quiet,
 * writes a snapshot and reads the KVM state out of it — per vCPU its MP
 * state (running or halted), RIP and whether interrupts are enabled, the
 * local APIC's timer and pending/in-service vectors, the TSC-deadline MSR
 * against the TSC, pending events; per VM the IOAPIC's pins. A halted vCPU
 * with interrupts enabled and no timer armed, or with a vector stuck in the
 * IRR, tells a lost interrupt from a guest that is merely slow.
 */
import { REGS, SREGS } from '../../src/kvm/abi.js';
import type { Sections } from '../../src/vmm/snapshot/format.js';

/** KVM_MP_STATE_* names, by value. */
const MP_STATES = ['RUNNABLE', 'UNINITIALIZED', 'INIT_RECEIVED', 'HALTED', 'SIPI_RECEIVED', 'STOPPED', 'CHECK_STOP', 'OPERATING', 'LOAD', 'AP_RESET_HOLD'];
const MSR_TSC = 0x10;
const MSR_TSC_DEADLINE = 0x6e0;
/** Local APIC register offsets (the KVM_GET_LAPIC page is the APIC's register page). */
const APIC = { tpr: 0x80, isr: 0x100, tmr: 0x180, irr: 0x200, lvtt: 0x320, tmict: 0x380, tmcct: 0x390, tdcr: 0x3e0 } as const;
const LVT_MASKED = 1 << 16;
const TIMER_MODES = ['one-shot', 'periodic', 'tsc-deadline', 'reserved'];

const hex = (n: number | bigint) => `0x${n.toString(16)}`;

/** The vectors set in one of the APIC's 256-bit registers (ISR, TMR, IRR: 8 × 32 bits, 16 bytes apart). */
export function apicVectors(lapic: Buffer, base: number): number[] {
  const out: number[] = [];
  for (let w = 0; w < 8; w++) {
    const bits = lapic.readUInt32LE(base + w * 16);
    for (let b = 0; b < 32; b++) if (bits & (1 << b)) out.push(w * 32 + b);
  }
  return out;
}

/** One line about a local APIC: timer mode, mask, vector, counts; TPR; pending (IRR) and in-service (ISR) vectors. */
export function describeLapic(lapic: Buffer): string {
  const lvtt = lapic.readUInt32LE(APIC.lvtt);
  const mode = TIMER_MODES[(lvtt >>> 17) & 3]!;
  const timer = `timer ${mode}${lvtt & LVT_MASKED ? ' MASKED' : ''} vector ${lvtt & 0xff} initial ${lapic.readUInt32LE(APIC.tmict)} current ${lapic.readUInt32LE(APIC.tmcct)} divide ${hex(lapic.readUInt32LE(APIC.tdcr))}`;
  const list = (v: number[]) => (v.length ? v.join(',') : '-');
  return `lapic: ${timer}; tpr ${lapic.readUInt32LE(APIC.tpr)}; irr ${list(apicVectors(lapic, APIC.irr))}; isr ${list(apicVectors(lapic, APIC.isr))}`;
}

/** MSR index → value from a snapshot's cpuN/msrs section (16-byte records: index, pad, value). */
export function msrMap(msrs: Buffer): Map<number, bigint> {
  const m = new Map<number, bigint>();
  for (let o = 0; o + 16 <= msrs.length; o += 16) m.set(msrs.readUInt32LE(o), msrs.readBigUInt64LE(o + 8));
  return m;
}

/**
 * struct kvm_vcpu_events, the parts that tell an interrupt is stuck: an exception or interrupt
 * KVM holds for injection, NMI pending, and the interrupt shadow (STI/MOV SS).
 */
function describeEvents(ev: Buffer): string {
  // exception {injected, nr, has_error_code, pending, error_code u32}; interrupt {injected, nr, soft, shadow}; nmi {injected, pending, masked, pad}.
  const excInjected = ev[0]!, excNr = ev[1]!;
  const intInjected = ev[8]!, intNr = ev[9]!, shadow = ev[11]!;
  const nmiInjected = ev[12]!, nmiPending = ev[13]!;
  const parts = [
    excInjected ? `exception ${excNr} injected` : '',
    intInjected ? `interrupt ${intNr} injected` : '',
    shadow ? `interrupt shadow ${shadow}` : '',
    nmiInjected || nmiPending ? `nmi injected ${nmiInjected} pending ${nmiPending}` : '',
  ].filter(Boolean);
  return `events: ${parts.length ? parts.join(', ') : 'none pending'}`;
}

/** IOAPIC pins that are unmasked, with their vector and delivery state (from vm/ioapic: kvm_irqchip holding kvm_ioapic_state). */
export function describeIoapic(chip: Buffer): string {
  // struct kvm_irqchip: chip_id, pad (8 bytes); kvm_ioapic_state: base_address u64, ioregsel u32, id u32, irr u32, pad u32, then 24 × u64 redirection entries.
  const irr = chip.readUInt32LE(8 + 16);
  const pins: string[] = [];
  for (let pin = 0; pin < 24; pin++) {
    const e = chip.readBigUInt64LE(8 + 24 + pin * 8);
    if (e & (1n << 16n)) continue; // masked
    const vector = Number(e & 0xffn), level = (e >> 15n) & 1n, remoteIrr = (e >> 14n) & 1n;
    pins.push(`${pin}→${vector}${level ? ' level' : ''}${remoteIrr ? ' REMOTE-IRR' : ''}${irr & (1 << pin) ? ' ASSERTED' : ''}`);
  }
  return `ioapic: unmasked pins ${pins.length ? pins.join('; ') : '-'}`;
}

/** What a snapshot's state sections say about each vCPU and the IOAPIC, one line per fact. */
export function describeVmState(s: Sections): string[] {
  const lines: string[] = [];
  for (let i = 0; s.has(`cpu${i}/regs`); i++) {
    const mp = s.get(`cpu${i}/mpstate`)?.readUInt32LE(0);
    const regs = s.get(`cpu${i}/regs`)!, sregs = s.get(`cpu${i}/sregs`);
    const rip = regs.readBigUInt64LE(REGS.indexOf('rip') * 8), rflags = regs.readBigUInt64LE(REGS.indexOf('rflags') * 8);
    const intOn = (rflags & 0x200n) !== 0n;
    const cr8 = sregs ? ` cr8 ${sregs.readBigUInt64LE(SREGS.cr8)}` : '';
    lines.push(`cpu${i}: ${mp === undefined ? '?' : (MP_STATES[mp] ?? mp)} rip ${hex(rip)} interrupts ${intOn ? 'enabled' : 'DISABLED'}${cr8}`);
    const lapic = s.get(`cpu${i}/lapic`);
    if (lapic) lines.push(`cpu${i} ${describeLapic(lapic)}`);
    const msrs = s.get(`cpu${i}/msrs`);
    if (msrs) {
      const m = msrMap(msrs);
      const tsc = m.get(MSR_TSC), deadline = m.get(MSR_TSC_DEADLINE);
      if (deadline !== undefined) {
        const due = deadline === 0n ? 'not armed' : tsc !== undefined ? (deadline <= tsc ? `PASSED ${tsc - deadline} cycles ago` : `due in ${deadline - tsc} cycles`) : hex(deadline);
        lines.push(`cpu${i} tsc-deadline: ${due}`);
      }
    }
    const ev = s.get(`cpu${i}/events`);
    if (ev) lines.push(`cpu${i} ${describeEvents(ev)}`);
  }
  const ioapic = s.get('vm/ioapic');
  if (ioapic) lines.push(describeIoapic(ioapic));
  return lines;
}
