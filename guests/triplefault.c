/* Loads an empty IDT in ring 0 and raises #UD: no handler, no double-fault handler → triple fault → CPU reset. */
#include "hangar.h"

static u64 triple_fault(u64 arg) {
  (void)arg;
  struct { u16 limit; u64 base; } __attribute__((packed)) empty = { 0, 0 };
  __asm__ volatile("lidt %0; ud2" : : "m"(empty));
  return 0;
}

void guest_main(void) {
  hg_printf("about to triple fault\n");
  hg_ring0(triple_fault, 0);
  hg_printf("still alive?\n");
}
