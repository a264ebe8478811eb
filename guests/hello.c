/* Prints a greeting, the command line and RAM size over COM1 from ring 3, then powers off. */
#include "hangar.h"

void guest_main(void) {
  hg_printf("hello from hangar guest on cpu %d of %d\n", hg_cpu_id(), hg_cpu_count());
  hg_printf("cmdline: %s\n", hg_cmdline());
  hg_printf("ram: %lu MiB\n", hg_ram_size() >> 20);
  hg_printf("mmio unclaimed read: 0x%x\n", hg_mmio_read32(HG_VIRTIO_MMIO_BASE + 7 * HG_VIRTIO_MMIO_SIZE));
  hg_printf("bye\n");
}
