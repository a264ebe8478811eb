/* A ring-3 counter that prints "tick N" every 2^24 increments, forever (until stopped). */
#include "hangar.h"

void guest_main(void) {
  hg_printf("counter start\n");
  volatile u64 count = 0;
  for (u64 tick = 0;; tick++) {
    for (u32 i = 0; i < (1u << 24); i++) count++;
    hg_printf("tick %lu\n", tick);
  }
}
