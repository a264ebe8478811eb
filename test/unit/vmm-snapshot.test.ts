/**
 * hangar-vmm snapshot files are hostile input: the container (header,
 * section table, checksum), the manifest, the KVM state sections, device
 * states and the memory file are each checked before anything is built.
 * Truncated, corrupted, wrong-version and edited files must be refused with
 * a clear INVALID_ARGUMENT (never a TypeError or a crash), and a seeded
 * fuzz over mutated files (checksum recomputed, so the parser goes past it)
 * must only ever answer that. No KVM needed.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HangarError } from '../../src/common/errors.js';
import { SIZE } from '../../src/kvm/abi.js';
import { decodeSnapshotFile, encodeSnapshotFile, HEADER_SIZE, SNAPSHOT_FORMAT_VERSION, type Sections } from '../../src/vmm/snapshot/format.js';
import { parseManifest, type SnapshotManifest } from '../../src/vmm/snapshot/manifest.js';
import { checkStateSections, type CpuStateSupport } from '../../src/vmm/snapshot/cpu-state.js';
import { mapMemoryFile, MEM_HEADER_SIZE, writeMemoryFile } from '../../src/vmm/snapshot/memory-file.js';
import { GuestRam } from '../../src/vmm/memory.js';
import { Serial } from '../../src/vmm/devices/serial.js';
import { I8042 } from '../../src/vmm/devices/i8042.js';
import { CmosRtc } from '../../src/vmm/devices/rtc.js';
import type { IrqLine } from '../../src/vmm/devices/device.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-vmm-snapshot-unit-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const SUPPORT: CpuStateSupport = { xsave: true, xsaveSize: 4096, xcrs: true, debugregs: true, events: true, clock: true };
const HOST_MSRS = new Set([0x10, 0x174, 0xc0000080 >>> 0, 0x6e0]);
const ID = 'a1'.repeat(16);

const noIrq: IrqLine = { gsi: 4, pulse() {}, set() {} };

function manifest(over: Partial<SnapshotManifest> = {}): SnapshotManifest {
  return {
    format: 'hangar-vmm-snapshot', vmm_version: '0.1.0', created_at: '2026-11-29T22:00:00.000Z', snapshot_id: ID,
    machine: { vcpus: 2, mem_bytes: 64 * 2 ** 20, conservative_cpuid: true, cmdline: 'console=ttyS0', kernel_kind: 'elf', kernel_entry: 0x100000, aps_at_entry: true, tsc_khz: 2_400_000 },
    drives: [{ drive_id: 'root', path_on_host: '/tmp/disk.img', is_read_only: false, capacity_sectors: 2048 }],
    nets: [],
    rng: true,
    devices: {
      serial: new Serial(noIrq, () => {}).saveState(), i8042: new I8042(noIrq, () => {}).saveState(), rtc: new CmosRtc().saveState(),
      virtio: [
        { kind: 'blk', id: 'root', state: { version: 1, kind: 'virtio-blk', status: 15, deviceFeaturesSel: 0, driverFeaturesSel: 1, driverFeatures: '0x100000000', queueSel: 0, interruptStatus: 0, configGeneration: 0, queues: [{ num: 16, ready: true, desc: '0x200000', driver: '0x201000', device: '0x202000', lastAvail: 3, usedIdx: 3, signalledUsed: 3 }] } },
        { kind: 'rng', id: 'rng', state: { version: 1, kind: 'virtio-rng', status: 0, deviceFeaturesSel: 0, driverFeaturesSel: 0, driverFeatures: '0x0', queueSel: 0, interruptStatus: 0, configGeneration: 0, queues: [{ num: 0, ready: false, desc: '0x0', driver: '0x0', device: '0x0', lastAvail: 0, usedIdx: 0, signalledUsed: 0 }] } },
      ],
    },
    ...over,
  };
}

/** A complete, valid set of sections for a 2-vCPU VM (contents are zeros where KVM's would be). */
function sections(m: SnapshotManifest = manifest()): Sections {
  const s: Sections = new Map([['manifest', Buffer.from(JSON.stringify(m))]]);
  for (let i = 0; i < m.machine.vcpus; i++) {
    s.set(`cpu${i}/mpstate`, Buffer.alloc(SIZE.mp_state));
    s.set(`cpu${i}/regs`, Buffer.alloc(SIZE.regs));
    s.set(`cpu${i}/sregs`, Buffer.alloc(SIZE.sregs));
    s.set(`cpu${i}/fpu`, Buffer.alloc(SIZE.fpu));
    s.set(`cpu${i}/xsave`, Buffer.alloc(4096));
    s.set(`cpu${i}/xcrs`, Buffer.alloc(SIZE.xcrs));
    s.set(`cpu${i}/debugregs`, Buffer.alloc(SIZE.debugregs));
    s.set(`cpu${i}/lapic`, Buffer.alloc(SIZE.lapic_state));
    const msrs = Buffer.alloc(32);
    msrs.writeUInt32LE(0x10, 0); msrs.writeBigUInt64LE(12345n, 8);
    msrs.writeUInt32LE(0x174, 16);
    s.set(`cpu${i}/msrs`, msrs);
    s.set(`cpu${i}/cpuid`, Buffer.alloc(2 * SIZE.cpuid_entry2));
    s.set(`cpu${i}/events`, Buffer.alloc(SIZE.vcpu_events));
  }
  const chip = (id: number) => { const b = Buffer.alloc(SIZE.irqchip); b.writeUInt32LE(id, 0); return b; };
  s.set('vm/pic-master', chip(0));
  s.set('vm/pic-slave', chip(1));
  s.set('vm/ioapic', chip(2));
  s.set('vm/pit2', Buffer.alloc(SIZE.pit_state2));
  s.set('vm/clock', Buffer.alloc(SIZE.clock_data));
  return s;
}

/** What a load does with the file's bytes before building anything. */
function load(file: Buffer): void {
  const s = decodeSnapshotFile(file);
  const m = parseManifest(s.get('manifest') ?? Buffer.alloc(0));
  checkStateSections(s, m.machine.vcpus, SUPPORT, HOST_MSRS);
}

/** Recomputes the checksum, as someone editing the file on purpose would. */
function reseal(b: Buffer): Buffer {
  createHash('sha256').update(b.subarray(HEADER_SIZE)).digest().copy(b, 32);
  return b;
}

function refused(fn: () => void, re: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof HangarError, `a HangarError, not ${String(e)}`);
    assert.equal(e.code, 'INVALID_ARGUMENT', e.message);
    assert.match(e.message, re);
    return true;
  });
}

test('a snapshot file round-trips its sections and a good one passes every check', () => {
  const s = sections();
  const file = encodeSnapshotFile(s);
  const back = decodeSnapshotFile(file);
  assert.deepEqual([...back.keys()], [...s.keys()]);
  for (const [k, v] of s) assert.ok(back.get(k)!.equals(v), k);
  load(file);
});

test('truncated, extended and bit-flipped files are refused', () => {
  const file = encodeSnapshotFile(sections());
  for (const n of [0, 7, 63, 64, 100, file.length - 1]) refused(() => load(file.subarray(0, n)), /shorter|truncated|bad magic/);
  refused(() => load(Buffer.concat([file, Buffer.alloc(1)])), /header says/);
  for (const at of [64, 70, 200, file.length - 1]) {
    const b = Buffer.from(file);
    b[at] ^= 0x01;
    refused(() => load(b), /checksum mismatch/);
  }
});

test('wrong magic, version, header size, flags and section counts are refused', () => {
  const file = encodeSnapshotFile(sections());
  const edit = (f: (b: Buffer) => void): Buffer => { const b = Buffer.from(file); f(b); return b; };
  refused(() => load(edit((b) => b.write('NOTASNAP', 0))), /bad magic/);
  refused(() => load(edit((b) => b.writeUInt32LE(SNAPSHOT_FORMAT_VERSION + 1, 8))), /format version 2 is not supported/);
  refused(() => load(edit((b) => b.writeUInt32LE(0, 8))), /format version 0/);
  refused(() => load(edit((b) => b.writeUInt32LE(128, 12))), /header size/);
  refused(() => load(edit((b) => b.writeUInt32LE(1, 20))), /flags/);
  refused(() => load(reseal(edit((b) => b.writeUInt32LE(0, 16)))), /section count 0/);
  refused(() => load(reseal(edit((b) => b.writeUInt32LE(0xffffffff, 16)))), /section count/);
  refused(() => load(reseal(edit((b) => b.writeUInt32LE(1000, 16)))), /runs past the end|starts at|invalid name/);
});

test('section tables that overlap, leave gaps, run past the end or repeat a name are refused', () => {
  const file = encodeSnapshotFile(sections());
  const entry = (i: number) => HEADER_SIZE + i * 32;
  const edit = (f: (b: Buffer) => void): Buffer => { const b = Buffer.from(file); f(b); return reseal(b); };
  refused(() => load(edit((b) => b.writeBigUInt64LE(b.readBigUInt64LE(entry(1) + 16) + 1n, entry(1) + 16))), /starts at/);
  refused(() => load(edit((b) => b.writeBigUInt64LE(2n ** 63n, entry(0) + 24))), /runs past the end/);
  refused(() => load(edit((b) => b.writeBigUInt64LE(b.readBigUInt64LE(entry(0) + 24) - 1n, entry(0) + 24))), /starts at|bytes after/);
  refused(() => load(edit((b) => b.copy(b, entry(2), entry(1), entry(1) + 16))), /appears twice/);
  refused(() => load(edit((b) => b.write('BAD NAME!', entry(0)))), /invalid name/);
  refused(() => load(edit((b) => { b[entry(0) + 9] = 0; b[entry(0) + 12] = 0x41; })), /invalid name/);
});

test('the manifest is checked field by field', () => {
  const base = manifest();
  const bad = (m: unknown, re: RegExp) => refused(() => load(encodeSnapshotFile(sections(m as SnapshotManifest))), re);
  refused(() => load(encodeSnapshotFile(new Map([...sections()].map(([k, v]) => [k, k === 'manifest' ? Buffer.from('{not json') : v])))), /not valid JSON/);
  bad({ ...base, format: 'other' }, /format/);
  bad({ ...base, extra: 1 }, /unknown field "extra"/);
  bad({ ...base, snapshot_id: 'xyz' }, /snapshot_id/);
  bad({ ...base, machine: { ...base.machine, vcpus: 0 } }, /machine vcpus/);
  bad({ ...base, machine: { ...base.machine, vcpus: 33 } }, /machine vcpus/);
  bad({ ...base, machine: { ...base.machine, mem_bytes: 64 * 2 ** 20 + 4096 } }, /multiple of 2 MiB/);
  bad({ ...base, machine: { ...base.machine, mem_bytes: 2 ** 40 } }, /machine mem_bytes/);
  bad({ ...base, machine: { ...base.machine, mem_bytes: '64M' } }, /machine mem_bytes/);
  bad({ ...base, machine: { ...base.machine, kernel_entry: 2 ** 40 } }, /kernel_entry/);
  bad({ ...base, machine: { ...base.machine, cmdline: 'x'.repeat(5000) } }, /cmdline/);
  bad({ ...base, drives: [{ ...base.drives[0]!, path_on_host: 'relative' }] }, /snapshot drive 0/);
  bad({ ...base, drives: [{ ...base.drives[0]!, capacity_sectors: -1 }] }, /capacity_sectors/);
  bad({ ...base, drives: 'none' }, /must be lists/);
  bad({ ...base, devices: { ...base.devices, virtio: [base.devices.virtio[1], base.devices.virtio[0]] } }, /slot order/);
  bad({ ...base, devices: { ...base.devices, virtio: [base.devices.virtio[0]] } }, /has 1 devices, the machine 2/);
  const q = (over: Record<string, unknown>) => ({ ...base, devices: { ...base.devices, virtio: [{ ...base.devices.virtio[0]!, state: { ...base.devices.virtio[0]!.state, ...over } }, base.devices.virtio[1]] } });
  bad(q({ version: 2 }), /transport state version/);
  bad(q({ driverFeatures: 12 }), /driverFeatures/);
  bad(q({ queues: 'x' }), /queues/);
  bad(q({ queues: [{ num: 16, ready: true, desc: '0x0', driver: '0x0', device: '0x0', lastAvail: 70000, usedIdx: 0, signalledUsed: 0 }] }), /lastAvail/);
  bad(q({ queues: [{ num: 16, ready: 'yes', desc: '0x0', driver: '0x0', device: '0x0', lastAvail: 0, usedIdx: 0, signalledUsed: 0 }] }), /ready/);
  bad({ ...base, devices: { ...base.devices, serial: null } }, /device serial/);
});

test('KVM state sections must have their struct sizes, counts and this host\'s support', () => {
  const bad = (f: (s: Sections) => void, re: RegExp, support = SUPPORT) => {
    const s = sections();
    f(s);
    refused(() => checkStateSections(decodeSnapshotFile(encodeSnapshotFile(s)), 2, support, HOST_MSRS), re);
  };
  bad((s) => s.set('cpu0/regs', Buffer.alloc(SIZE.regs - 1)), /cpu0\/regs" is 143 bytes, expected 144/);
  bad((s) => s.delete('cpu1/lapic'), /cpu1\/lapic" is missing/);
  bad((s) => s.set('cpu2/regs', Buffer.alloc(SIZE.regs)), /unexpected section "cpu2\/regs"/);
  bad((s) => s.set('vm/other', Buffer.alloc(1)), /unexpected section/);
  bad((s) => s.set('cpu0/msrs', Buffer.alloc(17)), /not a list of at most/);
  bad((s) => { const b = Buffer.alloc(16); b.writeUInt32LE(0x3a, 0); s.set('cpu0/msrs', b); }, /MSR 0x3a is not one this host/);
  bad((s) => s.set('cpu0/cpuid', Buffer.alloc(0)), /CPUID entries/);
  bad((s) => s.set('cpu0/cpuid', Buffer.alloc(257 * SIZE.cpuid_entry2)), /CPUID entries/);
  bad((s) => { const b = Buffer.alloc(SIZE.irqchip); b.writeUInt32LE(2, 0); s.set('vm/pic-slave', b); }, /irqchip 2, expected 1/);
  bad((s) => { const b = Buffer.alloc(4); b.writeUInt32LE(77, 0); s.set('cpu0/mpstate', b); }, /KVM_MP_STATE/);
  bad(() => {}, /cannot restore an XSAVE area/, { ...SUPPORT, xsave: false, xsaveSize: 0 });
  bad(() => {}, /xsave" is 4096 bytes, expected 8192/, { ...SUPPORT, xsaveSize: 8192 });
  bad(() => {}, /cannot restore kvmclock/, { ...SUPPORT, clock: false });
});

test('device states from a snapshot are checked before a device takes them', () => {
  const serial = new Serial(noIrq, () => {});
  const good = serial.saveState();
  refused(() => serial.restoreState({ ...good, ier: 0x100 }), /ier/);
  refused(() => serial.restoreState({ ...good, rx: new Array(70_000).fill(0) }), /rx/);
  refused(() => serial.restoreState({ ...good, rx: [256] }), /rx/);
  refused(() => serial.restoreState({ ...good, bogus: 1 }), /unknown field/);
  serial.restoreState({ ...good, rx: [104, 105], ier: 1 });
  assert.deepEqual(serial.saveState().rx, [104, 105]);
  const kbd = new I8042(noIrq, () => {});
  refused(() => kbd.restoreState({ ...kbd.saveState(), out: new Array(17).fill(0) }), /out/);
  refused(() => kbd.restoreState({ ...kbd.saveState(), pendingCommand: 0xaa }), /pendingCommand/);
  const rtc = new CmosRtc();
  refused(() => rtc.restoreState({ ...rtc.saveState(), ram: [1, 2, 3] }), /exactly 128 bytes/);
  refused(() => rtc.restoreState({ ...rtc.saveState(), offsetMs: 1e300 }), /offsetMs/);
  refused(() => rtc.restoreState({ ...rtc.saveState(), offsetMs: 0.5 }), /offsetMs/);
  rtc.restoreState({ ...rtc.saveState(), offsetMs: -86_400_000 });
  assert.ok(Math.abs(rtc.guestTimeMs() - (Date.now() - 86_400_000)) < 5_000);
});

test('memory files: holes for untouched memory, private lazy mapping, header checks', () => {
  const mem = GuestRam.allocate(16 * 2 ** 20);
  try {
    mem.write(0x1000, Buffer.from('hello'));
    mem.write(9 * 2 ** 20 + 12345, Buffer.from('world'));
    const id = Buffer.alloc(16, 7);
    const f = path.join(dir, 'mem');
    const r = writeMemoryFile(mem, f, id);
    assert.equal(fs.statSync(f).size, MEM_HEADER_SIZE + mem.size);
    assert.ok(r.dataBytes <= 2 * 64 * 1024, `only the touched blocks were written (${r.dataBytes})`);
    assert.ok(r.untouchedBytes >= 12 * 2 ** 20, `untouched memory was not even read (${r.untouchedBytes})`);
    assert.ok(fs.statSync(f).blocks * 512 < 2 * 2 ** 20, 'the file is sparse');
    const back = mapMemoryFile(f, mem.size, id);
    try {
      assert.equal(Buffer.from(back.slice(0x1000, 5)).toString(), 'hello');
      assert.equal(Buffer.from(back.slice(9 * 2 ** 20 + 12345, 5)).toString(), 'world');
      back.write(0x1000, Buffer.from('HELLO'));
      assert.equal(fs.readFileSync(f).subarray(MEM_HEADER_SIZE + 0x1000, MEM_HEADER_SIZE + 0x1005).toString(), 'hello', 'the file never changes');
    } finally {
      back.free();
    }
    refused(() => mapMemoryFile(f, mem.size, Buffer.alloc(16, 8)), /different snapshot/);
    refused(() => mapMemoryFile(f, mem.size * 2, id), /holds 16777216 bytes/);
    const t = path.join(dir, 'mem-truncated');
    fs.copyFileSync(f, t);
    fs.truncateSync(t, MEM_HEADER_SIZE + 4096);
    refused(() => mapMemoryFile(t, mem.size, id), /truncated/);
    fs.truncateSync(t, 100);
    refused(() => mapMemoryFile(t, mem.size, id), /shorter than its header/);
    fs.writeFileSync(t, Buffer.alloc(MEM_HEADER_SIZE + mem.size));
    refused(() => mapMemoryFile(t, mem.size, id), /bad magic/);
    assert.throws(() => mapMemoryFile(path.join(dir, 'nope'), mem.size, id), { code: 'NOT_FOUND' });
  } finally {
    mem.free();
  }
});

/** A small deterministic PRNG (mulberry32), so a failing seed replays. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

test('seeded fuzz: mutated snapshot files (checksum recomputed) are refused cleanly or accepted, never crash the reader', () => {
  const scale = Number(process.env.HANGAR_FUZZ_SCALE ?? 1);
  const file = encodeSnapshotFile(sections());
  const manifestText = JSON.stringify(manifest());
  let refusedCount = 0;
  for (let seed = 1; seed <= 300 * scale; seed++) {
    const r = rng(seed);
    let input: Buffer;
    if (seed % 2 === 0) {
      // Byte-level: flip, overwrite or cut, then reseal so the checksum does not stop it.
      input = Buffer.from(file);
      const n = 1 + Math.floor(r() * 8);
      for (let i = 0; i < n; i++) {
        const at = Math.floor(r() * input.length);
        const how = r();
        if (how < 0.5) input[at] ^= 1 << Math.floor(r() * 8);
        else if (how < 0.9) input[at] = Math.floor(r() * 256);
        else input = input.subarray(0, Math.max(HEADER_SIZE, at));
      }
      if (input.length >= HEADER_SIZE) reseal(input);
    } else {
      // Manifest-level: replace one JSON value with something of another type or range.
      const tokens = [...manifestText.matchAll(/:(-?\d+|"[^"]*"|true|false|null)/g)];
      const t = tokens[Math.floor(r() * tokens.length)]!;
      const repl = ['-1', '1e300', '"x"', 'null', '[]', '{}', 'true', '4294967296', '0.5', '"0xfffffffffffffffff"'][Math.floor(r() * 10)]!;
      const text = manifestText.slice(0, t.index! + 1) + repl + manifestText.slice(t.index! + t[0].length);
      const s = sections();
      s.set('manifest', Buffer.from(text));
      input = encodeSnapshotFile(s);
    }
    try {
      load(input);
    } catch (e) {
      assert.ok(e instanceof HangarError && e.code === 'INVALID_ARGUMENT', `seed ${seed}: ${(e as Error)?.stack ?? String(e)}`);
      refusedCount++;
    }
  }
  assert.ok(refusedCount > 100 * scale, `most mutations are refused (${refusedCount})`);
});
