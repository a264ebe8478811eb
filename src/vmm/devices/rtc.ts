/**
 * The CMOS real-time clock (MC146818 family) at ports 0x70 (index) and
 * 0x71 (data), which PC kernels read for the wall clock at boot (and poll
 * when ACPI is off). It keeps time as an offset from the host's clock, so it
 * runs while the guest does not look and never needs a timer.
 *
 * - Time registers (seconds, minutes, hours, weekday, day, month, year,
 *   century at 0x32) read in BCD or binary and in 24- or 12-hour form, as
 *   status register B says; writes set the guest's clock (an offset).
 * - Status B's SET bit freezes the clock while the guest writes it, as on
 *   the real chip; clearing it lets time run on from the written value.
 * - Status A's update-in-progress bit is set only in the last 244 µs of
 *   each second (when the real chip raises it before its update), so it is
 *   never stuck: a guest that waits for it to clear waits at most that long,
 *   and one that waits for it to rise sees it once a second.
 * - Status C reads 0 (no interrupts are raised: the FADT tells guests there
 *   is no RTC for alarms); status D reports valid RAM and time.
 * - The index port's bit 7 (NMI disable) is ignored; reading the index port
 *   gives 0xff. The other bytes are 128 bytes of battery-backed RAM.
 *
 * Everything the guest writes is taken as a byte and can never make the
 * clock invalid: a nonsense date is refused and the clock keeps its time.
 */
import type { DeviceMetrics, PioDevice } from './device.js';
import { bytes, int, obj, onlyKeys } from '../snapshot/check.js';

export const RTC_PORT = 0x70;
export const RTC_PORT_COUNT = 2;

export const REG_SECONDS = 0x00;
export const REG_MINUTES = 0x02;
export const REG_HOURS = 0x04;
export const REG_WEEKDAY = 0x06;
export const REG_DAY = 0x07;
export const REG_MONTH = 0x08;
export const REG_YEAR = 0x09;
export const REG_A = 0x0a;
export const REG_B = 0x0b;
export const REG_C = 0x0c;
export const REG_D = 0x0d;
export const REG_CENTURY = 0x32;

export const A_UIP = 0x80;
export const B_SET = 0x80;
export const B_BINARY = 0x04;
export const B_24H = 0x02;
export const D_VRT = 0x80;
const HOUR_PM = 0x80;
/** The real chip raises UIP this long before it updates the time registers. */
export const UIP_WINDOW_US = 244;
const CMOS_BYTES = 128;

export interface RtcState {
  index: number;
  /** CMOS RAM; the time registers' slots are unused (time comes from the clock). */
  ram: number[];
  /** Guest time = host time + offsetMs (while running). */
  offsetMs: number;
  /** While status B's SET bit is on: the frozen guest time (ms since the epoch), else null. */
  frozenMs: number | null;
}

/** Host time in microseconds since the epoch; injectable for tests. */
export type MicroClock = () => number;
const hostClockUs: MicroClock = () => Math.floor((performance.timeOrigin + performance.now()) * 1000);

/** Date.UTC without its mapping of years 0-99 to 1900-1999. */
function utcMs(year: number, month: number, day: number, hour: number, minute: number, second: number, ms: number): number {
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day);
  d.setUTCHours(hour, minute, second, ms);
  return d.getTime();
}

const toBcd = (v: number) => ((Math.floor(v / 10) % 10) << 4) | (v % 10);
const fromBcd = (v: number) => (v >> 4) * 10 + (v & 0x0f);

export class CmosRtc implements PioDevice {
  readonly name = 'rtc';
  state: RtcState;
  private reads = 0;
  private writes = 0;

  constructor(private readonly nowUs: MicroClock = hostClockUs) {
    const ram = new Array<number>(CMOS_BYTES).fill(0);
    ram[REG_A] = 0x26; // 32.768 kHz time base, 1024 Hz periodic rate
    ram[REG_B] = B_24H; // BCD, 24-hour: what PC firmware leaves
    this.state = { index: 0, ram, offsetMs: 0, frozenMs: null };
  }

  pioRead(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) data[i] = offset + i === 1 ? this.readData() : 0xff;
  }

  pioWrite(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const v = data[i]! & 0xff;
      if (offset + i === 0) this.state.index = v & 0x7f; // bit 7 gates NMIs on a PC: nothing to gate here
      else if (offset + i === 1) this.writeData(v);
    }
  }

  /**
   * A copy of the clock's state, for a snapshot. The guest's clock is kept as an offset from the
   * host's, so a restored guest reads the wall-clock time of the moment it runs again, as a
   * machine that was switched off would.
   */
  saveState(): RtcState {
    return { ...this.state, ram: [...this.state.ram] };
  }

  /** Puts the clock in a snapshot's state (checked: the file is untrusted). */
  restoreState(v: unknown): void {
    const w = 'device rtc';
    const o = obj(v, w);
    onlyKeys(o, ['index', 'ram', 'offsetMs', 'frozenMs'], w);
    // Within Date's range (±8.64e15 ms) with the host's time added, so every register reads a valid date.
    const LIMIT = 8e15;
    this.state = {
      index: int(o.index, 0, 0x7f, `${w} index`), ram: bytes(o.ram, CMOS_BYTES, `${w} ram`, true),
      offsetMs: int(o.offsetMs, -LIMIT, LIMIT, `${w} offsetMs`),
      frozenMs: o.frozenMs === null ? null : int(o.frozenMs, -LIMIT, LIMIT, `${w} frozenMs`),
    };
  }

  /** The guest's time now, in ms since the epoch (UTC). */
  guestTimeMs(): number {
    return this.state.frozenMs ?? Math.floor(this.nowUs() / 1000) + this.state.offsetMs;
  }

  private readData(): number {
    this.reads++;
    const s = this.state;
    const r = s.index;
    switch (r) {
      case REG_SECONDS: case REG_MINUTES: case REG_HOURS: case REG_WEEKDAY: case REG_DAY: case REG_MONTH: case REG_YEAR: case REG_CENTURY:
        return this.readTime(r);
      case REG_A: return (s.ram[REG_A]! & 0x7f) | (this.updateInProgress() ? A_UIP : 0);
      case REG_C: { const v = s.ram[REG_C]!; s.ram[REG_C] = 0; return v; }
      case REG_D: return D_VRT;
      default: return s.ram[r]!;
    }
  }

  private writeData(v: number): void {
    this.writes++;
    const s = this.state;
    const r = s.index;
    switch (r) {
      case REG_SECONDS: case REG_MINUTES: case REG_HOURS: case REG_DAY: case REG_MONTH: case REG_YEAR: case REG_CENTURY:
        this.writeTime(r, v);
        return;
      case REG_WEEKDAY: return; // derived from the date
      case REG_A: s.ram[REG_A] = v & 0x7f; return;
      case REG_B: {
        const was = s.ram[REG_B]! & B_SET;
        if ((v & B_SET) && !was) s.frozenMs = this.guestTimeMs();
        if (!(v & B_SET) && was && s.frozenMs !== null) {
          s.offsetMs = s.frozenMs - Math.floor(this.nowUs() / 1000);
          s.frozenMs = null;
        }
        s.ram[REG_B] = v;
        return;
      }
      case REG_C: case REG_D: return; // read-only
      default: s.ram[r] = v;
    }
  }

  /** UIP: only in the last 244 µs before each second boundary of the guest's clock, never while SET halts updates. */
  private updateInProgress(): boolean {
    if (this.state.frozenMs !== null) return false;
    const us = this.nowUs() + this.state.offsetMs * 1000;
    const intoSecond = ((us % 1_000_000) + 1_000_000) % 1_000_000;
    return intoSecond >= 1_000_000 - UIP_WINDOW_US;
  }

  private binary(): boolean { return (this.state.ram[REG_B]! & B_BINARY) !== 0; }
  private h24(): boolean { return (this.state.ram[REG_B]! & B_24H) !== 0; }
  private encode(v: number): number { return this.binary() ? v : toBcd(v); }
  private decode(v: number): number { return this.binary() ? v : fromBcd(v); }

  private readTime(r: number): number {
    const d = new Date(this.guestTimeMs());
    switch (r) {
      case REG_SECONDS: return this.encode(d.getUTCSeconds());
      case REG_MINUTES: return this.encode(d.getUTCMinutes());
      case REG_HOURS: {
        const h = d.getUTCHours();
        if (this.h24()) return this.encode(h);
        return this.encode(h % 12 || 12) | (h >= 12 ? HOUR_PM : 0);
      }
      case REG_WEEKDAY: return this.encode(d.getUTCDay() + 1); // Sunday = 1
      case REG_DAY: return this.encode(d.getUTCDate());
      case REG_MONTH: return this.encode(d.getUTCMonth() + 1);
      case REG_YEAR: return this.encode(d.getUTCFullYear() % 100);
      default: return this.encode(Math.floor(d.getUTCFullYear() / 100) % 100); // century
    }
  }

  private writeTime(r: number, v: number): void {
    const d = new Date(this.guestTimeMs());
    let [year, month, day, hour, minute, second] = [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()];
    switch (r) {
      case REG_SECONDS: second = this.decode(v & 0x7f); break;
      case REG_MINUTES: minute = this.decode(v & 0x7f); break;
      case REG_HOURS:
        if (this.h24()) hour = this.decode(v & 0x7f);
        else hour = (this.decode(v & 0x7f) % 12) + (v & HOUR_PM ? 12 : 0);
        break;
      case REG_DAY: day = this.decode(v); break;
      case REG_MONTH: month = this.decode(v); break;
      case REG_YEAR: year = Math.floor(year / 100) * 100 + this.decode(v); break;
      default: year = this.decode(v) * 100 + (year % 100); break; // century
    }
    // A nonsense field (second 75, month 13, BCD digit > 9) is refused: the clock keeps its time.
    if (second > 59 || minute > 59 || hour > 23 || month < 1 || month > 12 || day < 1 || day > 31) return;
    const ms = utcMs(year, month, day, hour, minute, second, ((this.guestTimeMs() % 1000) + 1000) % 1000);
    if (!Number.isFinite(ms) || new Date(ms).getUTCDate() !== day) return;
    if (this.state.frozenMs !== null) this.state.frozenMs = ms;
    else this.state.offsetMs = ms - Math.floor(this.nowUs() / 1000);
  }

  metrics(): DeviceMetrics {
    return { reads: this.reads, writes: this.writes };
  }
}
