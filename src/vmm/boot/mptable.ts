/**
 * An Intel MultiProcessor Specification 1.4 table in the EBDA, so a Linux
 * guest without ACPI finds every vCPU (one processor entry per local APIC),
 * the ISA bus, the IOAPIC and the identity IRQ routing of KVM's in-kernel
 * irqchip (ISA IRQ n → IOAPIC pin n).
 */
import type { GuestRam } from '../memory.js';
import { IOAPIC_BASE, LAPIC_BASE, MPTABLE_START } from '../layout.js';

const IRQ_COUNT = 16;

function checksum(b: Uint8Array): number {
  let s = 0;
  for (const x of b) s = (s + x) & 0xff;
  return (0x100 - s) & 0xff;
}

/** Builds the MP floating pointer + configuration table; returns its bytes (placed at MPTABLE_START). */
export function buildMpTable(cpus: number): Uint8Array {
  const entries: number[][] = [];
  const u32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
  const ioapicId = cpus;
  for (let i = 0; i < cpus; i++) {
    // Processor: type 0, APIC id, APIC version, flags (enabled, BSP), signature, feature flags (FPU, APIC), reserved.
    entries.push([0, i, 0x14, 0x01 | (i === 0 ? 0x02 : 0), ...u32(0x600), ...u32(0x201), 0, 0, 0, 0, 0, 0, 0, 0]);
  }
  entries.push([1, 0, ...Buffer.from('ISA   ', 'latin1')]);
  entries.push([2, ioapicId, 0x11, 0x01, ...u32(IOAPIC_BASE)]);
  for (let irq = 0; irq < IRQ_COUNT; irq++) entries.push([3, 0, 0, 0, 0, irq, ioapicId, irq]);
  entries.push([4, 3, 0, 0, 0, 0, 0xff, 0]); // ExtINT → LINT0 of every local APIC
  entries.push([4, 1, 0, 0, 0, 0, 0xff, 1]); // NMI → LINT1

  const body = entries.flat();
  const tableLen = 44 + body.length;
  const table = new Uint8Array(tableLen);
  const dv = new DataView(table.buffer);
  table.set(Buffer.from('PCMP', 'latin1'), 0);
  dv.setUint16(4, tableLen, true);
  table[6] = 4; // spec revision 1.4
  table.set(Buffer.from('HANGAR  ', 'latin1'), 8);
  table.set(Buffer.from('MICROVM     ', 'latin1'), 16);
  dv.setUint16(34, entries.length, true);
  dv.setUint32(36, LAPIC_BASE, true);
  table.set(body, 44);
  table[7] = checksum(table);

  const fp = new Uint8Array(16);
  fp.set(Buffer.from('_MP_', 'latin1'), 0);
  new DataView(fp.buffer).setUint32(4, MPTABLE_START + 16, true);
  fp[8] = 1; // length in 16-byte units
  fp[9] = 4;
  fp[10] = checksum(fp);

  const out = new Uint8Array(16 + tableLen);
  out.set(fp, 0);
  out.set(table, 16);
  return out;
}

export function writeMpTable(mem: GuestRam, cpus: number): void {
  mem.write(MPTABLE_START, buildMpTable(cpus));
}
