/**
 * The MMIO and port-I/O buses: address ranges mapped to device models. A
 * vCPU exit is dispatched to the device whose range holds the address, with
 * the offset relative to the device's base. Accesses nobody claims read as
 * all ones and writes are dropped (what real hardware does), counted in
 * metrics. A device that throws is contained here: the access is answered
 * as unclaimed and the error logged once per device, never crashing the VMM.
 */
import type { DeviceMetrics, MmioDevice, PioDevice } from './devices/device.js';
import { HangarError } from '../common/errors.js';

interface Range<D> {
  base: number;
  size: number;
  device: D;
}

export type BusKind = 'mmio' | 'pio';

class Bus<D extends { readonly name: string }> {
  private ranges: Array<Range<D>> = [];
  unclaimedReads = 0;
  unclaimedWrites = 0;
  deviceErrors = 0;
  private readonly reported = new Set<string>();

  constructor(readonly kind: BusKind, private readonly onError: (device: string, err: unknown) => void) {}

  /** Claims [base, base+size) for `device`; fails when it overlaps a range already claimed. */
  register(base: number, size: number, device: D): void {
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(size) || base < 0 || size <= 0) {
      throw new HangarError('INVALID_ARGUMENT', `${this.kind} range for ${device.name} is invalid: base ${base}, size ${size}`);
    }
    for (const r of this.ranges) {
      if (base < r.base + r.size && r.base < base + size) {
        throw new HangarError('ALREADY_EXISTS', `${this.kind} range 0x${base.toString(16)}+0x${size.toString(16)} of ${device.name} overlaps ${r.device.name}`);
      }
    }
    this.ranges.push({ base, size, device });
    this.ranges.sort((a, b) => a.base - b.base);
  }

  find(addr: number): Range<D> | undefined {
    // Few devices: a linear scan is cheaper than anything cleverer.
    for (const r of this.ranges) if (addr >= r.base && addr < r.base + r.size) return r;
    return undefined;
  }

  devices(): Array<{ base: number; size: number; device: D }> {
    return [...this.ranges];
  }

  protected fail(name: string, e: unknown): void {
    this.deviceErrors++;
    if (!this.reported.has(name)) {
      this.reported.add(name);
      this.onError(name, e);
    }
  }
}

export class MmioBus extends Bus<MmioDevice> {
  constructor(onError: (device: string, err: unknown) => void = () => {}) { super('mmio', onError); }

  read(addr: number, data: Uint8Array): boolean {
    const r = this.find(addr);
    if (!r) { data.fill(0xff); this.unclaimedReads++; return false; }
    try { r.device.mmioRead(addr - r.base, data); } catch (e) { data.fill(0xff); this.fail(r.device.name, e); }
    return true;
  }

  write(addr: number, data: Uint8Array): boolean {
    const r = this.find(addr);
    if (!r) { this.unclaimedWrites++; return false; }
    try { r.device.mmioWrite(addr - r.base, data); } catch (e) { this.fail(r.device.name, e); }
    return true;
  }
}

export class PioBus extends Bus<PioDevice> {
  constructor(onError: (device: string, err: unknown) => void = () => {}) { super('pio', onError); }

  read(port: number, data: Uint8Array): boolean {
    const r = this.find(port);
    if (!r) { data.fill(0xff); this.unclaimedReads++; return false; }
    try { r.device.pioRead(port - r.base, data); } catch (e) { data.fill(0xff); this.fail(r.device.name, e); }
    return true;
  }

  write(port: number, data: Uint8Array): boolean {
    const r = this.find(port);
    if (!r) { this.unclaimedWrites++; return false; }
    try { r.device.pioWrite(port - r.base, data); } catch (e) { this.fail(r.device.name, e); }
    return true;
  }
}

export function busMetrics(bus: MmioBus | PioBus): DeviceMetrics {
  return { unclaimedReads: bus.unclaimedReads, unclaimedWrites: bus.unclaimedWrites, deviceErrors: bus.deviceErrors };
}
