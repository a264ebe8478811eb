/* Every vCPU reports in from ring 3; CPU 0 waits for all of them, then powers off. */
#include "hangar.h"

static volatile u32 reported;

void guest_ap_main(int cpu) {
  hg_printf("cpu %d online (hg_cpu_id %d)\n", cpu, hg_cpu_id());
  __atomic_fetch_add(&reported, 1, __ATOMIC_SEQ_CST);
}

void guest_main(void) {
  int n = hg_cpu_count();
  hg_printf("cpu 0 online (hg_cpu_id %d), %d cpus\n", hg_cpu_id(), n);
  __atomic_fetch_add(&reported, 1, __ATOMIC_SEQ_CST);
  u64 spins = 0;
  while (__atomic_load_n(&reported, __ATOMIC_SEQ_CST) < (u32)n) {
    hg_pause();
    if (++spins > 20000000000UL) hg_panic("only %u of %d cpus reported", reported, n);
  }
  hg_printf("all %d cpus reported\n", n);
}
