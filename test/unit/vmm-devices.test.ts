/**
 * Device models and buses on their own, with a recording IRQ line: the
 * 16550A UART (output, input FIFO, interrupt identification, loopback, DLAB),
 * the i8042 (self test, reset, Ctrl-Alt-Del), the power port, and the bus
 * (overlaps refused, unclaimed accesses, a throwing device contained).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Serial } from '../../src/vmm/devices/serial.js';
import { I8042 } from '../../src/vmm/devices/i8042.js';
import { PowerPort } from '../../src/vmm/devices/power.js';
import { MmioBus, PioBus } from '../../src/vmm/bus.js';
import type { IrqLine, MmioDevice } from '../../src/vmm/devices/device.js';

class FakeIrq implements IrqLine {
  readonly gsi = 4;
  level = false;
  pulses = 0;
  pulse(): void { this.pulses++; }
  set(l: boolean): void { this.level = l; }
}

const rd = (d: { pioRead(o: number, b: Uint8Array): void }, off: number) => { const b = new Uint8Array(1); d.pioRead(off, b); return b[0]!; };
const wr = (d: { pioWrite(o: number, b: Uint8Array): void }, off: number, v: number) => d.pioWrite(off, Uint8Array.of(v));

test('UART: transmit goes to the output callback; LSR always shows an empty transmitter', () => {
  const out: number[] = [];
  const s = new Serial(new FakeIrq(), (b) => out.push(...b));
  for (const c of Buffer.from('hi')) wr(s, 0, c);
  assert.equal(Buffer.from(out).toString(), 'hi');
  assert.equal(rd(s, 5) & 0x60, 0x60);
  assert.equal(s.metrics().txBytes, 2);
});

test('UART: received bytes raise the RX interrupt (IIR 0x04) until drained', () => {
  const irq = new FakeIrq();
  const s = new Serial(irq, () => {});
  s.input(Buffer.from('ab'));
  assert.equal(irq.level, false, 'no interrupt while IER is 0');
  assert.equal(rd(s, 5) & 1, 1, 'data ready');
  wr(s, 1, 0x01);
  assert.equal(irq.level, true);
  assert.equal(rd(s, 2) & 0x0f, 0x04);
  assert.equal(rd(s, 0), 0x61);
  assert.equal(irq.level, true);
  assert.equal(rd(s, 0), 0x62);
  assert.equal(irq.level, false);
  assert.equal(rd(s, 2) & 0x01, 0x01, 'no interrupt pending');
  assert.equal(rd(s, 5) & 1, 0);
});

test('UART: THR-empty interrupt is owed when enabled and after each write, cleared by reading IIR', () => {
  const irq = new FakeIrq();
  const s = new Serial(irq, () => {});
  wr(s, 1, 0x02);
  assert.equal(irq.level, true);
  assert.equal(rd(s, 2) & 0x0f, 0x02);
  assert.equal(irq.level, false);
  wr(s, 0, 0x41);
  assert.equal(irq.level, true);
});

test('UART: DLAB exposes the divisor; loopback echoes into the receiver and MSR mirrors MCR', () => {
  const out: number[] = [];
  const s = new Serial(new FakeIrq(), (b) => out.push(...b));
  wr(s, 3, 0x80);
  wr(s, 0, 0x01); wr(s, 1, 0x00);
  assert.equal(rd(s, 0), 0x01);
  wr(s, 3, 0x03);
  wr(s, 4, 0x10 | 0x0f); // loop + all outputs
  wr(s, 0, 0x55);
  assert.deepEqual(out, [], 'loopback does not transmit');
  assert.equal(rd(s, 0), 0x55);
  assert.equal(rd(s, 6) & 0xf0, 0xf0);
  wr(s, 7, 0x99);
  assert.equal(rd(s, 7), 0x99);
});

test('UART: host input beyond the queue bound is refused, for the caller to offer again', () => {
  const s = new Serial(new FakeIrq(), () => {});
  assert.equal(s.input(new Uint8Array(64 * 1024 + 10)), 64 * 1024);
  assert.equal(s.input(new Uint8Array(1)), 0);
  assert.equal(s.metrics().rxQueued, 64 * 1024);
});

test('i8042: self test, command byte, reset and Ctrl-Alt-Del', () => {
  const irq = new FakeIrq();
  let resets = 0;
  const k = new I8042(irq, () => resets++);
  wr(k, 4, 0xaa);
  assert.equal(rd(k, 4) & 1, 1);
  assert.equal(rd(k, 0), 0x55);
  wr(k, 4, 0x20);
  const ctr = rd(k, 0);
  wr(k, 4, 0x60); wr(k, 0, ctr & ~1);
  wr(k, 4, 0x20);
  assert.equal(rd(k, 0), ctr & ~1);
  wr(k, 4, 0x60); wr(k, 0, ctr);
  const before = irq.pulses;
  k.sendCtrlAltDel();
  assert.ok(irq.pulses > before);
  assert.equal(rd(k, 0), 0x1d);
  wr(k, 4, 0xfe);
  assert.equal(resets, 1);
});

test('power port: 0 power off, 1 reset, 2 panic, other values ignored', () => {
  const seen: string[] = [];
  const p = new PowerPort((w) => seen.push(w));
  for (const v of [0, 1, 2, 7]) wr(p, 0, v);
  assert.deepEqual(seen, ['poweroff', 'reset', 'panic']);
});

test('buses: overlapping ranges refused; unclaimed reads are all ones; a throwing device is contained', () => {
  const errors: string[] = [];
  const bus = new MmioBus((d) => errors.push(d));
  const bad: MmioDevice = { name: 'bad', mmioRead() { throw new Error('boom'); }, mmioWrite() { throw new Error('boom'); }, metrics: () => ({}) };
  const good: MmioDevice = { name: 'good', mmioRead(o, d) { d.fill(o); }, mmioWrite() {}, metrics: () => ({}) };
  bus.register(0x1000, 0x100, good);
  bus.register(0x2000, 0x100, bad);
  assert.throws(() => bus.register(0x10f0, 0x20, good), /overlaps/);
  assert.throws(() => bus.register(-1, 1, good));
  const d = new Uint8Array(4);
  bus.read(0x1004, d);
  assert.deepEqual([...d], [4, 4, 4, 4]);
  bus.read(0x3000, d);
  assert.deepEqual([...d], [0xff, 0xff, 0xff, 0xff]);
  assert.equal(bus.unclaimedReads, 1);
  bus.read(0x2000, d);
  bus.write(0x2000, d);
  assert.deepEqual([...d], [0xff, 0xff, 0xff, 0xff]);
  assert.equal(bus.deviceErrors, 2);
  assert.deepEqual(errors, ['bad'], 'reported once per device');
  const pio = new PioBus();
  assert.equal(pio.write(0x99, Uint8Array.of(1)), false);
  assert.equal(pio.unclaimedWrites, 1);
});

test('ACPI sleep registers: only SLP_EN with the S5 sleep type powers off', async () => {
  const { AcpiSleepRegisters } = await import('../../src/vmm/devices/power.js');
  let off = 0;
  const a = new AcpiSleepRegisters(() => off++);
  wr(a, 0, (5 << 2)); // type without SLP_EN
  wr(a, 0, (3 << 2) | 0x20); // S3 with SLP_EN: ignored
  wr(a, 1, (5 << 2) | 0x20); // status register
  assert.equal(off, 0);
  wr(a, 0, (5 << 2) | 0x20);
  assert.equal(off, 1);
  assert.equal(rd(a, 1), 0);
});
