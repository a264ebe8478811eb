/*
 * Disk I/O for the monitoring test (test/e2e/monitoring-micro.test.ts):
 * reads the whole first virtio-blk disk once in 64 KiB requests, writes
 * 64 KiB at sector 0, prints "blkio: done" and then stays up, idle, so the
 * daemon's sampler finds the VM running with hangar-vmm's disk counters
 * showing that work.
 */
#include "virtio-drv.h"

#define T_IN 0
#define T_OUT 1

static struct vio_dev dev;
static struct vq q;
static struct vblk_req_hdr *hdr;
static volatile u8 *status;

static u8 blk_rw(u32 type, u64 sector, void *buf, u32 len) {
  hdr->type = type;
  hdr->reserved = 0;
  hdr->sector = sector;
  *status = 0xee;
  vq_set_desc(&q, 0, (u64)hdr, sizeof *hdr, VQ_F_NEXT, 1);
  vq_set_desc(&q, 1, (u64)buf, len, (type == T_OUT ? 0 : VQ_F_WRITE) | VQ_F_NEXT, 2);
  vq_set_desc(&q, 2, (u64)status, 1, VQ_F_WRITE, 0);
  vq_publish(&q, 0);
  vq_notify(&q);
  struct vq_used_elem e;
  if (vq_poll(&q, &e, 1UL << 32) != 0) return 0xff;
  return *status;
}

void guest_main(void) {
  if (vio_find(&dev, VIO_ID_BLOCK, 0) != 0) hg_panic("blkio: no virtio-blk device\n");
  if (vio_begin(&dev, VIO_F_VERSION_1) != 0) hg_panic("blkio: features refused\n");
  vq_setup(&dev, &q, 0, 16);
  vio_driver_ok(&dev);
  hdr = hg_alloc(sizeof *hdr, 16);
  status = hg_alloc(1, 1);
  u64 capacity = (u64)vio_r(&dev, VIO_CONFIG) | ((u64)vio_r(&dev, VIO_CONFIG + 4) << 32);

  const u32 chunk = 64 * 1024;
  u8 *buf = hg_alloc(chunk, 4096);
  u64 read = 0;
  for (u64 s = 0; s < capacity;) {
    u64 left = (capacity - s) * 512;
    u32 len = left < chunk ? (u32)left : chunk;
    if (blk_rw(T_IN, s, buf, len) != 0) hg_panic("blkio: read at sector %lu failed\n", s);
    read += len;
    s += len / 512;
  }
  for (u32 i = 0; i < chunk; i++) buf[i] = (u8)i;
  u8 wst = blk_rw(T_OUT, 0, buf, chunk);
  hg_printf("blkio: read=%lu write status=%d\n", read, wst);
  hg_printf("blkio: done\n");
  for (;;) hg_wait_for_interrupt();
}
