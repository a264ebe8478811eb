/**
 * The CMOS RTC device model (src/vmm/devices/rtc.ts) with an injected clock:
 * time in BCD and binary, 24- and 12-hour forms, setting the clock (with and
 * without status B's SET bit), update-in-progress only in its 244 µs window,
 * status C/D, the NMI bit of the index port, CMOS RAM, hostile writes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as R from '../../src/vmm/devices/rtc.js';

/** 2026-11-29 (a Sunday) 19:05:42.500 UTC. */
const T0_US = Date.UTC(2026, 10, 29, 19, 5, 42, 500) * 1000;

function rtc(start = T0_US) {
  const clock = { us: start };
  const dev = new R.CmosRtc(() => clock.us);
  const read = (reg: number, nmiOff = false): number => {
    dev.pioWrite(0, Uint8Array.of(reg | (nmiOff ? 0x80 : 0)));
    const d = new Uint8Array(1);
    dev.pioRead(1, d);
    return d[0]!;
  };
  const write = (reg: number, v: number): void => {
    dev.pioWrite(0, Uint8Array.of(reg));
    dev.pioWrite(1, Uint8Array.of(v));
  };
  return { dev, clock, read, write };
}

test('RTC: time registers in BCD by default (24-hour), weekday Sunday = 1, century at 0x32; status D valid', () => {
  const { read } = rtc();
  assert.equal(read(R.REG_SECONDS), 0x42);
  assert.equal(read(R.REG_MINUTES), 0x05);
  assert.equal(read(R.REG_HOURS), 0x19);
  assert.equal(read(R.REG_WEEKDAY), 0x01);
  assert.equal(read(R.REG_DAY), 0x29);
  assert.equal(read(R.REG_MONTH), 0x11);
  assert.equal(read(R.REG_YEAR), 0x26);
  assert.equal(read(R.REG_CENTURY), 0x20);
  assert.equal(read(R.REG_B), R.B_24H);
  assert.equal(read(R.REG_D), R.D_VRT);
});

test('RTC: binary mode and 12-hour mode (PM in bit 7) follow status register B', () => {
  const { read, write } = rtc();
  write(R.REG_B, R.B_BINARY | R.B_24H);
  assert.equal(read(R.REG_SECONDS), 42);
  assert.equal(read(R.REG_HOURS), 19);
  assert.equal(read(R.REG_YEAR), 26);
  write(R.REG_B, R.B_BINARY);
  assert.equal(read(R.REG_HOURS), 0x80 | 7, '19h is 7 PM');
  write(R.REG_B, 0);
  assert.equal(read(R.REG_HOURS), 0x80 | 0x07);
  const midnight = rtc(Date.UTC(2026, 0, 1, 0, 30, 0) * 1000);
  midnight.write(R.REG_B, 0);
  assert.equal(midnight.read(R.REG_HOURS), 0x12, '00:30 is 12 AM');
});

test('RTC: the clock runs with the host clock, and the index port\'s NMI bit is ignored', () => {
  const { read, clock } = rtc();
  clock.us += 20_000_000;
  assert.equal(read(R.REG_SECONDS, true), 0x02);
  assert.equal(read(R.REG_MINUTES, true), 0x06);
  const idx = new Uint8Array(1);
  rtc().dev.pioRead(0, idx);
  assert.equal(idx[0], 0xff, 'the index port reads as open bus');
});

test('RTC: SET freezes the clock while the guest writes it; time runs on from the written value', () => {
  const { read, write, clock, dev } = rtc();
  write(R.REG_B, R.B_SET | R.B_24H);
  write(R.REG_HOURS, 0x08);
  write(R.REG_MINUTES, 0x30);
  write(R.REG_SECONDS, 0x00);
  write(R.REG_DAY, 0x01);
  write(R.REG_MONTH, 0x02);
  write(R.REG_YEAR, 0x99);
  write(R.REG_CENTURY, 0x19);
  clock.us += 5_000_000;
  assert.equal(read(R.REG_SECONDS), 0x00, 'frozen while SET');
  assert.equal(read(R.REG_A) & R.A_UIP, 0, 'no update in progress while SET');
  write(R.REG_B, R.B_24H);
  clock.us += 3_000_000;
  assert.equal(read(R.REG_SECONDS), 0x03);
  assert.equal(new Date(dev.guestTimeMs()).toISOString().slice(0, 19), '1999-02-01T08:30:03');
  // Without SET, a write takes effect at once and the clock keeps running.
  write(R.REG_YEAR, 0x05);
  assert.equal(read(R.REG_YEAR), 0x05);
  assert.equal(new Date(dev.guestTimeMs()).getUTCFullYear(), 1905);
  write(R.REG_CENTURY, 0x20);
  assert.equal(new Date(dev.guestTimeMs()).getUTCFullYear(), 2005);
});

test('RTC: update-in-progress is set only in the last 244 µs of each second, never stuck', () => {
  const { read, clock } = rtc(Date.UTC(2026, 0, 1) * 1000);
  const uip = () => (read(R.REG_A) & R.A_UIP) !== 0;
  assert.equal(read(R.REG_A) & 0x7f, 0x26, 'divider and rate as firmware leaves them');
  clock.us += 500_000;
  assert.equal(uip(), false);
  clock.us += 499_755; // 999 755 µs into the second
  assert.equal(uip(), false);
  clock.us += 1; // 999 756: inside the window
  assert.equal(uip(), true);
  clock.us += 243;
  assert.equal(uip(), true);
  clock.us += 1; // the next second begins: updated, UIP clear
  assert.equal(uip(), false);
  // Sampled every 7 µs over 3 s, UIP is set 3 × 244 / 7 ≈ 105 times and never twice in a row across a second boundary.
  let set = 0;
  for (let t = 0; t < 3_000_000; t += 7) { clock.us += 7; if (uip()) set++; }
  assert.ok(set >= 100 && set <= 110, `UIP seen ${set} times`);
  // Writing status A cannot set UIP.
  const { write, read: read2 } = rtc(Date.UTC(2026, 0, 1) * 1000);
  write(R.REG_A, 0xff);
  assert.equal(read2(R.REG_A), 0x7f);
});

test('RTC: status C reads 0 and clears; C and D ignore writes; CMOS RAM keeps its bytes', () => {
  const { read, write } = rtc();
  write(R.REG_C, 0xf0);
  assert.equal(read(R.REG_C), 0);
  write(R.REG_D, 0);
  assert.equal(read(R.REG_D), R.D_VRT);
  write(0x0f, 0x5a);
  write(0x7f, 0xa5);
  assert.equal(read(0x0f), 0x5a);
  assert.equal(read(0x7f), 0xa5);
  assert.equal(read(0x8f & 0x7f), 0x5a, 'index 0x8f is 0x0f with NMIs disabled');
});

test('RTC: nonsense times (BCD digits > 9, second 60+, month 13, dates that do not exist) leave the clock as it was', () => {
  const { read, write, dev } = rtc();
  const before = dev.guestTimeMs();
  write(R.REG_SECONDS, 0x7a);
  write(R.REG_MINUTES, 0x60);
  write(R.REG_HOURS, 0x24);
  write(R.REG_MONTH, 0x13);
  write(R.REG_MONTH, 0x00);
  write(R.REG_DAY, 0x00);
  write(R.REG_B, R.B_BINARY | R.B_24H);
  write(R.REG_MONTH, 2); // 29 February 2026 does not exist
  write(R.REG_DAY, 31); // nor does 31 November
  assert.equal(new Date(dev.guestTimeMs()).getUTCMonth(), 10, 'still November');
  assert.equal(new Date(dev.guestTimeMs()).getUTCDate(), 29);
  assert.equal(read(R.REG_DAY), 29);
  // Multi-byte access: an outw to 0x70 writes the index and then the data port.
  dev.pioWrite(0, Uint8Array.of(R.REG_SECONDS, 10));
  assert.equal(read(R.REG_SECONDS), 10);
  assert.ok(Number.isFinite(dev.guestTimeMs()) && dev.guestTimeMs() !== before);
});
