/* Prints CPUID leaves 1, 7 and 0xd as the guest sees them, from ring 3 and from ring 0. */
#include "hangar.h"

static void cpuid(u32 leaf, u32 sub, u32 *r) { __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub)); }
static u32 leaf_r0;
static u32 out_r0[4];
static u64 ring0_cpuid(u64 leaf) { cpuid((u32)leaf, 0, out_r0); return 0; }

void guest_main(void) {
  u32 leaves[] = {1, 7, 0xd};
  for (int i = 0; i < 3; i++) {
    u32 r[4];
    cpuid(leaves[i], 0, r);
    hg_printf("ring3 leaf %x: eax=%x ebx=%x ecx=%x edx=%x\n", leaves[i], r[0], r[1], r[2], r[3]);
    leaf_r0 = leaves[i];
    hg_ring0(ring0_cpuid, leaves[i]);
    hg_printf("ring0 leaf %x: eax=%x ebx=%x ecx=%x edx=%x\n", leaves[i], out_r0[0], out_r0[1], out_r0[2], out_r0[3]);
  }
}
