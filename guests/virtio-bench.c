/*
 * virtio benchmark guest, ring 3, polling. bench/virtio-bench.ts times the
 * phases from the console lines (host clock), the guest also reports TSC
 * cycles. vbench.mode selects the work:
 *   blk: 4 KiB random reads at queue depth 1 (vbench.ops of them), 4 KiB
 *        random reads at queue depth 32, then sequential 128 KiB reads over
 *        the whole disk vbench.passes times; vbench.blk=<mask> picks phases
 *        (1 qd1, 2 qd32, 4 seq, 8 qd16; default 7). qd16 keeps 16 reads in
 *        flight: it reaps whatever completed, reposts as many, and notifies
 *        once per refill (what a polling driver does at a fixed depth).
 *   net: vbench.ops UDP frames with a 64-byte payload, then vbench.ops/4
 *        with a 1472-byte payload (full 1500-byte IP packets), sent to
 *        vbench.dst (10.213.2.1:9), notifying once per batch of 32.
 * Each phase prints "B <name> start" and "B <name> end ops=<n> bytes=<n> tsc=<cycles>".
 */
#include "virtio-drv.h"

#define T_IN 0
#define QD 32

static struct vio_dev dev;
static struct vq q;

static void mark_start(const char *name) { hg_printf("B %s start\n", name); }
static void mark_end(const char *name, u64 ops, u64 bytes, u64 tsc) { hg_printf("B %s end ops=%lu bytes=%lu tsc=%lu\n", name, ops, bytes, tsc); }

static u64 rng_state = 0x9e3779b97f4a7c15UL;
static u64 next_rand(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* Request slot i uses descriptors 3i..3i+2: header, data, status. */
static struct vblk_req_hdr *hdrs;
static u8 *stats;
static u8 *bufs;

static void blk_post(u16 i, u64 sector, u32 len) {
  hdrs[i].type = T_IN;
  hdrs[i].sector = sector;
  u16 d = (u16)(3 * i);
  vq_set_desc(&q, d, (u64)&hdrs[i], sizeof(struct vblk_req_hdr), VQ_F_NEXT, (u16)(d + 1));
  vq_set_desc(&q, (u16)(d + 1), (u64)(bufs + (u64)i * 131072), len, VQ_F_WRITE | VQ_F_NEXT, (u16)(d + 2));
  vq_set_desc(&q, (u16)(d + 2), (u64)&stats[i], 1, VQ_F_WRITE, 0);
  vq_publish(&q, d);
}

static void blk_wait(u64 n) {
  struct vq_used_elem e;
  for (u64 k = 0; k < n; k++) {
    if (vq_poll(&q, &e, 1UL << 34) != 0) hg_panic("vbench: blk request lost\n");
    if (stats[e.id / 3] != 0) hg_panic("vbench: blk status %d\n", stats[e.id / 3]);
  }
}

static void bench_blk(void) {
  if (vio_find(&dev, VIO_ID_BLOCK, 0) != 0) hg_panic("vbench: no virtio-blk\n");
  if (vio_begin(&dev, VIO_F_VERSION_1) != 0) hg_panic("vbench: features refused\n");
  vq_setup(&dev, &q, 0, 128);
  q.avail[0] = 1; /* VIRTQ_AVAIL_F_NO_INTERRUPT: this driver polls */
  vio_driver_ok(&dev);
  hdrs = hg_alloc(sizeof(struct vblk_req_hdr) * QD, 16);
  stats = hg_alloc(QD, 16);
  bufs = hg_alloc(131072UL * QD, 4096);
  u64 capacity = (u64)vio_r(&dev, VIO_CONFIG) | ((u64)vio_r(&dev, VIO_CONFIG + 4) << 32);
  u64 blocks = capacity / 8;
  u64 ops = vio_arg("vbench.ops", 20000);
  u64 passes = vio_arg("vbench.passes", 4);

  u64 mask = vio_arg("vbench.blk", 7);

  if (mask & 1) {
  mark_start("randread-qd1");
  u64 t0 = hg_rdtsc();
  for (u64 i = 0; i < ops; i++) {
    blk_post(0, (next_rand() % blocks) * 8, 4096);
    vq_notify(&q);
    blk_wait(1);
  }
  mark_end("randread-qd1", ops, ops * 4096, hg_rdtsc() - t0);
  }

  if (mask & 8) {
  const u16 depth = 16;
  mark_start("randread-qd16");
  u64 t0 = hg_rdtsc();
  u64 posted = 0, done = 0;
  for (u16 s = 0; s < depth && posted < ops; s++, posted++) blk_post(s, (next_rand() % blocks) * 8, 4096);
  vq_notify(&q);
  while (done < ops) {
    struct vq_used_elem e;
    u16 refill = 0;
    while (vq_has_used(&q)) {
      e = vq_take(&q);
      u16 slot = (u16)(e.id / 3);
      if (stats[slot] != 0) hg_panic("vbench: blk status %d\n", stats[slot]);
      done++;
      if (posted < ops) { blk_post(slot, (next_rand() % blocks) * 8, 4096); posted++; refill++; }
    }
    if (refill) vq_notify(&q);
  }
  mark_end("randread-qd16", ops, ops * 4096, hg_rdtsc() - t0);
  }

  if (mask & 2) {
  mark_start("randread-qd32");
  u64 t0 = hg_rdtsc();
  for (u64 i = 0; i < ops; i += QD) {
    for (u16 s = 0; s < QD; s++) blk_post(s, (next_rand() % blocks) * 8, 4096);
    vq_notify(&q);
    blk_wait(QD);
  }
  mark_end("randread-qd32", ops, ops * 4096, hg_rdtsc() - t0);
  }

  if (mask & 4) {
  mark_start("seqread-128k");
  u64 t0 = hg_rdtsc();
  u64 reqs = 0;
  for (u64 p = 0; p < passes; p++) {
    for (u64 s = 0; s + 256 <= capacity;) {
      u16 n = 0;
      for (; n < 8 && s + 256 <= capacity; n++, s += 256) blk_post(n, s, 131072);
      vq_notify(&q);
      blk_wait(n);
      reqs += n;
    }
  }
  mark_end("seqread-128k", reqs, reqs * 131072, hg_rdtsc() - t0);
  }
}

#define F_MAC (1UL << 5)
#define HDR 12

/* Sends `ops` UDP frames with `payload` bytes to vbench.dst:9 (batches of 32 per notify). */
static void net_phase(const char *name, const u8 *mac, u64 ops, u32 payload) {
  u64 dst = vio_arg("vbench.dst", 0x0ad50201);  /* 10.213.2.1 */
  u64 src = vio_arg("vbench.src", 0x0ad50202);  /* 10.213.2.2 */
  u64 dmac = vio_arg("vbench.dmac", 0xffffffffffffUL);
  const u32 flen = 14 + 20 + 8 + payload;
  const u64 stride = 2048;
  static u8 *frames;
  if (!frames) frames = hg_alloc((u64)q.size * stride, 64);
  for (u16 s = 0; s < q.size; s++) {
    u8 *b = frames + (u64)s * stride;
    memset(b, 0, HDR + flen);
    u8 *f = b + HDR;
    for (int i = 0; i < 6; i++) f[i] = (u8)(dmac >> (40 - 8 * i));
    memcpy(f + 6, mac, 6);
    f[12] = 0x08; f[13] = 0x00;
    u8 *ip = f + 14;
    u32 iplen = 20 + 8 + payload;
    ip[0] = 0x45; ip[2] = (u8)(iplen >> 8); ip[3] = (u8)iplen; ip[8] = 64; ip[9] = 17;
    for (int i = 0; i < 4; i++) { ip[12 + i] = (u8)(src >> (24 - 8 * i)); ip[16 + i] = (u8)(dst >> (24 - 8 * i)); }
    u32 sum = 0;
    for (int i = 0; i < 20; i += 2) sum += (u32)(ip[i] << 8 | ip[i + 1]);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    sum = ~sum & 0xffff;
    ip[10] = (u8)(sum >> 8); ip[11] = (u8)sum;
    u8 *udp = ip + 20;
    udp[0] = 0x30; udp[1] = 0x39; udp[2] = 0; udp[3] = 9; udp[4] = (u8)((8 + payload) >> 8); udp[5] = (u8)(8 + payload);
    vq_set_desc(&q, s, (u64)b, HDR + flen, 0, 0);
  }
  mark_start(name);
  u64 t0 = hg_rdtsc();
  u64 sent = 0, done = 0, inflight = 0;
  u16 slot = 0;
  while (done < ops) {
    u16 batch = 0;
    while (sent < ops && inflight < q.size && batch < 32) {
      vq_publish(&q, slot);
      slot = (u16)((slot + 1) % q.size);
      sent++; inflight++; batch++;
    }
    if (batch) vq_notify(&q);
    while (vq_has_used(&q)) { (void)vq_take(&q); done++; inflight--; }
  }
  mark_end(name, ops, ops * flen, hg_rdtsc() - t0);
}

static void bench_net(void) {
  struct vq rx;
  if (vio_find(&dev, VIO_ID_NET, 0) != 0) hg_panic("vbench: no virtio-net\n");
  if (vio_begin(&dev, VIO_F_VERSION_1 | F_MAC) != 0) hg_panic("vbench: features refused\n");
  u8 mac[6];
  for (int i = 0; i < 6; i++) mac[i] = hg_mmio_read8(dev.base + VIO_CONFIG + i);
  vq_setup(&dev, &rx, 0, 16);
  vq_setup(&dev, &q, 1, 256);
  vio_driver_ok(&dev);
  u64 ops = vio_arg("vbench.ops", 200000);
  net_phase("net-tx-64", mac, ops, 64);
  net_phase("net-tx-1472", mac, ops / 4, 1472);
}

void guest_main(void) {
  const char *c = hg_cmdline();
  bool net = false;
  for (const char *p = c; *p; p++) if (memcmp(p, "vbench.mode=net", 15) == 0) net = true;
  if (net) bench_net(); else bench_blk();
  hg_printf("vbench: done\n");
}
