/**
 * Hangar's power port (layout.POWER_PORT): a one-byte register a guest
 * writes to end the VM: POWER_OFF (0) powers off, POWER_RESET (1) resets,
 * POWER_PANIC (2) ends it as crashed.
 * It gives test guests, which have no ACPI, a clean way out.
 */
import type { DeviceMetrics, PioDevice } from './device.js';
import { ACPI_S5_SLEEP_TYPE, POWER_OFF, POWER_PANIC, POWER_RESET } from '../layout.js';

export class PowerPort implements PioDevice {
  readonly name = 'power';
  constructor(private readonly onRequest: (what: 'poweroff' | 'reset' | 'panic', code: number) => void) {}

  pioRead(_offset: number, data: Uint8Array): void {
    data.fill(0);
  }

  pioWrite(_offset: number, data: Uint8Array): void {
    const v = data[0] ?? 0;
    if (v === POWER_OFF) this.onRequest('poweroff', v);
    else if (v === POWER_RESET) this.onRequest('reset', v);
    else if (v === POWER_PANIC) this.onRequest('panic', v);
  }

  metrics(): DeviceMetrics {
    return {};
  }
}

/** Swallows writes to port 0x80 (POST codes / I/O delay) so they are not counted as unclaimed. */
export class PostPort implements PioDevice {
  readonly name = 'post';
  pioRead(_offset: number, data: Uint8Array): void { data.fill(0); }
  pioWrite(): void { /* ignored by design */ }
  metrics(): DeviceMetrics { return {}; }
}

/**
 * The ACPI hardware-reduced sleep registers (two ports: control, status).
 * Linux powers off by writing SLP_TYPx (from the DSDT's \_S5 package) with
 * SLP_EN to the control register; an S5 request ends the VM as powered off.
 * The status register reads 0 (no wake event) and ignores writes.
 */
export class AcpiSleepRegisters implements PioDevice {
  readonly name = 'acpi-sleep';
  constructor(private readonly onPowerOff: () => void) {}

  pioRead(_offset: number, data: Uint8Array): void {
    data.fill(0);
  }

  pioWrite(offset: number, data: Uint8Array): void {
    if (offset !== 0) return;
    const v = data[0] ?? 0;
    const SLP_EN = 0x20;
    if ((v & SLP_EN) !== 0 && ((v >> 2) & 7) === ACPI_S5_SLEEP_TYPE) this.onPowerOff();
  }

  metrics(): DeviceMetrics {
    return {};
  }
}
