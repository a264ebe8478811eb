/**
 * The AML encoder (aml.ts) and the DSDT hangar-vmm builds from it. The DSDT
 * is decoded here by an independent little AML reader, following the
 * XSDT → FADT → DSDT chain in guest memory, and must describe COM1 (PNP0501,
 * 0x3f8-0x3ff, IRQ 4) and the i8042 (PNP0303, 0x60 and 0x64, IRQ 1): without
 * them a Linux guest with hardware-reduced ACPI has no console interrupt.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '../../src/vmm/boot/aml.js';
import { writeAcpiTables } from '../../src/vmm/boot/acpi.js';
import { GuestRam } from '../../src/vmm/memory.js';
import * as L from '../../src/vmm/layout.js';

// ---- an independent AML reader for the subset a DSDT of ours may use -------

type Value = { int: bigint } | { str: string } | { buf: Uint8Array } | { pkg: Value[] };
interface Node { kind: 'scope' | 'device'; name: string; names: Map<string, Value>; children: Node[]; methods?: Map<string, { args: number; body: Uint8Array }> }

function readPkgLength(b: Uint8Array, at: number): { len: number; size: number } {
  const lead = b[at]!;
  const extra = lead >> 6;
  if (extra === 0) return { len: lead & 0x3f, size: 1 };
  let len = lead & 0x0f;
  for (let i = 0; i < extra; i++) len |= b[at + 1 + i]! << (4 + 8 * i);
  return { len, size: 1 + extra };
}

function readName(b: Uint8Array, at: number): { name: string; size: number } {
  let p = at;
  let prefix = '';
  if (b[p] === 0x5c) { prefix = '\\'; p++; }
  let count = 1;
  if (b[p] === 0x2e) { count = 2; p++; } else if (b[p] === 0x2f) { count = b[p + 1]!; p += 2; } else if (b[p] === 0x00) { return { name: prefix, size: p + 1 - at }; }
  const segs: string[] = [];
  for (let i = 0; i < count; i++) { segs.push(Buffer.from(b.subarray(p, p + 4)).toString('latin1')); p += 4; }
  return { name: prefix + segs.join('.'), size: p - at };
}

function readData(b: Uint8Array, at: number): { v: Value; size: number } {
  const op = b[at]!;
  const le = (n: number) => { let v = 0n; for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[at + 1 + i]!); return v; };
  switch (op) {
    case 0x00: return { v: { int: 0n }, size: 1 };
    case 0x01: return { v: { int: 1n }, size: 1 };
    case 0xff: return { v: { int: 0xffff_ffff_ffff_ffffn }, size: 1 };
    case 0x0a: return { v: { int: le(1) }, size: 2 };
    case 0x0b: return { v: { int: le(2) }, size: 3 };
    case 0x0c: return { v: { int: le(4) }, size: 5 };
    case 0x0e: return { v: { int: le(8) }, size: 9 };
    case 0x0d: { const end = b.indexOf(0, at + 1); return { v: { str: Buffer.from(b.subarray(at + 1, end)).toString('latin1') }, size: end + 1 - at }; }
    case 0x11: {
      const pl = readPkgLength(b, at + 1);
      const n = readData(b, at + 1 + pl.size);
      const start = at + 1 + pl.size + n.size;
      const end = at + 1 + pl.len;
      const declared = Number((n.v as { int: bigint }).int);
      assert.ok(declared <= end - start, 'buffer size fits its package');
      return { v: { buf: b.slice(start, end) }, size: 1 + pl.len };
    }
    case 0x12: {
      const pl = readPkgLength(b, at + 1);
      const count = b[at + 1 + pl.size]!;
      const els: Value[] = [];
      let p = at + 1 + pl.size + 1;
      const end = at + 1 + pl.len;
      while (p < end) { const e = readData(b, p); els.push(e.v); p += e.size; }
      assert.equal(p, end, 'package elements end where its length says');
      assert.equal(els.length, count, 'package element count');
      return { v: { pkg: els }, size: 1 + pl.len };
    }
    default: throw new Error(`unexpected AML data opcode 0x${op.toString(16)} at ${at}`);
  }
}

function readTerms(b: Uint8Array, start: number, end: number, into: Node): void {
  let p = start;
  while (p < end) {
    const op = b[p]!;
    if (op === 0x08) {
      const n = readName(b, p + 1);
      const d = readData(b, p + 1 + n.size);
      into.names.set(n.name, d.v);
      p += 1 + n.size + d.size;
    } else if (op === 0x10 || (op === 0x5b && b[p + 1] === 0x82)) {
      const opLen = op === 0x10 ? 1 : 2;
      const pl = readPkgLength(b, p + opLen);
      const n = readName(b, p + opLen + pl.size);
      const node: Node = { kind: op === 0x10 ? 'scope' : 'device', name: n.name, names: new Map(), children: [] };
      const bodyEnd = p + opLen + pl.len;
      assert.ok(bodyEnd <= end, `${node.kind} ${n.name} ends inside its parent`);
      readTerms(b, p + opLen + pl.size + n.size, bodyEnd, node);
      into.children.push(node);
      p = bodyEnd;
    } else if (op === 0x14) {
      // Method: PkgLength, NameString, flags (argument count in bits 0-2), then its body, kept raw.
      const pl = readPkgLength(b, p + 1);
      const n = readName(b, p + 1 + pl.size);
      const flagsAt = p + 1 + pl.size + n.size;
      const bodyEnd = p + 1 + pl.len;
      assert.ok(bodyEnd <= end, `method ${n.name} ends inside its parent`);
      (into.methods ??= new Map()).set(n.name, { args: b[flagsAt]! & 7, body: b.slice(flagsAt + 1, bodyEnd) });
      p = bodyEnd;
    } else {
      throw new Error(`unexpected AML opcode 0x${op.toString(16)} at ${p}`);
    }
  }
  assert.equal(p, end, 'terms end exactly at their container\'s end');
}

function decodeEisaId(v: number): string {
  const b = [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];
  const c1 = (b[0]! >> 2) & 0x1f, c2 = ((b[0]! & 3) << 3) | (b[1]! >> 5), c3 = b[1]! & 0x1f;
  const hex = ((b[2]! << 8) | b[3]!).toString(16).toUpperCase().padStart(4, '0');
  return String.fromCharCode(c1 + 0x40, c2 + 0x40, c3 + 0x40) + hex;
}

interface Resources {
  io: Array<{ min: number; max: number; len: number; decode16: boolean }>;
  irqs: number[];
  mem32?: Array<{ base: number; size: number; writable: boolean }>;
  ext?: Array<{ gsis: number[]; consumer: boolean; level: boolean; activeLow: boolean; shared: boolean }>;
}

function decodeResources(buf: Uint8Array): Resources {
  const r: Resources = { io: [], irqs: [] };
  let p = 0;
  for (;;) {
    assert.ok(p < buf.length, 'resource template has an end tag');
    const tag = buf[p]!;
    if (tag & 0x80) {
      const len = buf[p + 1]! | (buf[p + 2]! << 8);
      const body = buf.subarray(p + 3, p + 3 + len);
      assert.equal(body.length, len, 'large resource item fits the template');
      const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
      if (tag === 0x86) {
        assert.equal(len, 9, 'Memory32Fixed body is 9 bytes');
        (r.mem32 ??= []).push({ writable: (body[0]! & 1) === 1, base: dv.getUint32(1, true), size: dv.getUint32(5, true) });
      } else if (tag === 0x89) {
        const f = body[0]!, n = body[1]!;
        assert.ok(len >= 2 + 4 * n, 'extended interrupt table fits its item');
        const gsis = Array.from({ length: n }, (_, i) => dv.getUint32(2 + 4 * i, true));
        (r.ext ??= []).push({ gsis, consumer: (f & 1) === 1, level: (f & 2) === 0, activeLow: (f & 4) !== 0, shared: (f & 8) !== 0 });
      } else throw new Error(`unexpected large resource 0x${tag.toString(16)}`);
      p += 3 + len;
      continue;
    }
    const type = (tag >> 3) & 0x0f, len = tag & 7;
    const body = buf.subarray(p + 1, p + 1 + len);
    if (type === 0x0f) { assert.equal(p + 2, buf.length, 'end tag closes the buffer'); return r; }
    if (type === 0x08) r.io.push({ decode16: (body[0]! & 1) === 1, min: body[1]! | (body[2]! << 8), max: body[3]! | (body[4]! << 8), len: body[6]! });
    else if (type === 0x04) { const mask = body[0]! | (body[1]! << 8); for (let i = 0; i < 16; i++) if (mask & (1 << i)) r.irqs.push(i); }
    else throw new Error(`unexpected resource type ${type}`);
    p += 1 + len;
  }
}

/** Follows RSDP → XSDT → FACP → X_DSDT in guest memory and returns the DSDT (checked checksum). */
function dsdtFromMemory(mem: GuestRam, rsdp: number): Uint8Array {
  const sum = (b: Uint8Array) => b.reduce((a, x) => (a + x) & 0xff, 0);
  const table = (addr: number, sig: string) => {
    const hdr = mem.slice(addr, 36);
    assert.equal(Buffer.from(hdr.subarray(0, 4)).toString('latin1'), sig);
    const t = mem.slice(addr, new DataView(hdr.buffer, hdr.byteOffset).getUint32(4, true));
    assert.equal(sum(t), 0, `${sig} checksum`);
    return t;
  };
  const xsdt = table(Number(mem.readU64(rsdp + 24)), 'XSDT');
  const xdv = new DataView(xsdt.buffer, xsdt.byteOffset, xsdt.byteLength);
  for (let off = 36; off < xsdt.length; off += 8) {
    const addr = Number(xdv.getBigUint64(off, true));
    if (Buffer.from(mem.slice(addr, 4)).toString('latin1') !== 'FACP') continue;
    const facp = table(addr, 'FACP');
    return table(Number(new DataView(facp.buffer, facp.byteOffset).getBigUint64(140, true)), 'DSDT');
  }
  throw new Error('no FACP in the XSDT');
}

function parseDsdt(dsdt: Uint8Array): Node {
  const root: Node = { kind: 'scope', name: '\\', names: new Map(), children: [] };
  readTerms(dsdt, 36, dsdt.length, root);
  return root;
}

// ---- the encoder -------------------------------------------------------------

test('AML PkgLength: one byte up to 63 in all, then 2, 3 and 4 bytes; each decodes to body + itself', () => {
  assert.deepEqual([...A.pkgLength(0)], [0x01]);
  assert.deepEqual([...A.pkgLength(62)], [0x3f]);
  // 63 bytes of body need two length bytes: 65 in all = 0x41 → lead 0x41, then 0x04.
  assert.deepEqual([...A.pkgLength(63)], [0x41, 0x04]);
  for (const n of [0, 1, 62, 63, 64, 200, 4092, 4093, 5000, 1 << 20, A.PKG_LENGTH_MAX - 4]) {
    const enc = A.pkgLength(n);
    const dec = readPkgLength(enc, 0);
    assert.equal(dec.size, enc.length);
    assert.equal(dec.len, n + enc.length, `body ${n}`);
  }
  // Two bytes hold a total below 4096 (12 bits): a 4093-byte body is the largest that fits.
  assert.equal(A.pkgLength(4093).length, 2);
  assert.equal(A.pkgLength(4094).length, 3);
  assert.throws(() => A.pkgLength(A.PKG_LENGTH_MAX), RangeError);
  assert.throws(() => A.pkgLength(-1), RangeError);
});

test('AML names: segments padded with _, rooted, dual and multi-segment prefixes; bad names refused', () => {
  assert.deepEqual([...A.nameString('_S5')], [0x5f, 0x53, 0x35, 0x5f]);
  assert.deepEqual([...A.nameString('\\_SB')], [0x5c, 0x5f, 0x53, 0x42, 0x5f]);
  assert.deepEqual([...A.nameString('\\_SB.COM1')], [0x5c, 0x2e, ...Buffer.from('_SB_COM1')]);
  assert.deepEqual([...A.nameString('A.B.C')], [0x2f, 3, ...Buffer.from('A___B___C___')]);
  assert.equal(readName(A.nameString('\\_SB.PCI0.ISA'), 0).name, '\\_SB_.PCI0.ISA_');
  for (const bad of ['com1', 'TOOLONG', '1ABC', 'A-B', '']) assert.throws(() => A.nameString(bad), RangeError, bad);
});

test('AML integers take their shortest form; strings, buffers and packages carry their lengths', () => {
  assert.deepEqual([...A.integer(0)], [0x00]);
  assert.deepEqual([...A.integer(1)], [0x01]);
  assert.deepEqual([...A.integer(5)], [0x0a, 5]);
  assert.deepEqual([...A.integer(0x3f8)], [0x0b, 0xf8, 0x03]);
  assert.deepEqual([...A.integer(0x12345678)], [0x0c, 0x78, 0x56, 0x34, 0x12]);
  assert.deepEqual([...A.integer(0x1_0000_0000n)], [0x0e, 0, 0, 0, 0, 1, 0, 0, 0]);
  assert.throws(() => A.integer(-1), RangeError);
  assert.deepEqual([...A.string('HNGR')], [0x0d, ...Buffer.from('HNGR'), 0]);
  assert.throws(() => A.string('a\0b'), RangeError);
  const big = new Uint8Array(300).map((_, i) => i & 0xff);
  const b = readData(A.buffer(big), 0);
  assert.deepEqual([...(b.v as { buf: Uint8Array }).buf], [...big]);
  assert.equal(b.size, A.buffer(big).length);
  const p = readData(A.pkg([A.integer(5), A.integer(0), A.string('x')]), 0).v as { pkg: Value[] };
  assert.deepEqual(p.pkg, [{ int: 5n }, { int: 0n }, { str: 'x' }]);
});

test('EISA ids: PNP0501 is 0x0105D041 (as ACPI and every BIOS encode it), and decode back', () => {
  assert.equal(A.eisaIdValue('PNP0501'), 0x0105d041);
  assert.equal(A.eisaIdValue('PNP0303'), 0x0303d041);
  assert.equal(A.eisaIdValue('PNP0B00'), 0x000bd041);
  for (const id of ['PNP0501', 'PNP0303', 'HNG0001', 'ZZZFFFF']) assert.equal(decodeEisaId(A.eisaIdValue(id)), id);
  assert.deepEqual([...A.eisaId('PNP0501')], [0x0c, 0x41, 0xd0, 0x05, 0x01]);
  for (const bad of ['pnp0501', 'PNP050', 'PNP05G1']) assert.throws(() => A.eisaIdValue(bad), RangeError, bad);
});

test('resource templates: IO (Decode16) and IRQNoFlags descriptors and the end tag', () => {
  const t = readData(A.resourceTemplate([A.ioPort(0x3f8, 0x3f8, 1, 8), A.irqNoFlags([4])]), 0).v as { buf: Uint8Array };
  assert.deepEqual([...t.buf], [0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00, 0x79, 0x00]);
  assert.deepEqual(decodeResources(t.buf), { io: [{ decode16: true, min: 0x3f8, max: 0x3f8, len: 8 }], irqs: [4] });
  assert.throws(() => A.irqNoFlags([16]), RangeError);
  assert.throws(() => A.ioPort(0x10000, 0, 1, 1), RangeError);
});

// ---- the DSDT ------------------------------------------------------------------

test('DSDT (reached through RSDP → XSDT → FADT) describes COM1 and the i8042 with their ports and ISA IRQs, and \\_S5', () => {
  const mem = GuestRam.allocate(2 << 20);
  try {
    const root = parseDsdt(dsdtFromMemory(mem, writeAcpiTables(mem, 2)));
    assert.deepEqual(root.names.get('_S5_'), { pkg: [{ int: BigInt(L.ACPI_S5_SLEEP_TYPE) }, { int: 0n }, { int: 0n }, { int: 0n }] });
    const sb = root.children.find((c) => c.kind === 'scope' && c.name === '\\_SB_');
    assert.ok(sb, 'a \\_SB scope');
    const byHid = new Map(sb.children.filter((d) => d.kind === 'device').map((d) => [decodeEisaId(Number((d.names.get('_HID') as { int: bigint }).int)), d]));

    const com1 = byHid.get('PNP0501');
    assert.ok(com1, 'a PNP0501 (16550 UART) device');
    const com1Res = decodeResources((com1.names.get('_CRS') as { buf: Uint8Array }).buf);
    assert.deepEqual(com1Res.io, [{ decode16: true, min: L.SERIAL_COM1_PORT, max: L.SERIAL_COM1_PORT, len: L.SERIAL_PORT_COUNT }]);
    assert.equal(L.SERIAL_COM1_PORT + L.SERIAL_PORT_COUNT - 1, 0x3ff);
    assert.deepEqual(com1Res.irqs, [4]);

    const kbd = byHid.get('PNP0303');
    assert.ok(kbd, 'a PNP0303 (i8042 keyboard controller) device');
    const kbdRes = decodeResources((kbd.names.get('_CRS') as { buf: Uint8Array }).buf);
    assert.deepEqual(kbdRes.io.map((r) => [r.min, r.max, r.len]), [[0x60, 0x60, 1], [0x64, 0x64, 1]]);
    assert.deepEqual(kbdRes.irqs, [1]);
  } finally {
    mem.free();
  }
});

test('resource templates: Memory32Fixed and the extended Interrupt descriptor (any GSI, trigger mode)', () => {
  const t = readData(A.resourceTemplate([A.memory32Fixed(0xd000_0000, 0x1000), A.extendedInterrupt([40], { level: true })]), 0).v as { buf: Uint8Array };
  assert.deepEqual([...t.buf.subarray(0, 12)], [0x86, 9, 0, 1, 0, 0, 0, 0xd0, 0, 0x10, 0, 0]);
  assert.deepEqual([...t.buf.subarray(12, 21)], [0x89, 6, 0, 0x01, 1, 40, 0, 0, 0]);
  const r = decodeResources(t.buf);
  assert.deepEqual(r.mem32, [{ writable: true, base: 0xd000_0000, size: 0x1000 }]);
  assert.deepEqual(r.ext, [{ gsis: [40], consumer: true, level: true, activeLow: false, shared: false }]);
  assert.deepEqual(decodeResources((readData(A.resourceTemplate([A.extendedInterrupt([3], { level: false, activeLow: true, shared: true })]), 0).v as { buf: Uint8Array }).buf).ext,
    [{ gsis: [3], consumer: true, level: false, activeLow: true, shared: true }]);
  assert.throws(() => A.memory32Fixed(0xffff_f000, 0x2000), RangeError);
  assert.throws(() => A.extendedInterrupt([], { level: true }), RangeError);
  assert.throws(() => A.extendedInterrupt([-1], { level: true }), RangeError);
});

test('DSDT names one LNRO0005 device per virtio-mmio slot in use, with the slot\'s MMIO window and its GSI (level, active high)', () => {
  for (const count of [0, 1, 3, L.VIRTIO_MMIO_SLOTS]) {
    const slots = Array.from({ length: count }, (_, i) => L.virtioMmioSlot(i));
    const mem = GuestRam.allocate(2 << 20);
    try {
      const root = parseDsdt(dsdtFromMemory(mem, writeAcpiTables(mem, 1, slots)));
      const sb = root.children.find((c) => c.kind === 'scope' && c.name === '\\_SB_');
      assert.ok(sb);
      const virtio = sb.children.filter((d) => d.kind === 'device' && (d.names.get('_HID') as { str?: string }).str === 'LNRO0005');
      assert.equal(virtio.length, count, `${count} slots in use`);
      const seen = virtio.map((d) => {
        const res = decodeResources((d.names.get('_CRS') as { buf: Uint8Array }).buf);
        assert.deepEqual(res.io, []);
        assert.deepEqual(res.irqs, []);
        assert.equal(res.mem32?.length, 1);
        assert.equal(res.ext?.length, 1);
        return { uid: Number((d.names.get('_UID') as { int: bigint }).int), mem: res.mem32![0]!, irq: res.ext![0]! };
      });
      assert.deepEqual(seen, slots.map((s) => ({
        uid: s.index,
        mem: { writable: true, base: s.base, size: s.size },
        irq: { gsis: [s.irq], consumer: true, level: true, activeLow: false, shared: false },
      })));
      assert.equal(new Set(virtio.map((d) => d.name)).size, count, 'device names are unique');
    } finally {
      mem.free();
    }
  }
});

test('the BIOS reset vector holds a stub that writes POWER_RESET to the power port (a guest\'s BIOS-method reboot ends the VM)', () => {
  const mem = GuestRam.allocate(2 << 20);
  try {
    writeAcpiTables(mem, 1);
    const code = mem.slice(0xffff0, 16);
    // mov al, imm8; mov dx, imm16; out dx, al; hlt; jmp back to the hlt
    assert.equal(code[0], 0xb0);
    assert.equal(code[1], L.POWER_RESET);
    assert.equal(code[2], 0xba);
    assert.equal(code[3]! | (code[4]! << 8), L.POWER_PORT);
    assert.deepEqual([...code.subarray(5, 9)], [0xee, 0xf4, 0xeb, 0xfd]);
    assert.ok(L.ACPI_TABLES_END <= 0xffff0, 'the stub lies beyond the ACPI tables');
  } finally {
    mem.free();
  }
});

test('DSDT: a power button (PNP0C0C) and a Generic Event Device (ACPI0013, edge GSI ACPI_GED_GSI) whose _EVT notifies the button (0x80)', () => {
  const mem = GuestRam.allocate(2 << 20);
  try {
    const root = parseDsdt(dsdtFromMemory(mem, writeAcpiTables(mem, 1, [L.virtioMmioSlot(0)])));
    const sb = root.children.find((c) => c.kind === 'scope' && c.name === '\\_SB_');
    assert.ok(sb);
    const pwrb = sb.children.find((d) => d.kind === 'device' && (d.names.get('_HID') as { int?: bigint }).int !== undefined
      && decodeEisaId(Number((d.names.get('_HID') as { int: bigint }).int)) === 'PNP0C0C');
    assert.ok(pwrb, 'a PNP0C0C power button device');
    const ged = sb.children.find((d) => d.kind === 'device' && (d.names.get('_HID') as { str?: string }).str === 'ACPI0013');
    assert.ok(ged, 'an ACPI0013 Generic Event Device');
    const res = decodeResources((ged.names.get('_CRS') as { buf: Uint8Array }).buf);
    assert.deepEqual(res.ext, [{ gsis: [L.ACPI_GED_GSI], consumer: true, level: false, activeLow: false, shared: false }]);
    assert.ok(![...L.VIRTIO_MMIO_IRQS, L.SERIAL_COM1_IRQ, L.I8042_KBD_IRQ].includes(L.ACPI_GED_GSI as number), 'a GSI of its own');
    const evt = ged.methods?.get('_EVT');
    assert.ok(evt, 'the GED has an _EVT method');
    assert.equal(evt.args, 1, '_EVT takes the GSI as its argument');
    // Notify (\_SB_.PWRB, 0x80): NotifyOp, rooted dual name, ByteConst 0x80 — naming the button device found above.
    assert.equal(evt.body[0], 0x86, 'NotifyOp');
    const target = readName(evt.body, 1);
    assert.equal(target.name, `\\_SB_.${pwrb.name}`);
    assert.deepEqual(readData(evt.body, 1 + target.size), { v: { int: 0x80n }, size: 2 });
    assert.equal(1 + target.size + 2, evt.body.length, 'the method does nothing else');
  } finally {
    mem.free();
  }
});

test('AML Method and Notify encodings', () => {
  assert.deepEqual([...A.notify('\\_SB.PWRB', 0x80)], [0x86, 0x5c, 0x2e, ...Buffer.from('_SB_PWRB'), 0x0a, 0x80]);
  assert.deepEqual([...A.method('_EVT', 1, [Uint8Array.of(0xa3)])], [0x14, 7, ...Buffer.from('_EVT'), 1, 0xa3]);
  assert.throws(() => A.method('_EVT', 8, []), RangeError);
});
