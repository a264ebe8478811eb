/**
 * The UART's fast path (serial-fast.ts) with the Serial model: what a vCPU
 * thread may answer itself (THR writes, LSR reads) and what it must forward
 * (divisor latch, loopback, other registers, wide accesses, a full ring);
 * order of output across both paths; the THR-empty interrupt owed for
 * fast-path bytes; the wake-up from a real worker thread.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { Serial } from '../../src/vmm/devices/serial.js';
import { SerialFastPathClient, SF_RING_BYTES } from '../../src/vmm/devices/serial-fast.js';
import type { IrqLine } from '../../src/vmm/devices/device.js';

const BASE = 0x3f8;

class FakeIrq implements IrqLine {
  readonly gsi = 4;
  level = false;
  set(l: boolean): void { this.level = l; }
  pulse(): void {}
}

function setup() {
  const out: number[] = [];
  const irq = new FakeIrq();
  const serial = new Serial(irq, (b) => out.push(...b));
  const client = new SerialFastPathClient(serial.fastPath(), BASE);
  /** A vCPU exit: served on the "vCPU thread" if the fast path takes it, else by the model (the slow path). */
  const exit = (port: number, write: boolean, bytes: Uint8Array, size = 1): 'fast' | 'slow' => {
    if (client.handle(port, write, size, bytes.length / size, bytes)) return 'fast';
    // As the machine's mailbox does: string I/O is one access per element.
    for (let i = 0; i < bytes.length / size; i++) {
      const d = bytes.subarray(i * size, (i + 1) * size);
      if (write) serial.pioWrite(port - BASE, d); else serial.pioRead(port - BASE, d);
    }
    return 'slow';
  };
  const outb = (port: number, v: number) => exit(port, true, Uint8Array.of(v));
  const inb = (port: number) => { const b = new Uint8Array(1); const how = exit(port, false, b); return { v: b[0]!, how }; };
  return { out, irq, serial, client, exit, outb, inb };
}

test('UART fast path: THR writes and LSR reads are served without the model; the bytes reach the console on the next register access, in order', () => {
  const t = setup();
  assert.equal(t.outb(BASE, 0x61), 'fast');
  assert.equal(t.outb(BASE, 0x62), 'fast');
  const lsr = t.inb(BASE + 5);
  assert.equal(lsr.how, 'fast');
  assert.equal(lsr.v & 0x61, 0x60, 'transmitter empty, no data ready');
  assert.deepEqual(t.out, [], 'not yet drained');
  // Any register the model handles drains the fast bytes first.
  assert.equal(t.inb(BASE + 3).how, 'slow');
  assert.equal(Buffer.from(t.out).toString(), 'ab');
  assert.equal(t.serial.metrics().txBytes, 2);
  assert.equal(t.serial.metrics().fastTxBytes, 2);
  assert.equal(t.serial.metrics().fastLsrReads, 1);
});

test('UART fast path: off while the divisor latch or loopback is on, so those writes keep their meaning', () => {
  const t = setup();
  t.outb(BASE, 0x31);
  assert.equal(t.outb(BASE + 3, 0x83), 'slow'); // DLAB on
  assert.equal(t.outb(BASE, 0x01), 'slow', 'divisor low byte goes to the model');
  assert.equal(t.inb(BASE + 5).how, 'slow');
  assert.equal(t.outb(BASE + 3, 0x03), 'slow'); // DLAB off
  assert.equal(t.outb(BASE + 4, 0x10), 'slow'); // loopback
  assert.equal(t.outb(BASE, 0x5a), 'slow');
  assert.equal(t.inb(BASE).v, 0x5a, 'looped back');
  assert.equal(t.outb(BASE + 4, 0x0b), 'slow');
  assert.equal(t.outb(BASE, 0x32), 'fast');
  t.inb(BASE + 2);
  assert.equal(Buffer.from(t.out).toString(), '12', 'the divisor and loopback bytes never reached the console');
});

test('UART fast path: LSR.DR follows host input; other registers, wide accesses and other ports are forwarded', () => {
  const t = setup();
  t.serial.input(Buffer.from('x'));
  assert.equal(t.inb(BASE + 5).v & 1, 1, 'data ready');
  assert.equal(t.inb(BASE).how, 'slow', 'RBR is the model\'s');
  assert.equal(t.inb(BASE + 5).v & 1, 0, 'drained');
  for (const off of [1, 2, 3, 4, 6, 7]) assert.equal(t.client.handle(BASE + off, off !== 2, 1, 1, new Uint8Array(1)), false, `offset ${off}`);
  assert.equal(t.client.handle(BASE, true, 2, 1, new Uint8Array(2)), false, '16-bit THR write');
  assert.equal(t.client.handle(0x2f8, true, 1, 1, new Uint8Array(1)), false, 'another port');
  assert.equal(t.client.handle(BASE, false, 1, 1, new Uint8Array(1)), false, 'RBR read');
});

test('UART fast path: string output (rep outsb) fits the ring or is forwarded whole; a full ring is drained before the forwarded write', () => {
  const t = setup();
  const chunk = new Uint8Array(SF_RING_BYTES - 10).fill(0x41);
  assert.equal(t.exit(BASE, true, chunk), 'fast');
  assert.equal(t.exit(BASE, true, new Uint8Array(20).fill(0x42)), 'slow', 'does not fit: forwarded');
  // The model drained the ring before it took the forwarded write: order kept.
  t.exit(BASE, true, Uint8Array.of(0x43));
  t.inb(BASE + 2);
  assert.equal(t.out.length, SF_RING_BYTES - 10 + 20 + 1);
  assert.equal(t.out[SF_RING_BYTES - 11], 0x41);
  assert.equal(t.out[SF_RING_BYTES - 10], 0x42, 'the forwarded write follows the ring');
  assert.equal(t.out.at(-1), 0x43);
  // The ring wraps around cleanly.
  for (let i = 0; i < 3 * SF_RING_BYTES; i++) t.outb(BASE, 0x30 + (i % 10));
  t.inb(BASE + 3);
  const tail = Buffer.from(t.out.slice(-3 * SF_RING_BYTES)).toString();
  assert.equal(tail, Array.from({ length: 3 * SF_RING_BYTES }, (_, i) => String(i % 10)).join(''));
});

test('UART fast path: host input is visible in LSR (data ready) before its interrupt is raised', () => {
  const out: number[] = [];
  let seenAtIrq = -1;
  let client: SerialFastPathClient | undefined;
  const irq: IrqLine = {
    gsi: 4,
    pulse() {},
    // A vCPU may take the interrupt the moment the line rises and poll LSR on its own thread.
    set(level: boolean) { if (level && client) { const b = new Uint8Array(1); client.handle(BASE + 5, false, 1, 1, b); seenAtIrq = b[0]!; } },
  };
  const serial = new Serial(irq, (b) => out.push(...b));
  client = new SerialFastPathClient(serial.fastPath(), BASE);
  serial.pioWrite(1, Uint8Array.of(0x01)); // IER: receive interrupt
  serial.input(Buffer.from('k'));
  assert.equal(seenAtIrq & 1, 1, 'LSR.DR was already set when the line rose');
});

test('UART fast path: flushFastPath hands over what is left when the VM ends', () => {
  const t = setup();
  t.outb(BASE, 0x7a);
  t.serial.flushFastPath();
  assert.deepEqual(t.out, [0x7a]);
});

test('UART fast path: bytes sent that way owe the THR-empty interrupt like any THR write', () => {
  const t = setup();
  t.outb(BASE + 1, 0x02); // IER: THRI
  assert.equal(t.irq.level, true);
  assert.equal(t.inb(BASE + 2).v & 0x0f, 0x02, 'IIR: THR empty');
  assert.equal(t.irq.level, false);
  t.outb(BASE, 0x41);
  assert.equal(t.irq.level, false, 'not before the model saw the byte');
  assert.equal(t.inb(BASE + 2).v & 0x0f, 0x02, 'IIR after the drain: THR empty again');
});

test('UART fast path: a worker thread\'s bytes wake the device thread, which drains them without any register access', async () => {
  const out: number[] = [];
  const serial = new Serial(new FakeIrq(), (b) => out.push(...b));
  const sab = serial.fastPath();
  const url = new URL('../../src/vmm/devices/serial-fast.js', import.meta.url).href;
  const w = new Worker(`import(${JSON.stringify(url)}).then(({ SerialFastPathClient }) => {
    const { workerData } = require('node:worker_threads');
    const c = new SerialFastPathClient(workerData, ${BASE});
    for (const ch of 'hello from a vCPU thread\\n') c.handle(${BASE}, true, 1, 1, Uint8Array.of(ch.charCodeAt(0)));
  });`, { eval: true, workerData: sab });
  await new Promise((r) => w.once('exit', r));
  const deadline = Date.now() + 10_000;
  while (Buffer.from(out).toString() !== 'hello from a vCPU thread\n' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.equal(Buffer.from(out).toString(), 'hello from a vCPU thread\n');
});
