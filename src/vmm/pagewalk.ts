/**
 * Translates a guest-virtual address through the guest's 4-level page tables,
 * reading them from guest memory (hostile: every read is bounds-checked).
 * Used to show the instruction bytes at RIP when a vCPU crashes.
 */
import type { GuestRam } from './memory.js';

const ADDR_MASK = 0x000ffffffffff000n;

export function translate(mem: GuestRam, cr3: bigint, va: bigint): bigint | null {
  try {
    let table = cr3 & ADDR_MASK;
    const shifts = [39n, 30n, 21n, 12n];
    for (let level = 0; level < 4; level++) {
      const idx = (va >> shifts[level]!) & 0x1ffn;
      const e = mem.readU64(table + idx * 8n);
      if ((e & 1n) === 0n) return null;
      if (level > 0 && level < 3 && (e & 0x80n) !== 0n) {
        const pageMask = (1n << shifts[level]!) - 1n;
        return (e & ADDR_MASK & ~pageMask) | (va & pageMask);
      }
      table = e & ADDR_MASK;
    }
    return table | (va & 0xfffn);
  } catch {
    return null;
  }
}
