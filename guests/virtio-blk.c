/*
 * virtio-blk conformance guest. Drives the first virtio-blk device from ring
 * 3 and prints one line per check, which test/e2e/virtio-blk.test.ts compares
 * with the backing file:
 *   vblk: capacity=<sectors> ro=<0|1>
 *   vblk: id=<serial>
 *   vblk: read-hash=<fnv1a64 of the whole disk, hex>
 *   vblk: write status=<s> flush status=<s>         (16 sectors at vblk.wsector, pattern from vblk.seed)
 *   vblk: readback match=<0|1>                      (only when the write succeeded)
 *   vblk: oob status=<s>                            (a read one sector past the end)
 *   vblk: irq reads=<n> irqs=<n>                    (interrupt-driven completions)
 *   vblk: done
 */
#include "virtio-drv.h"

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define F_RO (1UL << 5)
#define F_FLUSH (1UL << 9)

static struct vio_dev dev;
static struct vq q;
static struct vblk_req_hdr *hdr;
static volatile u8 *status;
static volatile u32 irq_seen;

/* Ring 0: acknowledge the device so the level-triggered line drops, count the interrupt. */
static void on_irq(int irq) {
  (void)irq;
  u32 s = hg_mmio_read32(dev.base + VIO_INTERRUPT_STATUS);
  hg_mmio_write32(dev.base + VIO_INTERRUPT_ACK, s);
  irq_seen++;
}

/* One request: header, up to two data buffers, status. Returns the status byte (0xff: no completion). */
static u8 blk_rw(u32 type, u64 sector, void *a, u32 alen, void *b, u32 blen, bool wait_irq) {
  hdr->type = type;
  hdr->reserved = 0;
  hdr->sector = sector;
  *status = 0xee;
  u16 data_flags = (type == T_OUT) ? 0 : VQ_F_WRITE;
  u16 n = 0;
  vq_set_desc(&q, n, (u64)hdr, sizeof *hdr, VQ_F_NEXT, (u16)(n + 1)); n++;
  if (alen) { vq_set_desc(&q, n, (u64)a, alen, data_flags | VQ_F_NEXT, (u16)(n + 1)); n++; }
  if (blen) { vq_set_desc(&q, n, (u64)b, blen, data_flags | VQ_F_NEXT, (u16)(n + 1)); n++; }
  vq_set_desc(&q, n, (u64)status, 1, VQ_F_WRITE, 0);
  u32 seen = irq_seen;
  vq_publish(&q, 0);
  vq_notify(&q);
  struct vq_used_elem e;
  if (wait_irq) {
    while (!vq_has_used(&q)) {
      hg_wait_change(&irq_seen, seen);
      seen = irq_seen;
    }
  }
  if (vq_poll(&q, &e, 1UL << 32) != 0) return 0xff;
  return *status;
}

void guest_main(void) {
  if (vio_find(&dev, VIO_ID_BLOCK, 0) != 0) hg_panic("vblk: no virtio-blk device\n");
  if (vio_begin(&dev, VIO_F_VERSION_1 | F_RO | F_FLUSH) != 0) hg_panic("vblk: features refused\n");
  vq_setup(&dev, &q, 0, 16);
  vio_driver_ok(&dev);
  hdr = hg_alloc(sizeof *hdr, 16);
  status = hg_alloc(1, 1);

  u64 capacity = (u64)vio_r(&dev, VIO_CONFIG) | ((u64)vio_r(&dev, VIO_CONFIG + 4) << 32);
  bool ro = (dev.features & F_RO) != 0;
  hg_printf("vblk: capacity=%lu ro=%d\n", capacity, ro ? 1 : 0);

  char *id = hg_alloc(21, 1);
  u8 st = blk_rw(T_GET_ID, 0, id, 20, 0, 0, false);
  if (st != 0) hg_panic("vblk: GET_ID status %d\n", st);
  hg_printf("vblk: id=%s\n", id);

  /* Whole-disk read in 64 KiB requests, each split over two descriptors (gather), hashed in ring 3. */
  const u32 chunk = 64 * 1024;
  u8 *buf = hg_alloc(chunk, 4096);
  u64 h = FNV_INIT;
  for (u64 s = 0; s < capacity;) {
    u64 left = (capacity - s) * 512;
    u32 len = left < chunk ? (u32)left : chunk;
    u32 first = len > 4096 ? 4096 : len;
    st = blk_rw(T_IN, s, buf, first, buf + first, len - first, false);
    if (st != 0) hg_panic("vblk: read at sector %lu status %d\n", s, st);
    h = fnv1a(h, buf, len);
    s += len / 512;
  }
  hg_printf("vblk: read-hash=%lx\n", h);

  /* 16 sectors of a pattern at wsector, written from two buffers (3 KiB + 5 KiB), then flushed. */
  u64 wsector = vio_arg("vblk.wsector", 8);
  u64 seed = vio_arg("vblk.seed", 1);
  u8 *pat = hg_alloc(8192, 4096);
  for (u32 i = 0; i < 8192; i++) pat[i] = (u8)(i * 31 + seed);
  u8 wst = blk_rw(T_OUT, wsector, pat, 3072, pat + 3072, 8192 - 3072, false);
  u8 fst = blk_rw(T_FLUSH, 0, 0, 0, 0, 0, false);
  hg_printf("vblk: write status=%d flush status=%d\n", wst, fst);
  if (wst == 0) {
    u8 *back = hg_alloc(8192, 4096);
    st = blk_rw(T_IN, wsector, back, 8192, 0, 0, false);
    hg_printf("vblk: readback match=%d\n", st == 0 && memcmp(back, pat, 8192) == 0 ? 1 : 0);
  }

  hg_printf("vblk: oob status=%d\n", blk_rw(T_IN, capacity, buf, 512, 0, 0, false));

  /* Interrupt-driven: wait for the device's interrupt instead of spinning. */
  hg_irq_register(dev.irq, on_irq);
  u32 ok = 0;
  for (int i = 0; i < 8; i++) {
    if (blk_rw(T_IN, (u64)i * 8, buf, 4096, 0, 0, true) == 0) ok++;
  }
  hg_printf("vblk: irq reads=%d irqs=%d\n", ok, irq_seen);
  hg_printf("vblk: done\n");
}
