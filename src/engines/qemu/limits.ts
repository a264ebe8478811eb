/**
 * What one QEMU VM may ask for, as Hangar runs QEMU (q35, kernel boot,
 * no vIOMMU). The daemon checks a create request against these, once.
 */
import type { EngineLimits } from '../../api/engine.js';

const MiB = 1024 * 1024;

export const QEMU_LIMITS: EngineLimits = {
  // Below this a Linux kernel with an initramfs does not get far enough to print.
  minMemoryBytes: 16 * MiB,
  // 40 physical address bits, what QEMU's TCG and common hosts give a guest: 1 TiB.
  maxMemoryBytes: 1024 * 1024 * MiB,
  // `-m` is given in MiB, so a VM gets exactly what it asked for.
  memoryGranularityBytes: MiB,
  // q35 without interrupt remapping addresses at most 255 CPUs (8-bit xAPIC ids).
  maxCpus: 255,
};
