/**
 * Minimal ACPI tables so a Linux guest built without the MP-table parser
 * (such as Debian's cloud kernel) finds every vCPU: RSDP (rev 2) → XSDT →
 * FADT (hardware-reduced ACPI, pointing at an empty DSDT) and MADT (one
 * local APIC per vCPU, the IOAPIC with GSI base 0, LINT1 = NMI). The ISA
 * IRQs map 1:1 to IOAPIC pins, which is how KVM's default routing wires
 * them, so no interrupt source overrides are needed.
 *
 * Power: the FADT's reset register is Hangar's power port with the value
 * POWER_RESET (Linux `reboot=a`), and its sleep control/status registers are
 * two I/O ports where an S5 request powers the VM off; the DSDT's \_S5
 * package tells the guest which sleep type S5 is.
 *
 * Legacy devices: hardware-reduced ACPI means Linux sets up no legacy PIC
 * and hands out ISA interrupts only to devices the DSDT describes. So the
 * DSDT names COM1 (PNP0501, ports 0x3f8-0x3ff, IRQ 4) and the i8042 keyboard
 * controller (PNP0303, ports 0x60 and 0x64, IRQ 1); without them the serial
 * console never gets its interrupt and user space has no console.
 *
 * Power button: hardware-reduced ACPI has no fixed power button, so the DSDT
 * has a power button device (PNP0C0C, driven by Linux's `button` driver) and
 * a Generic Event Device (ACPI0013) on ACPI_GED_GSI whose _EVT method
 * notifies it (0x80: pressed). Pulsing that GSI is how hangar-vmm asks a
 * guest to shut down gracefully; the guest's acpid sees KEY_POWER.
 *
 * virtio-mmio: each slot in use is a device with _HID "LNRO0005", its MMIO
 * window (Memory32Fixed) and its GSI (an extended Interrupt descriptor,
 * level triggered and active high, as the transport holds its line up while
 * the interrupt status is non-zero). Linux's virtio_mmio driver binds to
 * these by itself, module or built in, without `virtio_mmio.device=`.
 */
import type { GuestRam } from '../memory.js';
import { writeResetVector } from './reset-vector.js';
import { device, eisaId, extendedInterrupt, integer, ioPort, irqNoFlags, memory32Fixed, method, name, notify, pkg, resourceTemplate, scope, string } from './aml.js';
import {
  ACPI_GED_GSI, ACPI_RSDP, ACPI_S5_SLEEP_TYPE, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT, ACPI_TABLES_END, I8042_COMMAND_PORT, I8042_DATA_PORT, I8042_KBD_IRQ, IOAPIC_BASE,
  LAPIC_BASE, POWER_PORT, POWER_RESET, SERIAL_COM1_IRQ, SERIAL_COM1_PORT, SERIAL_PORT_COUNT, type MmioSlot,
} from '../layout.js';

/** The ACPI id Linux's virtio_mmio driver matches (its ACPI match table), as microVMs on ACPI use it. */
export const VIRTIO_MMIO_HID = 'LNRO0005';
/** The Generic Event Device's _HID (ACPI 6.5, 5.6.9) and the power button's (PNP0C0C). */
export const GED_HID = 'ACPI0013';
export const POWER_BUTTON_HID = 'PNP0C0C';
/** Notify value for a button device: "pressed" (ACPI 6.5, 5.6.6). */
export const BUTTON_PRESSED = 0x80;

const OEM_ID = 'HANGAR';
const OEM_TABLE_ID = 'HANGARVM';
const CREATOR_ID = 'HNGR';

function checksum(b: Uint8Array): number {
  let s = 0;
  for (const x of b) s = (s + x) & 0xff;
  return (0x100 - s) & 0xff;
}

/** A system description table: the 36-byte common header + body, checksummed. */
function sdt(signature: string, revision: number, body: Uint8Array): Uint8Array {
  const t = new Uint8Array(36 + body.length);
  const dv = new DataView(t.buffer);
  t.set(Buffer.from(signature, 'latin1'), 0);
  dv.setUint32(4, t.length, true);
  t[8] = revision;
  t.set(Buffer.from(OEM_ID.padEnd(6), 'latin1'), 10);
  t.set(Buffer.from(OEM_TABLE_ID.padEnd(8), 'latin1'), 16);
  dv.setUint32(24, 1, true);
  t.set(Buffer.from(CREATOR_ID, 'latin1'), 28);
  dv.setUint32(32, 1, true);
  t.set(body, 36);
  t[9] = checksum(t);
  return t;
}

function madt(cpus: number): Uint8Array {
  const entries: number[] = [];
  const u32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
  for (let i = 0; i < cpus; i++) entries.push(0, 8, i, i, ...u32(1)); // Processor Local APIC, enabled
  entries.push(1, 12, cpus, 0, ...u32(IOAPIC_BASE), ...u32(0)); // IOAPIC id = cpus, GSI base 0
  entries.push(4, 6, 0xff, 0, 0, 1); // Local APIC NMI: all processors, flags 0, LINT1
  const body = new Uint8Array(8 + entries.length);
  const dv = new DataView(body.buffer);
  dv.setUint32(0, LAPIC_BASE, true);
  dv.setUint32(4, 1, true); // PCAT_COMPAT: 8259 PICs present
  body.set(entries, 8);
  return sdt('APIC', 5, body);
}

/** A Generic Address Structure for a byte-wide I/O port. */
function gasIo(dv: DataView, off: number, port: number): void {
  dv.setUint8(off, 1); // SystemIO
  dv.setUint8(off + 1, 8); // bit width
  dv.setUint8(off + 2, 0); // bit offset
  dv.setUint8(off + 3, 1); // byte access
  dv.setBigUint64(off + 4, BigInt(port), true);
}

/**
 * DSDT body in AML:
 *   Name (_S5, Package (4) { S5 type, 0, 0, 0 })
 *   Scope (\_SB) {
 *     Device (COM1) { _HID PNP0501, _UID 1, _CRS { IO 0x3f8-0x3ff, IRQ 4 } }
 *     Device (KBD)  { _HID PNP0303, _CRS { IO 0x60, IO 0x64, IRQ 1 } }
 *     Device (VR0n) { _HID "LNRO0005", _UID n, _CRS { Memory32Fixed base/size, Interrupt GSI } } per virtio slot
 *     Device (PWRB) { _HID PNP0C0C, _UID 0 }
 *     Device (GED0) { _HID "ACPI0013", _UID 0, _CRS { Interrupt (Edge) { ACPI_GED_GSI } },
 *                     Method (_EVT, 1) { Notify (\_SB.PWRB, 0x80) } }
 *   }
 */
export function dsdtAml(virtioSlots: readonly MmioSlot[] = []): Uint8Array {
  const s5 = name('_S5', pkg([integer(ACPI_S5_SLEEP_TYPE), integer(0), integer(0), integer(0)]));
  const com1 = device('COM1', [
    name('_HID', eisaId('PNP0501')),
    name('_UID', integer(1)),
    name('_CRS', resourceTemplate([ioPort(SERIAL_COM1_PORT, SERIAL_COM1_PORT, 1, SERIAL_PORT_COUNT), irqNoFlags([SERIAL_COM1_IRQ])])),
  ]);
  const kbd = device('KBD', [
    name('_HID', eisaId('PNP0303')),
    name('_CRS', resourceTemplate([ioPort(I8042_DATA_PORT, I8042_DATA_PORT, 1, 1), ioPort(I8042_COMMAND_PORT, I8042_COMMAND_PORT, 1, 1), irqNoFlags([I8042_KBD_IRQ])])),
  ]);
  const virtio = virtioSlots.map((slot) => device(`VR${slot.index.toString(16).toUpperCase().padStart(2, '0')}`, [
    name('_HID', string(VIRTIO_MMIO_HID)),
    name('_UID', integer(slot.index)),
    name('_CRS', resourceTemplate([memory32Fixed(slot.base, slot.size), extendedInterrupt([slot.irq], { level: true })])),
  ]));
  const pwrb = device('PWRB', [name('_HID', eisaId(POWER_BUTTON_HID)), name('_UID', integer(0))]);
  // One event source so far (the power button): _EVT need not look at its argument (the GSI).
  const ged = device('GED0', [
    name('_HID', string(GED_HID)),
    name('_UID', integer(0)),
    name('_CRS', resourceTemplate([extendedInterrupt([ACPI_GED_GSI], { level: false })])),
    method('_EVT', 1, [notify('\\_SB.PWRB', BUTTON_PRESSED)]),
  ]);
  const sb = scope('\\_SB', [com1, kbd, ...virtio, pwrb, ged]);
  const out = new Uint8Array(s5.length + sb.length);
  out.set(s5, 0);
  out.set(sb, s5.length);
  return out;
}

function fadt(dsdtAddr: number): Uint8Array {
  // FADT revision 6: 276 bytes in all, so 240 after the header.
  const body = new Uint8Array(276 - 36);
  const dv = new DataView(body.buffer);
  const at = (off: number) => off - 36;
  dv.setUint32(at(40), dsdtAddr, true); // DSDT
  // IAPC_BOOT_ARCH: 8042, no VGA, no ASPM, no CMOS RTC. The RTC at 0x70/0x71 is there for the
  // kernel's boot-time clock read; "not present" keeps the rtc-cmos driver (alarms on IRQ 8) away.
  dv.setUint16(at(109), (1 << 1) | (1 << 2) | (1 << 4) | (1 << 5), true);
  dv.setUint32(at(112), (1 << 20) | (1 << 10), true); // Flags: HW_REDUCED_ACPI, RESET_REG_SUP
  gasIo(dv, at(116), POWER_PORT); // RESET_REG
  body[at(128)] = POWER_RESET; // RESET_VALUE
  gasIo(dv, at(244), ACPI_SLEEP_CONTROL_PORT); // SLEEP_CONTROL_REG
  gasIo(dv, at(256), ACPI_SLEEP_STATUS_PORT); // SLEEP_STATUS_REG
  body[at(131)] = 5; // FADT minor version (6.5)
  dv.setBigUint64(at(140), BigInt(dsdtAddr), true); // X_DSDT
  return sdt('FACP', 6, body);
}

/**
 * Writes the tables at ACPI_RSDP (the DSDT naming `virtioSlots`) and returns the RSDP address (for boot_params.acpi_rsdp_addr).
 * Also places the reset stub at the BIOS reset vector: with hardware-reduced ACPI, that is
 * where a Linux guest's default reboot ends up (see reset-vector.ts).
 */
export function writeAcpiTables(mem: GuestRam, cpus: number, virtioSlots: readonly MmioSlot[] = []): number {
  writeResetVector(mem);
  let next = ACPI_RSDP + 64; // the RSDP is 36 bytes; keep tables 16-byte aligned after it
  const place = (t: Uint8Array): number => {
    const addr = next;
    if (addr + t.length > ACPI_TABLES_END) throw new RangeError('ACPI tables do not fit their area');
    mem.write(addr, t);
    next = (addr + t.length + 15) & ~15;
    return addr;
  };
  const dsdtAddr = place(sdt('DSDT', 2, dsdtAml(virtioSlots)));
  const fadtAddr = place(fadt(dsdtAddr));
  const madtAddr = place(madt(cpus));
  const xsdtBody = new Uint8Array(16);
  new DataView(xsdtBody.buffer).setBigUint64(0, BigInt(fadtAddr), true);
  new DataView(xsdtBody.buffer).setBigUint64(8, BigInt(madtAddr), true);
  const xsdtAddr = place(sdt('XSDT', 1, xsdtBody));

  const rsdp = new Uint8Array(36);
  const dv = new DataView(rsdp.buffer);
  rsdp.set(Buffer.from('RSD PTR ', 'latin1'), 0);
  rsdp.set(Buffer.from(OEM_ID, 'latin1'), 9);
  rsdp[15] = 2; // ACPI 2.0+
  dv.setUint32(20, 36, true);
  dv.setBigUint64(24, BigInt(xsdtAddr), true);
  rsdp[8] = checksum(rsdp.subarray(0, 20));
  rsdp[32] = checksum(rsdp);
  mem.write(ACPI_RSDP, rsdp);
  return ACPI_RSDP;
}
