/*
 * A minimal virtio-mmio (version 2) driver for Hangar's test guests: device
 * discovery over the virtio-mmio slots, feature negotiation, split
 * virtqueues in memory from hg_alloc (identity-mapped, so virtual address =
 * guest-physical address), and polling or interrupt-driven completion. All
 * of it runs in ring 3; only the optional IRQ handler runs in ring 0.
 *
 * It is deliberately small and also lets a test guest break the rules on
 * purpose (raw descriptor writes, raw avail index) to check that the VMM
 * survives hostile drivers.
 */
#ifndef HANGAR_VIRTIO_DRV_H
#define HANGAR_VIRTIO_DRV_H
#include "hangar.h"

/* From lib.c: halts unless *word != seen, checked with interrupts off so no wake-up is lost. */
void hg_wait_change(volatile u32 *word, u32 seen);

#define VIO_MAGIC 0x000
#define VIO_VERSION 0x004
#define VIO_DEVICE_ID 0x008
#define VIO_DEVICE_FEATURES 0x010
#define VIO_DEVICE_FEATURES_SEL 0x014
#define VIO_DRIVER_FEATURES 0x020
#define VIO_DRIVER_FEATURES_SEL 0x024
#define VIO_QUEUE_SEL 0x030
#define VIO_QUEUE_NUM_MAX 0x034
#define VIO_QUEUE_NUM 0x038
#define VIO_QUEUE_READY 0x044
#define VIO_QUEUE_NOTIFY 0x050
#define VIO_INTERRUPT_STATUS 0x060
#define VIO_INTERRUPT_ACK 0x064
#define VIO_STATUS 0x070
#define VIO_QUEUE_DESC_LOW 0x080
#define VIO_QUEUE_DESC_HIGH 0x084
#define VIO_QUEUE_DRIVER_LOW 0x090
#define VIO_QUEUE_DRIVER_HIGH 0x094
#define VIO_QUEUE_DEVICE_LOW 0x0a0
#define VIO_QUEUE_DEVICE_HIGH 0x0a4
#define VIO_CONFIG 0x100

#define VIO_S_ACKNOWLEDGE 1
#define VIO_S_DRIVER 2
#define VIO_S_DRIVER_OK 4
#define VIO_S_FEATURES_OK 8
#define VIO_S_NEEDS_RESET 0x40

#define VIO_F_VERSION_1 (1UL << 32)
#define VIO_F_INDIRECT_DESC (1UL << 28)
#define VIO_F_EVENT_IDX (1UL << 29)

#define VIO_ID_NET 1
#define VIO_ID_BLOCK 2
#define VIO_ID_RNG 4

#define VQ_F_NEXT 1
#define VQ_F_WRITE 2
#define VQ_F_INDIRECT 4

struct vq_desc {
  u64 addr;
  u32 len;
  u16 flags;
  u16 next;
};

struct vq_used_elem {
  u32 id;
  u32 len;
};

struct vq {
  u64 base; /* device registers */
  u16 index;
  u16 size;
  volatile struct vq_desc *desc;
  volatile u16 *avail; /* [0] flags, [1] idx, [2 + i] ring, [2 + size] used_event */
  volatile u8 *used;   /* u16 flags, u16 idx, then struct vq_used_elem ring[size] */
  u16 avail_idx;
  u16 last_used;
};

/* The header that starts every virtio-blk request (virtio 1.x, 5.2.6): type (0 read, 1 write, ...), sector. */
struct vblk_req_hdr {
  u32 type;
  u32 reserved;
  u64 sector;
};

struct vio_dev {
  u64 base;
  int slot;
  int irq;
  u64 features;
};

static inline u32 vio_r(const struct vio_dev *d, u32 off) { return hg_mmio_read32(d->base + off); }
static inline void vio_w(const struct vio_dev *d, u32 off, u32 v) { hg_mmio_write32(d->base + off, v); }

/*
 * Where virtio-mmio transports may sit: hangar-vmm's slots, then QEMU
 * microvm's (24 transports of 512 bytes from 0xfeb00000, found when the same
 * image runs there through its PVH entry). Unused transports read as magic
 * "virt" with device id 0, or as nothing at all.
 */
#define VIO_QEMU_MICROVM_BASE 0xfeb00000UL
#define VIO_QEMU_MICROVM_STRIDE 0x200UL
#define VIO_QEMU_MICROVM_SLOTS 24

static inline int vio_probe_window(struct vio_dev *d, u32 device_id, int *nth, u64 start, u64 stride, int slots, int irq_known) {
  for (int s = 0; s < slots; s++) {
    u64 base = start + (u64)s * stride;
    if (hg_mmio_read32(base + VIO_MAGIC) != 0x74726976) continue;
    if (hg_mmio_read32(base + VIO_DEVICE_ID) != device_id) continue;
    if ((*nth)-- > 0) continue;
    d->base = base;
    d->slot = s;
    d->irq = irq_known ? hg_virtio_mmio_irqs[s] : -1;
    return 0;
  }
  return -1;
}

/* Finds the nth (0-based) virtio-mmio device of `device_id`; returns 0 on success. */
static inline int vio_find(struct vio_dev *d, u32 device_id, int nth) {
  if (vio_probe_window(d, device_id, &nth, HG_VIRTIO_MMIO_BASE, HG_VIRTIO_MMIO_SIZE, HG_VIRTIO_MMIO_SLOTS, 1) == 0) return 0;
  return vio_probe_window(d, device_id, &nth, VIO_QEMU_MICROVM_BASE, VIO_QEMU_MICROVM_STRIDE, VIO_QEMU_MICROVM_SLOTS, 0);
}

static inline u64 vio_device_features(const struct vio_dev *d) {
  vio_w(d, VIO_DEVICE_FEATURES_SEL, 1);
  u64 hi = vio_r(d, VIO_DEVICE_FEATURES);
  vio_w(d, VIO_DEVICE_FEATURES_SEL, 0);
  return (hi << 32) | vio_r(d, VIO_DEVICE_FEATURES);
}

/* Reset, ACKNOWLEDGE, DRIVER, accept offered & want, FEATURES_OK. Returns 0 when the device kept FEATURES_OK. */
static inline int vio_begin(struct vio_dev *d, u64 want) {
  vio_w(d, VIO_STATUS, 0);
  vio_w(d, VIO_STATUS, VIO_S_ACKNOWLEDGE);
  vio_w(d, VIO_STATUS, VIO_S_ACKNOWLEDGE | VIO_S_DRIVER);
  d->features = vio_device_features(d) & want;
  vio_w(d, VIO_DRIVER_FEATURES_SEL, 0);
  vio_w(d, VIO_DRIVER_FEATURES, (u32)d->features);
  vio_w(d, VIO_DRIVER_FEATURES_SEL, 1);
  vio_w(d, VIO_DRIVER_FEATURES, (u32)(d->features >> 32));
  vio_w(d, VIO_STATUS, VIO_S_ACKNOWLEDGE | VIO_S_DRIVER | VIO_S_FEATURES_OK);
  return (vio_r(d, VIO_STATUS) & VIO_S_FEATURES_OK) ? 0 : -1;
}

static inline void vio_driver_ok(struct vio_dev *d) { vio_w(d, VIO_STATUS, vio_r(d, VIO_STATUS) | VIO_S_DRIVER_OK); }

static inline int vio_needs_reset(const struct vio_dev *d) { return (vio_r(d, VIO_STATUS) & VIO_S_NEEDS_RESET) != 0; }

/* Tells the device where the rings live (already allocated in q), then marks the queue ready. */
static inline void vq_program(struct vio_dev *d, struct vq *q) {
  vio_w(d, VIO_QUEUE_SEL, q->index);
  vio_w(d, VIO_QUEUE_NUM, q->size);
  vio_w(d, VIO_QUEUE_DESC_LOW, (u32)(u64)q->desc);
  vio_w(d, VIO_QUEUE_DESC_HIGH, (u32)((u64)q->desc >> 32));
  vio_w(d, VIO_QUEUE_DRIVER_LOW, (u32)(u64)q->avail);
  vio_w(d, VIO_QUEUE_DRIVER_HIGH, (u32)((u64)q->avail >> 32));
  vio_w(d, VIO_QUEUE_DEVICE_LOW, (u32)(u64)q->used);
  vio_w(d, VIO_QUEUE_DEVICE_HIGH, (u32)((u64)q->used >> 32));
  vio_w(d, VIO_QUEUE_READY, 1);
}

/* Allocates rings for queue `index` (size capped at the device's maximum) and programs them. */
static inline void vq_setup(struct vio_dev *d, struct vq *q, u16 index, u16 size) {
  vio_w(d, VIO_QUEUE_SEL, index);
  u32 max = vio_r(d, VIO_QUEUE_NUM_MAX);
  if (max == 0) hg_panic("virtio: queue %d does not exist\n", index);
  if (size > max) size = (u16)max;
  q->base = d->base;
  q->index = index;
  q->size = size;
  q->desc = (volatile struct vq_desc *)hg_alloc(16UL * size, 4096);
  q->avail = (volatile u16 *)hg_alloc(6UL + 2UL * size, 4096);
  q->used = (volatile u8 *)hg_alloc(6UL + 8UL * size, 4096);
  q->avail_idx = 0;
  q->last_used = 0;
  vq_program(d, q);
}

static inline void vq_set_desc(struct vq *q, u16 i, u64 addr, u32 len, u16 flags, u16 next) {
  q->desc[i].addr = addr;
  q->desc[i].len = len;
  q->desc[i].flags = flags;
  q->desc[i].next = next;
}

/* Makes the chain starting at `head` available (no notify). */
static inline void vq_publish(struct vq *q, u16 head) {
  q->avail[2 + (q->avail_idx % q->size)] = head;
  hg_barrier();
  q->avail_idx++;
  q->avail[1] = q->avail_idx;
  hg_barrier();
}

static inline void vq_notify(struct vq *q) { hg_mmio_write32(q->base + VIO_QUEUE_NOTIFY, q->index); }

static inline u16 vq_used_idx(const struct vq *q) { return *(volatile u16 *)(q->used + 2); }

static inline int vq_has_used(const struct vq *q) { return vq_used_idx(q) != q->last_used; }

/* Takes one used element; call only when vq_has_used. */
static inline struct vq_used_elem vq_take(struct vq *q) {
  hg_barrier();
  volatile struct vq_used_elem *e = (volatile struct vq_used_elem *)(q->used + 4 + 8 * (q->last_used % q->size));
  struct vq_used_elem r = {e->id, e->len};
  q->last_used++;
  return r;
}

/* Spins (ring 3, natively) until the device returns a chain, at most `spins` polls; 0 on success. */
static inline int vq_poll(struct vq *q, struct vq_used_elem *out, u64 spins) {
  for (u64 i = 0; i < spins; i++) {
    if (vq_has_used(q)) {
      *out = vq_take(q);
      return 0;
    }
    hg_pause();
  }
  return -1;
}

/* ---- small helpers shared by the guests ---- */

/* Parses "key=<number>" (decimal or 0x hex) from the command line; dflt when absent. */
static inline u64 vio_arg(const char *key, u64 dflt) {
  const char *c = hg_cmdline();
  size_t kl = strlen(key);
  for (const char *p = c; *p; p++) {
    if ((p == c || p[-1] == ' ') && memcmp(p, key, kl) == 0 && p[kl] == '=') {
      const char *v = p + kl + 1;
      u64 n = 0;
      if (v[0] == '0' && v[1] == 'x') {
        for (v += 2; *v && *v != ' '; v++) n = n * 16 + (u64)(*v <= '9' ? *v - '0' : (*v | 0x20) - 'a' + 10);
      } else {
        for (; *v >= '0' && *v <= '9'; v++) n = n * 10 + (u64)(*v - '0');
      }
      return n;
    }
  }
  return dflt;
}

/* FNV-1a, 64 bit: the checksum the host side recomputes over the backing file. */
static inline u64 fnv1a(u64 h, const volatile u8 *p, u64 n) {
  for (u64 i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001b3UL;
  }
  return h;
}
#define FNV_INIT 0xcbf29ce484222325UL

#endif
