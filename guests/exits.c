/*
 * Exit-rate benchmark guest: N port writes (from ring 0, one emulated `out`
 * each) and N MMIO writes (from ring 3) to addresses no device claims, then
 * prints the TSC cycles each phase took and powers off. N comes from the
 * command line ("exits=N", default 20000).
 */
#include "hangar.h"

static u64 parse_n(const char *s) {
  for (; *s; s++) {
    if (s[0] == 'e' && s[1] == 'x' && s[2] == 'i' && s[3] == 't' && s[4] == 's' && s[5] == '=') {
      u64 n = 0;
      for (s += 6; *s >= '0' && *s <= '9'; s++) n = n * 10 + (u64)(*s - '0');
      return n;
    }
  }
  return 20000;
}

static u64 pio_loop(u64 n) {
  for (u64 i = 0; i < n; i++) __asm__ volatile("outb %%al, $0x99" ::"a"(0) : "memory");
  return 0;
}

void guest_main(void) {
  u64 n = parse_n(hg_cmdline());
  hg_printf("exits bench n=%lu\n", n);
  u64 t0 = hg_rdtsc();
  hg_printf("pio start\n");
  hg_ring0(pio_loop, n);
  hg_printf("pio done\n");
  u64 t1 = hg_rdtsc();
  volatile u32 *unclaimed = (volatile u32 *)(HG_VIRTIO_MMIO_BASE + 7 * HG_VIRTIO_MMIO_SIZE);
  hg_printf("mmio start\n");
  for (u64 i = 0; i < n; i++) *unclaimed = (u32)i;
  hg_printf("mmio done\n");
  u64 t2 = hg_rdtsc();
  hg_printf("cycles pio=%lu mmio=%lu\n", t1 - t0, t2 - t1);
}
