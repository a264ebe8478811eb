/**
 * The CPU state a Linux-style 64-bit entry expects: identity-mapped page
 * tables, a flat GDT with __BOOT_CS = 0x10 and __BOOT_DS = 0x18, long mode
 * enabled, interrupts off, RSI pointing at the zero page. Also the local
 * APIC's LINT0/LINT1 wiring (ExtINT from the PIC, NMI) that a PC has.
 */
import type { GuestRam } from '../memory.js';
import type { Segment, Sregs, Vcpu } from '../../kvm/kvm.js';
import { BOOT_GDT, BOOT_IDT, BOOT_STACK_TOP, GDT_CODE64, GDT_DATA, GDT_TSS, PD_BASE, PD_COUNT, PDPT, PML4, ZERO_PAGE } from '../layout.js';

const PTE_PRESENT = 0x1n, PTE_RW = 0x2n, PTE_PS = 0x80n;

/** Writes PML4 → PDPT → PD_COUNT page directories of 2 MiB pages identity-mapping the first PD_COUNT GiB. */
export function writePageTables(mem: GuestRam): void {
  mem.writeU64(PML4, BigInt(PDPT) | PTE_PRESENT | PTE_RW);
  for (let i = 0; i < PD_COUNT; i++) {
    mem.writeU64(PDPT + i * 8, BigInt(PD_BASE + i * 0x1000) | PTE_PRESENT | PTE_RW);
    for (let j = 0; j < 512; j++) {
      const addr = (BigInt(i) << 30n) | (BigInt(j) << 21n);
      mem.writeU64(PD_BASE + i * 0x1000 + j * 8, addr | PTE_PRESENT | PTE_RW | PTE_PS);
    }
  }
}

/** A GDT descriptor from flags (access byte + flags nibble as 0xF0FF-packed), base and limit. */
export function gdtEntry(flags: number, base: number, limit: number): bigint {
  const b = BigInt(base), l = BigInt(limit), f = BigInt(flags);
  return ((b & 0xff000000n) << 32n) | ((f & 0x0000f0ffn) << 40n) | ((l & 0x000f0000n) << 32n) | ((b & 0x00ffffffn) << 16n) | (l & 0x0000ffffn);
}

const BOOT_GDT_ENTRIES = [
  0n,
  0n,
  gdtEntry(0xa09b, 0, 0xfffff), // 0x10: 64-bit code, DPL 0
  gdtEntry(0xc093, 0, 0xfffff), // 0x18: data, DPL 0
];

export function writeBootGdt(mem: GuestRam): void {
  BOOT_GDT_ENTRIES.forEach((e, i) => mem.writeU64(BOOT_GDT + i * 8, e));
  mem.writeU64(BOOT_IDT, 0n);
}

function seg(selector: number, type: number, code: boolean): Segment {
  return { base: 0n, limit: 0xffffffff, selector, type, present: 1, dpl: 0, db: code ? 0 : 1, s: 1, l: code ? 1 : 0, g: 1, avl: 0, unusable: 0 };
}

export function longModeSregs(cur: Sregs): Sregs {
  const data = seg(GDT_DATA, 3, false);
  return {
    ...cur,
    cs: seg(GDT_CODE64, 11, true),
    ds: data, es: data, fs: data, gs: data, ss: data,
    tr: { base: 0n, limit: 0x67, selector: GDT_TSS, type: 11, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0 },
    gdt: { base: BigInt(BOOT_GDT), limit: BOOT_GDT_ENTRIES.length * 8 - 1 },
    idt: { base: BigInt(BOOT_IDT), limit: 7 },
    cr0: 0x80000031n, // PG | NE | ET | PE
    cr3: BigInt(PML4),
    cr4: 0x20n, // PAE
    efer: 0x500n, // LMA | LME
  };
}

/** Puts a vCPU at a 64-bit entry point the way the Linux boot protocol describes. `rdi` carries the vCPU index for Hangar guests. */
export function enterLongMode(vcpu: Vcpu, entry: number, vcpuIndex: number): void {
  vcpu.setSregs(longModeSregs(vcpu.getSregs()));
  vcpu.setRegs({ rip: BigInt(entry), rsp: BigInt(BOOT_STACK_TOP), rbp: BigInt(BOOT_STACK_TOP), rsi: BigInt(ZERO_PAGE), rdi: BigInt(vcpuIndex), rflags: 2n });
}

const APIC_LVT0 = 0x350, APIC_LVT1 = 0x360;
const APIC_MODE_NMI = 0x4, APIC_MODE_EXTINT = 0x7;

/**
 * LINT0 delivers the PIC's interrupts (ExtINT), LINT1 NMIs, as on a PC. Only
 * the boot vCPU takes PIC interrupts (LINT0 unmasked), so a guest that uses
 * the 8259 alone gets each interrupt once.
 */
export function wireLapic(vcpu: Vcpu, isBsp: boolean): void {
  const l = vcpu.getLapic();
  const set = (off: number, mode: number, unmask: boolean) => {
    let v = l.readUInt32LE(off);
    v = (v & ~0x700) | (mode << 8);
    if (unmask) v &= ~0x10000;
    l.writeUInt32LE(v >>> 0, off);
  };
  set(APIC_LVT0, APIC_MODE_EXTINT, isBsp);
  set(APIC_LVT1, APIC_MODE_NMI, isBsp);
  vcpu.setLapic(l);
}
