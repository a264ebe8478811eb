/**
 * A reset stub at the legacy BIOS reset vector (f000:fff0, guest-physical
 * 0xffff0). hangar-vmm has no firmware there, yet Linux may jump to it: with
 * hardware-reduced ACPI and no EFI, a guest rebooting without `reboot=`
 * picks the EFI method, finds no EFI runtime, falls back to the BIOS method
 * (machine_real_restart: real mode, then `ljmp f000:fff0`) and would run
 * zeroed RAM forever. The stub writes POWER_RESET to Hangar's power port, so
 * every road to the reset vector ends the VM as a reboot, as a real reset
 * would.
 */
import type { GuestRam } from '../memory.js';
import { POWER_PORT, POWER_RESET } from '../layout.js';

/** Where the CPU starts after a reset in real mode: CS 0xf000, IP 0xfff0. */
export const RESET_VECTOR = 0xffff0;

/** 16-bit code: mov al, POWER_RESET; mov dx, POWER_PORT; out dx, al; 1: hlt; jmp 1b. */
export function resetStub(): Uint8Array {
  return Uint8Array.of(0xb0, POWER_RESET, 0xba, POWER_PORT & 0xff, POWER_PORT >> 8, 0xee, 0xf4, 0xeb, 0xfd);
}

export function writeResetVector(mem: GuestRam): void {
  mem.write(RESET_VECTOR, resetStub());
}
