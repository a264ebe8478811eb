/**
 * Every fixed guest-physical address, I/O port and IRQ of a Hangar microVM,
 * in one place. The boot layout follows the conventional Linux direct-boot
 * placement (zero page at 0x7000, command line at 0x20000, page tables at
 * 0x9000, kernel at 1 MiB).
 *
 *   0x0000_0000  real-mode IVT/BDA (RAM, left zero)
 *   0x0000_0500  boot GDT (4 entries)
 *   0x0000_0520  boot IDT (empty, limit 0)
 *   0x0000_7000  zero page (struct boot_params)
 *   0x0000_8ff0  boot stack top (grows down)
 *   0x0000_9000  PML4, 0xa000 PDPT, 0xb000..0xefff four PDs (identity, 2 MiB pages, 4 GiB)
 *   0x0002_0000  kernel command line (up to CMDLINE_MAX bytes)
 *   0x0009_fc00  EBDA: MP floating pointer + MP configuration table
 *   0x000a_0000  legacy hole, reserved in e820 up to 1 MiB
 *   0x000e_0000  ACPI: RSDP, then XSDT, FADT, DSDT, MADT (inside the legacy hole)
 *   0x0010_0000  kernel (bzImage protected-mode part; ELF at its own addresses)
 *   ...          initrd at the top of RAM, page aligned
 *   0xd000_0000  virtio-mmio slots, 0x1000 each
 *   0xfec0_0000  IOAPIC, 0xfee0_0000 local APIC (in-kernel irqchip)
 *   0xfffb_c000  KVM identity-map page, 0xfffb_d000 KVM TSS (3 pages)
 */

export const PAGE_SIZE = 0x1000;

export const BOOT_GDT = 0x500;
export const BOOT_IDT = 0x520;
export const ZERO_PAGE = 0x7000;
export const BOOT_STACK_TOP = 0x8ff0;
export const PML4 = 0x9000;
export const PDPT = 0xa000;
export const PD_BASE = 0xb000;
/** How many 1 GiB page directories the boot page tables fill (identity map of the first 4 GiB). */
export const PD_COUNT = 4;
export const CMDLINE = 0x20000;
export const CMDLINE_MAX = 4096;
export const EBDA_START = 0x9fc00;
export const MPTABLE_START = EBDA_START;
export const LEGACY_HOLE_START = 0xa0000;
/** ACPI tables: the RSDP first (where the legacy BIOS-area scan finds it), the other tables after it. */
export const ACPI_RSDP = 0xe0000;
export const ACPI_TABLES_END = 0xf0000;
export const HIMEM_START = 0x100000;
export const KERNEL_LOAD = HIMEM_START;

/** Guest RAM must end below the MMIO gap (one contiguous slot from 0). */
export const MMIO_GAP_START = 0xc000_0000;
export const MAX_RAM = MMIO_GAP_START;
export const MIN_RAM = 16 * 1024 * 1024;
/** Guest RAM is mapped in 2 MiB pages: its size is a whole number of them. */
export const RAM_GRANULARITY = 2 * 1024 * 1024;
export const MAX_VCPUS = 32;

export const IOAPIC_BASE = 0xfec0_0000;
export const LAPIC_BASE = 0xfee0_0000;
export const KVM_IDENTITY_MAP = 0xfffb_c000;
export const KVM_TSS = 0xfffb_d000;

/** Boot GDT selectors (index × 8). */
export const GDT_CODE64 = 0x10;
export const GDT_DATA = 0x18;
export const GDT_TSS = 0x20;

/** Legacy ISA devices. */
export const SERIAL_COM1_PORT = 0x3f8;
export const SERIAL_COM1_IRQ = 4;
export const SERIAL_PORT_COUNT = 8;
export const I8042_DATA_PORT = 0x60;
export const I8042_COMMAND_PORT = 0x64;
export const I8042_KBD_IRQ = 1;
/**
 * Hangar's power port (in the spirit of QEMU's isa-debug-exit): a guest
 * writes a byte to end the VM: 0 power off, 1 reset, 2 panic (crashed). Test guests use it;
 * Linux never touches it.
 */
export const POWER_PORT = 0x600;
export const POWER_OFF = 0;
export const POWER_RESET = 1;
/** A guest that detected its own failure (test guests' panic path): the VM ends as crashed. */
export const POWER_PANIC = 2;
/** ACPI hardware-reduced sleep registers (FADT SLEEP_CONTROL_REG / SLEEP_STATUS_REG): S5 = power off. */
export const ACPI_SLEEP_CONTROL_PORT = 0x604;
export const ACPI_SLEEP_STATUS_PORT = 0x605;
/** The sleep type a guest writes for S5 (soft off); the DSDT's \_S5 package says so. */
export const ACPI_S5_SLEEP_TYPE = 5;
/**
 * The ACPI Generic Event Device's interrupt (hardware-reduced ACPI has no fixed power button
 * and no SCI): an IOAPIC-only GSI, above the ISA range, edge triggered. hangar-vmm pulses it
 * to press the power button; the DSDT's GED _EVT method then notifies the PNP0C0C button.
 */
export const ACPI_GED_GSI = 16;
/** Port 0x80, the POST code port Linux writes to for I/O delays: accepted and ignored. */
export const POST_PORT = 0x80;

/** virtio-mmio transport slots: base = VIRTIO_MMIO_BASE + i × VIRTIO_MMIO_SIZE, IRQ = VIRTIO_MMIO_IRQS[i]. */
export const VIRTIO_MMIO_BASE = 0xd000_0000;
export const VIRTIO_MMIO_SIZE = 0x1000;
export const VIRTIO_MMIO_IRQS = [5, 6, 7, 9, 10, 11, 14, 15] as const;
export const VIRTIO_MMIO_SLOTS = VIRTIO_MMIO_IRQS.length;

export interface MmioSlot {
  index: number;
  base: number;
  size: number;
  irq: number;
}

export function virtioMmioSlot(index: number): MmioSlot {
  if (!Number.isInteger(index) || index < 0 || index >= VIRTIO_MMIO_SLOTS) throw new RangeError(`virtio-mmio slot ${index} out of range 0..${VIRTIO_MMIO_SLOTS - 1}`);
  return { index, base: VIRTIO_MMIO_BASE + index * VIRTIO_MMIO_SIZE, size: VIRTIO_MMIO_SIZE, irq: VIRTIO_MMIO_IRQS[index]! };
}

/** The kernel command-line fragment that tells Linux about one virtio-mmio device. */
export function virtioMmioCmdline(slot: MmioSlot): string {
  return `virtio_mmio.device=${slot.size / 1024}K@0x${slot.base.toString(16)}:${slot.irq}`;
}

/** e820 entry types. */
export const E820_RAM = 1;
export const E820_RESERVED = 2;

export interface E820Entry {
  addr: number;
  size: number;
  type: number;
}

/** The memory map Hangar reports to a guest with `ramBytes` of RAM. */
export function e820Map(ramBytes: number): E820Entry[] {
  return [
    { addr: 0, size: EBDA_START, type: E820_RAM },
    { addr: EBDA_START, size: HIMEM_START - EBDA_START, type: E820_RESERVED },
    { addr: HIMEM_START, size: ramBytes - HIMEM_START, type: E820_RAM },
  ];
}
