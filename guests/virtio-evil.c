/*
 * A hostile virtio driver. Against the first virtio-blk device it breaks
 * the virtqueue rules one way at a time and checks that the device answers
 * with DEVICE_NEEDS_RESET instead of taking the VMM down, then resets the
 * device and shows it still works. One line per case:
 *   evil: <case> needs_reset=<0|1>
 *   evil: fuzz survived
 *   evil: recovered status=<s>
 *   evil: done
 */
#include "virtio-drv.h"

static struct vio_dev dev;
static struct vq q;
static u8 *hdr;     /* 16-byte request header: IN, sector 0 */
static u8 *data;    /* 4 KiB data buffer */
static volatile u8 *status;

/* Fresh device: reset, negotiate (with indirect descriptors), queue 0 of 16, DRIVER_OK. */
static void fresh(void) {
  if (vio_begin(&dev, VIO_F_VERSION_1 | VIO_F_INDIRECT_DESC) != 0) hg_panic("evil: features refused\n");
  vq_setup(&dev, &q, 0, 16);
  vio_driver_ok(&dev);
  memset(hdr, 0, 16);
}

/* The notify may reach the device through an ioeventfd, after our write returned: give it time. */
static void report(const char *name) {
  int broken = 0;
  for (int i = 0; i < 20000 && !broken; i++) broken = vio_needs_reset(&dev);
  hg_printf("evil: %s needs_reset=%d\n", name, broken);
}

/* Header + data + status with the data descriptor as given. */
static void request_with_data(u64 addr, u32 len) {
  vq_set_desc(&q, 0, (u64)hdr, 16, VQ_F_NEXT, 1);
  vq_set_desc(&q, 1, addr, len, VQ_F_WRITE | VQ_F_NEXT, 2);
  vq_set_desc(&q, 2, (u64)status, 1, VQ_F_WRITE, 0);
  vq_publish(&q, 0);
  vq_notify(&q);
}

void guest_main(void) {
  if (vio_find(&dev, VIO_ID_BLOCK, 0) != 0) hg_panic("evil: no virtio-blk device\n");
  hdr = hg_alloc(16, 16);
  data = hg_alloc(4096, 4096);
  status = hg_alloc(1, 1);

  /* A data buffer far outside guest RAM. */
  fresh();
  request_with_data(0x7fff00000000UL, 512);
  report("outside-memory");

  /* A buffer that starts in RAM and runs past its end. */
  fresh();
  request_with_data(hg_ram_size() - 256, 512);
  report("straddles-end");

  /* A length of 4 GiB - 1 from a valid address. */
  fresh();
  request_with_data((u64)data, 0xffffffffU);
  report("oversized-length");

  /* A chain that loops: 0 -> 1 -> 0. */
  fresh();
  vq_set_desc(&q, 0, (u64)hdr, 16, VQ_F_NEXT, 1);
  vq_set_desc(&q, 1, (u64)data, 512, VQ_F_NEXT, 0);
  vq_publish(&q, 0);
  vq_notify(&q);
  report("chain-loop");

  /* A next pointer beyond the table. */
  fresh();
  vq_set_desc(&q, 0, (u64)hdr, 16, VQ_F_NEXT, 999);
  vq_publish(&q, 0);
  vq_notify(&q);
  report("next-index");

  /* An available ring entry naming a descriptor beyond the queue. */
  fresh();
  vq_publish(&q, 200);
  vq_notify(&q);
  report("head-index");

  /* An available index claiming far more entries than the queue holds. */
  fresh();
  q.avail[1] = 1000;
  hg_barrier();
  vq_notify(&q);
  report("avail-index");

  /* An indirect table that loops on itself. */
  fresh();
  {
    volatile struct vq_desc *t = hg_alloc(64, 16);
    t[0].addr = (u64)hdr; t[0].len = 16; t[0].flags = VQ_F_NEXT; t[0].next = 1;
    t[1].addr = (u64)data; t[1].len = 512; t[1].flags = VQ_F_WRITE | VQ_F_NEXT; t[1].next = 0;
    vq_set_desc(&q, 0, (u64)t, 32, VQ_F_INDIRECT, 0);
    vq_publish(&q, 0);
    vq_notify(&q);
  }
  report("indirect-loop");

  /* Rings placed outside guest RAM: refused when the queue is made ready. */
  if (vio_begin(&dev, VIO_F_VERSION_1) != 0) hg_panic("evil: features refused\n");
  q.base = dev.base;
  q.index = 0;
  q.size = 16;
  q.desc = (volatile struct vq_desc *)0x7f0000000000UL;
  q.avail = (volatile u16 *)hg_alloc(64, 4096);
  q.used = (volatile u8 *)hg_alloc(256, 4096);
  vq_program(&dev, &q);
  report("ring-outside-memory");

  /* Register fuzz: odd widths, unknown offsets, garbage values, notify of missing queues. */
  fresh();
  for (u32 off = 0; off < 0x200; off += 1) {
    hg_mmio_write8(dev.base + off, (u8)(off * 7));
    (void)hg_mmio_read8(dev.base + off);
  }
  for (u32 off = 0; off < 0x100; off += 4) {
    if (off == VIO_STATUS) continue;
    hg_mmio_write32(dev.base + off, 0xdeadbeef ^ off);
  }
  hg_mmio_write32(dev.base + VIO_QUEUE_NOTIFY, 77);
  hg_printf("evil: fuzz survived magic=%x\n", hg_mmio_read32(dev.base));

  /* After a reset the device serves a normal read again. */
  fresh();
  {
    struct vq_used_elem e;
    request_with_data((u64)data, 4096);
    int ok = vq_poll(&q, &e, 1UL << 30);
    hg_printf("evil: recovered status=%d\n", ok == 0 ? *status : 0xff);
  }
  hg_printf("evil: done\n");
}
