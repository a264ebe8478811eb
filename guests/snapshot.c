/*
 * A guest that keeps working across a snapshot and restore, for
 * test/e2e/vmm-snapshot.test.ts. Every CPU counts in ring 3; CPU 0 also,
 * when a virtio-blk device is present, runs one write → read-back round
 * per step (interrupt-driven completion, so the irqchip's state matters):
 * round r writes sector r % 64 with a pattern of r, reads it back, and reads
 * sector (r-1) % 64 to check it still holds round r-1's pattern (written
 * before the snapshot, for the first round after a restore). Each step
 * prints one line:
 *
 *   snap: step=<n> cpus=<k> c0=<count> c1=<count> blk=<rounds>
 *
 * and any mismatch ends the VM as crashed ("snap: BAD ..."). It never ends
 * by itself. With `snap.touch=1` on the command line it first writes one
 * word into every page of the RAM it has left (for bench/snapshot-bench.ts:
 * a guest whose memory is all in use) and says "snap: touched <n> MiB".
 * With `snap.mmio=1` it only reads a counting test device in slot 7 and
 * checks each value is one more than the last ("snap: mmio n=<n>" every 256).
 */
#include "virtio-drv.h"

#define T_IN 0
#define T_OUT 1
#define SECTORS 64

static volatile u64 counts[32];
static struct vio_dev dev;
static struct vq q;
static struct vblk_req_hdr *hdr;
static volatile u8 *status;
static u8 *wbuf, *rbuf;
static volatile u32 irq_seen;

static void on_irq(int irq) {
  (void)irq;
  u32 s = hg_mmio_read32(dev.base + VIO_INTERRUPT_STATUS);
  hg_mmio_write32(dev.base + VIO_INTERRUPT_ACK, s);
  irq_seen++;
}

/* One 512-byte request, completed by interrupt. */
static u8 blk_io(u32 type, u64 sector, u8 *buf) {
  hdr->type = type;
  hdr->reserved = 0;
  hdr->sector = sector;
  *status = 0xee;
  vq_set_desc(&q, 0, (u64)hdr, sizeof *hdr, VQ_F_NEXT, 1);
  vq_set_desc(&q, 1, (u64)buf, 512, (u16)((type == T_OUT ? 0 : VQ_F_WRITE) | VQ_F_NEXT), 2);
  vq_set_desc(&q, 2, (u64)status, 1, VQ_F_WRITE, 0);
  u32 seen = irq_seen;
  vq_publish(&q, 0);
  vq_notify(&q);
  while (!vq_has_used(&q)) {
    hg_wait_change(&irq_seen, seen);
    seen = irq_seen;
  }
  (void)vq_take(&q);
  return *status;
}

static void pattern(u8 *b, u64 round) {
  for (u32 i = 0; i < 512; i++) b[i] = (u8)(round * 7 + i * 13 + (round >> 8));
}

static void blk_round(u64 r) {
  pattern(wbuf, r);
  u8 st = blk_io(T_OUT, r % SECTORS, wbuf);
  if (st != 0) hg_panic("snap: BAD write round=%lu status=%d\n", r, st);
  st = blk_io(T_IN, r % SECTORS, rbuf);
  if (st != 0 || memcmp(rbuf, wbuf, 512) != 0) hg_panic("snap: BAD readback round=%lu status=%d\n", r, st);
  if (r > 0) {
    st = blk_io(T_IN, (r - 1) % SECTORS, rbuf);
    pattern(wbuf, r - 1);
    if (st != 0 || memcmp(rbuf, wbuf, 512) != 0) hg_panic("snap: BAD previous round=%lu status=%d\n", r - 1, st);
  }
}

void guest_ap_main(int cpu) {
  for (;;) counts[cpu]++;
}

void guest_main(void) {
  if (vio_arg("snap.mmio", 0)) {
    /* Reads a 32-bit counter from a test device in virtio-mmio slot 7, which answers 1, 2, 3, …:
       a read that is lost or done twice across a snapshot shows as a gap or a repeat. */
    u64 dev7 = HG_VIRTIO_MMIO_BASE + 7 * HG_VIRTIO_MMIO_SIZE;
    for (u32 prev = 0;;) {
      u32 v = hg_mmio_read32(dev7);
      if (v != prev + 1) hg_panic("snap: BAD mmio read %u after %u\n", v, prev);
      prev = v;
      if ((v & 255) == 0) hg_printf("snap: mmio n=%u\n", v);
    }
  }
  int cpus = hg_cpu_count();
  bool blk = vio_find(&dev, VIO_ID_BLOCK, 0) == 0;
  if (blk) {
    if (vio_begin(&dev, VIO_F_VERSION_1) != 0) hg_panic("snap: BAD features\n");
    vq_setup(&dev, &q, 0, 16);
    vio_driver_ok(&dev);
    hdr = hg_alloc(sizeof *hdr, 16);
    status = hg_alloc(1, 1);
    wbuf = hg_alloc(512, 512);
    rbuf = hg_alloc(512, 512);
    hg_irq_register(dev.irq, on_irq);
  }
  if (vio_arg("snap.touch", 0)) {
    /* Everything above a 1 MiB margin past the heap, to 1 MiB below the top of RAM. */
    u64 from = ((u64)hg_alloc(4096, 4096) + (1UL << 20)) & ~0xfffUL, to = hg_ram_size() - (1UL << 20);
    for (u64 p = from; p < to; p += 4096) *(volatile u64 *)p = p;
    hg_printf("snap: touched %lu MiB\n", (to - from) >> 20);
  }
  hg_printf("snap: start cpus=%d blk=%d\n", cpus, blk ? 1 : 0);
  u64 rounds = 0;
  for (u64 step = 0;; step++) {
    for (u32 i = 0; i < (1u << 22); i++) counts[0]++;
    if (blk) blk_round(rounds++);
    hg_printf("snap: step=%lu cpus=%d c0=%lu c1=%lu blk=%lu\n", step, cpus, counts[0], cpus > 1 ? counts[1] : 0, rounds);
  }
}
