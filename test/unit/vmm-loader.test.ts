/**
 * The Linux direct-boot loader and the fixed layout, without KVM: an ELF
 * test guest and the same guest wrapped as a bzImage are loaded into guest
 * RAM, and the zero page, command line, initrd placement, e820 map and MP
 * table are checked byte by byte against the boot protocol.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GuestRam } from '../../src/vmm/memory.js';
import { BP, HDRS_MAGIC, loadLinux } from '../../src/vmm/boot/loader.js';
import { buildMpTable } from '../../src/vmm/boot/mptable.js';
import { writeAcpiTables } from '../../src/vmm/boot/acpi.js';
import { writePageTables, gdtEntry } from '../../src/vmm/boot/x86.js';
import * as L from '../../src/vmm/layout.js';
import { GuestMemoryError } from '../../src/vmm/devices/device.js';
import { buildGuest, makeBzImage } from '../helpers/vmm.js';

let dir = '';
let elf = '';
let bz = '';
const MEM = 64 * 2 ** 20;

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-loader-'));
  elf = buildGuest('hello');
  bz = path.join(dir, 'hello.bzImage');
  makeBzImage(elf, bz);
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function zeroPage(mem: GuestRam): DataView {
  const z = mem.slice(L.ZERO_PAGE, 4096);
  return new DataView(z.buffer, z.byteOffset, z.byteLength);
}

test('ELF guest: loaded at its physical address, Hangar SMP note seen, zero page filled', () => {
  const mem = GuestRam.allocate(MEM);
  try {
    const k = loadLinux(mem, { kernelPath: elf, cmdline: 'console=ttyS0 x=1' });
    assert.equal(k.kind, 'elf');
    assert.equal(k.entry, 0x100000);
    assert.equal(k.apsAtEntry, true);
    const raw = fs.readFileSync(elf);
    const textOff = Number(raw.readBigUInt64LE(Number(raw.readBigUInt64LE(32)) + 8));
    assert.deepEqual([...mem.slice(0x100000, 16)], [...raw.subarray(textOff, textOff + 16)]);
    const z = zeroPage(mem);
    assert.equal(z.getUint16(BP.boot_flag, true), 0xaa55);
    assert.equal(z.getUint32(BP.header, true), HDRS_MAGIC);
    assert.equal(z.getUint8(BP.type_of_loader), 0xff);
    assert.equal(z.getUint32(BP.cmd_line_ptr, true), L.CMDLINE);
    assert.equal(Buffer.from(mem.slice(L.CMDLINE, 18)).toString('latin1'), 'console=ttyS0 x=1\0');
    assert.equal(z.getUint8(BP.sentinel), 0);
    const n = z.getUint8(BP.e820_entries);
    const e820 = Array.from({ length: n }, (_, i) => ({
      addr: Number(z.getBigUint64(BP.e820_table + 20 * i, true)), size: Number(z.getBigUint64(BP.e820_table + 20 * i + 8, true)), type: z.getUint32(BP.e820_table + 20 * i + 16, true),
    }));
    assert.deepEqual(e820, L.e820Map(MEM));
    assert.deepEqual(e820, [
      { addr: 0, size: 0x9fc00, type: 1 },
      { addr: 0x9fc00, size: 0x100000 - 0x9fc00, type: 2 },
      { addr: 0x100000, size: MEM - 0x100000, type: 1 },
    ]);
  } finally {
    mem.free();
  }
});

test('bzImage: protected-mode part at 1 MiB, 64-bit entry at +0x200, setup header copied, initrd at the top of RAM', () => {
  const mem = GuestRam.allocate(MEM);
  const rd = path.join(dir, 'initrd');
  fs.writeFileSync(rd, Buffer.alloc(10_000, 0xab));
  try {
    const k = loadLinux(mem, { kernelPath: bz, initrdPath: rd, cmdline: 'hello' });
    assert.equal(k.kind, 'bzimage');
    assert.equal(k.entry, 0x100200);
    assert.equal(k.apsAtEntry, false);
    const img = fs.readFileSync(bz);
    assert.deepEqual([...mem.slice(0x100000, 32)], [...img.subarray(1024, 1056)]);
    const z = zeroPage(mem);
    assert.equal(z.getUint16(BP.version, true), 0x020f);
    assert.equal(z.getUint16(BP.xloadflags, true) & 1, 1);
    assert.equal(z.getUint8(BP.loadflags) & 0x81, 0x81, 'LOADED_HIGH and CAN_USE_HEAP');
    assert.equal(z.getUint32(BP.ramdisk_size, true), 10_000);
    const addr = z.getUint32(BP.ramdisk_image, true);
    assert.equal(addr % 4096, 0);
    assert.ok(addr + 10_000 <= MEM && addr + 10_000 > MEM - 4096);
    assert.equal(mem.readU8(addr + 9_999), 0xab);
  } finally {
    mem.free();
  }
});

test('loader rejects what it cannot boot, with INVALID_ARGUMENT or NOT_FOUND', () => {
  const mem = GuestRam.allocate(MEM);
  try {
    const junk = path.join(dir, 'junk');
    fs.writeFileSync(junk, Buffer.alloc(4096, 1));
    assert.throws(() => loadLinux(mem, { kernelPath: junk, cmdline: '' }), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT');
    assert.throws(() => loadLinux(mem, { kernelPath: path.join(dir, 'missing'), cmdline: '' }), (e: Error & { code?: string }) => e.code === 'NOT_FOUND');
    assert.throws(() => loadLinux(mem, { kernelPath: elf, cmdline: 'x'.repeat(5000) }), /command line/);
    // An ELF whose segment lies beyond RAM.
    const small = GuestRam.allocate(1 << 20);
    try {
      assert.throws(() => loadLinux(small, { kernelPath: elf, cmdline: '' }), /does not fit/);
    } finally {
      small.free();
    }
  } finally {
    mem.free();
  }
});

test('guest memory accessors are bounds-checked', () => {
  const mem = GuestRam.allocate(2 << 20);
  try {
    mem.writeU64(8, 0x1122334455667788n);
    assert.equal(mem.readU32(8), 0x55667788);
    assert.throws(() => mem.readU32(mem.size - 2), GuestMemoryError);
    assert.throws(() => mem.slice(-1, 4), GuestMemoryError);
    assert.throws(() => mem.slice(2n ** 63n, 1), GuestMemoryError);
    assert.throws(() => mem.writeU16(mem.size, 1), GuestMemoryError);
    assert.equal(mem.slice(mem.size - 4, 4).length, 4);
    // bigint addresses (as read from descriptors) take the same checks
    assert.equal(mem.slice(BigInt(mem.size - 4), 4).length, 4);
    assert.throws(() => mem.slice(BigInt(mem.size - 3), 4), GuestMemoryError);
    assert.throws(() => mem.slice(2n ** 64n - 1n, 1), GuestMemoryError);
    assert.throws(() => mem.slice(-1n, 1), GuestMemoryError);
    // lengths and addresses that are not whole non-negative numbers
    assert.throws(() => mem.slice(0, -1), GuestMemoryError);
    assert.throws(() => mem.slice(0, 1.5), GuestMemoryError);
    assert.throws(() => mem.slice(1.5, 1), GuestMemoryError);
    assert.throws(() => mem.slice(Number.NaN, 1), GuestMemoryError);
    assert.throws(() => mem.slice(2 ** 53, 1), GuestMemoryError);
    assert.equal(mem.slice(mem.size, 0).length, 0);
  } finally {
    mem.free();
  }
});

test('boot page tables identity-map 4 GiB with 2 MiB pages; boot GDT descriptors', () => {
  const mem = GuestRam.allocate(MEM);
  try {
    writePageTables(mem);
    assert.equal(mem.readU64(L.PML4), BigInt(L.PDPT) | 3n);
    assert.equal(mem.readU64(L.PDPT + 3 * 8), BigInt(L.PD_BASE + 3 * 0x1000) | 3n);
    assert.equal(mem.readU64(L.PD_BASE + 0x1000 + 5 * 8), (1n << 30n) | (5n << 21n) | 0x83n);
    assert.equal(gdtEntry(0xa09b, 0, 0xfffff), 0x00af9b000000ffffn);
    assert.equal(gdtEntry(0xc093, 0, 0xfffff), 0x00cf93000000ffffn);
  } finally {
    mem.free();
  }
});

test('MP table: checksums, one processor entry per vCPU, BSP flagged, fits the EBDA', () => {
  const t = buildMpTable(4);
  const sum = (b: Uint8Array) => b.reduce((a, x) => (a + x) & 0xff, 0);
  assert.equal(Buffer.from(t.subarray(0, 4)).toString('latin1'), '_MP_');
  assert.equal(sum(t.subarray(0, 16)), 0);
  const dv = new DataView(t.buffer, t.byteOffset);
  assert.equal(dv.getUint32(4, true), L.MPTABLE_START + 16);
  const len = dv.getUint16(16 + 4, true);
  assert.equal(Buffer.from(t.subarray(16, 20)).toString('latin1'), 'PCMP');
  assert.equal(sum(t.subarray(16, 16 + len)), 0);
  const cpus = [];
  let o = 16 + 44;
  while (o < 16 + len) {
    const type = t[o]!;
    if (type === 0) { cpus.push({ apic: t[o + 1]!, flags: t[o + 3]! }); o += 20; } else o += 8;
  }
  assert.deepEqual(cpus, [{ apic: 0, flags: 3 }, { apic: 1, flags: 1 }, { apic: 2, flags: 1 }, { apic: 3, flags: 1 }]);
  assert.ok(buildMpTable(L.MAX_VCPUS).length <= L.LEGACY_HOLE_START - L.MPTABLE_START);
});

test('virtio-mmio slots: distinct IRQs, 4 KiB apart, command-line fragment', () => {
  const s = L.virtioMmioSlot(1);
  assert.deepEqual(s, { index: 1, base: 0xd0001000, size: 0x1000, irq: 6 });
  assert.equal(L.virtioMmioCmdline(L.virtioMmioSlot(0)), 'virtio_mmio.device=4K@0xd0000000:5');
  assert.equal(new Set(L.VIRTIO_MMIO_IRQS).size, L.VIRTIO_MMIO_SLOTS);
  assert.ok(!(L.VIRTIO_MMIO_IRQS as readonly number[]).includes(L.SERIAL_COM1_IRQ));
  assert.throws(() => L.virtioMmioSlot(L.VIRTIO_MMIO_SLOTS));
});

test('ACPI: RSDP → XSDT → FACP (hardware-reduced, DSDT) and MADT with one enabled LAPIC per vCPU; all checksums zero', () => {
  const mem = GuestRam.allocate(MEM);
  try {
    const rsdp = writeAcpiTables(mem, 3);
    assert.equal(rsdp, L.ACPI_RSDP);
    const sum = (b: Uint8Array) => b.reduce((a, x) => (a + x) & 0xff, 0);
    const r = mem.slice(rsdp, 36);
    assert.equal(Buffer.from(r.subarray(0, 8)).toString('latin1'), 'RSD PTR ');
    assert.equal(sum(r.subarray(0, 20)), 0);
    assert.equal(sum(r), 0);
    assert.equal(r[15], 2);
    const table = (addr: number) => {
      const len = mem.readU32(addr + 4);
      const t = mem.slice(addr, len);
      assert.equal(sum(t), 0, `checksum of ${Buffer.from(t.subarray(0, 4)).toString('latin1')}`);
      return { sig: Buffer.from(t.subarray(0, 4)).toString('latin1'), t, len };
    };
    const xsdt = table(Number(mem.readU64(rsdp + 24)));
    assert.equal(xsdt.sig, 'XSDT');
    const entries = (xsdt.len - 36) / 8;
    const subs = Array.from({ length: entries }, (_, i) => table(Number(mem.readU64(Number(mem.readU64(rsdp + 24)) + 36 + 8 * i))));
    assert.deepEqual(subs.map((s) => s.sig), ['FACP', 'APIC']);
    const facp = subs[0]!;
    const fdv = new DataView(facp.t.buffer, facp.t.byteOffset);
    assert.equal((fdv.getUint32(112, true) >>> 20) & 1, 1, 'HW_REDUCED_ACPI');
    assert.equal((fdv.getUint32(112, true) >>> 10) & 1, 1, 'RESET_REG_SUP');
    assert.deepEqual([facp.t[116], Number(fdv.getBigUint64(120, true)), facp.t[128]], [1, L.POWER_PORT, L.POWER_RESET], 'reset register = power port, value reset');
    assert.equal(Number(fdv.getBigUint64(248, true)), L.ACPI_SLEEP_CONTROL_PORT);
    assert.equal(Number(fdv.getBigUint64(260, true)), L.ACPI_SLEEP_STATUS_PORT);
    const dsdt = table(Number(fdv.getBigUint64(140, true)));
    assert.equal(dsdt.sig, 'DSDT');
    assert.deepEqual([...dsdt.t.subarray(36, 46)], [0x08, 0x5f, 0x53, 0x35, 0x5f, 0x12, 0x07, 0x04, 0x0a, L.ACPI_S5_SLEEP_TYPE], 'Name(_S5_, Package(4){5,0,0,0})');
    const madt = subs[1]!;
    const lapics: number[] = [];
    let ioapic = -1;
    for (let o = 44; o < madt.len; o += madt.t[o + 1]!) {
      if (madt.t[o] === 0 && (madt.t[o + 4]! & 1)) lapics.push(madt.t[o + 3]!);
      if (madt.t[o] === 1) ioapic = new DataView(madt.t.buffer, madt.t.byteOffset).getUint32(o + 4, true);
    }
    assert.deepEqual(lapics, [0, 1, 2]);
    assert.equal(ioapic, L.IOAPIC_BASE);
  } finally {
    mem.free();
  }
});

test('guest page walk (for crash reports): 2 MiB pages, 4 KiB pages, unmapped and hostile tables', async () => {
  const { translate } = await import('../../src/vmm/pagewalk.js');
  const mem = GuestRam.allocate(MEM);
  try {
    writePageTables(mem);
    assert.equal(translate(mem, BigInt(L.PML4), 0x123456n), 0x123456n);
    assert.equal(translate(mem, BigInt(L.PML4), (3n << 30n) | 0x1234n), (3n << 30n) | 0x1234n);
    assert.equal(translate(mem, BigInt(L.PML4), 1n << 39n), null, 'PML4 slot 1 is not present');
    // A 4 KiB mapping: PD entry 10 → page table at 0x200000 whose entry 3 maps 0x300000.
    mem.writeU64(L.PD_BASE + 10 * 8, 0x200000n | 3n);
    mem.writeU64(0x200000 + 3 * 8, 0x300000n | 3n);
    assert.equal(translate(mem, BigInt(L.PML4), (10n << 21n) | (3n << 12n) | 0x42n), 0x300042n);
    // Hostile: a table pointer far outside RAM answers null instead of throwing.
    mem.writeU64(L.PD_BASE + 11 * 8, 0xfff000000n | 3n);
    assert.equal(translate(mem, BigInt(L.PML4), 11n << 21n), null);
  } finally {
    mem.free();
  }
});
