/*
 * virtio-rng guest: asks the first virtio-rng device for random bytes and
 * prints what a host test can judge:
 *   vrng: a=<32 bytes hex> b=<32 bytes hex>
 *   vrng: big len=<n> distinct=<distinct byte values in 4096 bytes>
 *   vrng: done
 */
#include "virtio-drv.h"

static struct vio_dev dev;
static struct vq q;

static u32 fill(u8 *buf, u32 len) {
  struct vq_used_elem e;
  vq_set_desc(&q, 0, (u64)buf, len, VQ_F_WRITE, 0);
  vq_publish(&q, 0);
  vq_notify(&q);
  if (vq_poll(&q, &e, 1UL << 32) != 0) hg_panic("vrng: no answer\n");
  return e.len;
}

static void hex(const u8 *b, u32 n) {
  for (u32 i = 0; i < n; i++) hg_printf("%02x", b[i]);
}

void guest_main(void) {
  if (vio_find(&dev, VIO_ID_RNG, 0) != 0) hg_panic("vrng: no virtio-rng device\n");
  if (vio_begin(&dev, VIO_F_VERSION_1) != 0) hg_panic("vrng: features refused\n");
  vq_setup(&dev, &q, 0, 8);
  vio_driver_ok(&dev);

  u8 *a = hg_alloc(32, 16), *b = hg_alloc(32, 16);
  if (fill(a, 32) != 32 || fill(b, 32) != 32) hg_panic("vrng: short answer\n");
  hg_printf("vrng: a=");
  hex(a, 32);
  hg_printf(" b=");
  hex(b, 32);
  hg_printf("\n");

  u8 *big = hg_alloc(4096, 4096);
  u32 n = fill(big, 4096);
  u8 seen[256];
  memset(seen, 0, sizeof seen);
  u32 distinct = 0;
  for (u32 i = 0; i < n; i++) {
    if (!seen[big[i]]) { seen[big[i]] = 1; distinct++; }
  }
  hg_printf("vrng: big len=%d distinct=%d\n", n, distinct);
  hg_printf("vrng: done\n");
}
