/*
 * Runs CMPXCHG16B in ring 0, which the instruction emulator of a nested KVM
 * (guest kernel mode emulated) cannot execute: the VMM must report the
 * emulation failure with the instruction bytes. On hardware virtualization
 * it simply succeeds and the guest says so and powers off.
 */
#include "hangar.h"

static u64 target[2] __attribute__((aligned(16)));

static u64 do_cmpxchg16b(u64 arg) {
  (void)arg;
  u64 lo = 0, hi = 0;
  __asm__ volatile("lock cmpxchg16b %0" : "+m"(target[0]), "+a"(lo), "+d"(hi) : "b"(1UL), "c"(2UL) : "memory", "cc");
  return lo;
}

void guest_main(void) {
  hg_printf("about to run cmpxchg16b in ring 0\n");
  hg_ring0(do_cmpxchg16b, 0);
  hg_printf("cmpxchg16b in ring 0 worked (hardware virtualization)\n");
}
