/*
 * Console output the way Linux's 8250 console driver writes it: for every
 * byte, poll LSR until the transmitter is empty, then write THR — two port
 * exits per byte, from ring 0. bench/uart-bench.ts times the bytes between
 * the two markers and reads hangar-vmm's exit counters.
 */
#include "hangar.h"

static u64 blast(u64 n) {
  for (u64 i = 0; i < n; i++) {
    while (!(hg_inb(HG_COM1 + 5) & 0x20)) {}
    hg_outb(HG_COM1, (u8)((i % 64) == 63 ? '\n' : 'a' + (int)(i % 26)));
  }
  return 0;
}

void guest_main(void) {
  hg_printf("uart-bench start\n");
  hg_ring0(blast, 20000);
  hg_printf("\nuart-bench end\n");
  for (;;) hg_wait_for_interrupt();
}
