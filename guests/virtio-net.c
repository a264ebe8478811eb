/*
 * virtio-net echo guest. Owns IPv4 address vnet.ip (default 10.213.1.2),
 * answers ARP requests for it, and echoes every UDP datagram sent to port
 * 7777 back to its sender with the payload unchanged (swapping addresses and
 * ports keeps both checksums valid). A datagram whose payload is "quit" is
 * echoed and ends the guest. Everything runs in ring 3 by polling the rings.
 *   vnet: mac=<mac> ready
 *   vnet: echoed=<n> arp=<n> other=<n>
 *   vnet: done
 */
#include "virtio-drv.h"

#define F_MAC (1UL << 5)
#define F_STATUS (1UL << 16)
#define HDR 12
#define RXQ_SIZE 64
#define BUF_SIZE 2048
#define ECHO_PORT 7777

static struct vio_dev dev;
static struct vq rx, tx;
static u8 *rxbuf[RXQ_SIZE];
static u8 *txbuf[RXQ_SIZE];
static u16 tx_next;
static u8 mac[6];
static u8 myip[4];

static u16 be16(const u8 *p) { return (u16)(p[0] << 8 | p[1]); }
static void swap(u8 *a, u8 *b, u32 n) {
  for (u32 i = 0; i < n; i++) { u8 t = a[i]; a[i] = b[i]; b[i] = t; }
}

static void post_rx(u16 i) {
  vq_set_desc(&rx, i, (u64)rxbuf[i], BUF_SIZE, VQ_F_WRITE, 0);
  vq_publish(&rx, i);
}

/* Sends txbuf[slot] (header + frame already in place) and waits until the device took it. */
static void send(u16 slot, u32 frame_len) {
  struct vq_used_elem e;
  vq_set_desc(&tx, slot, (u64)txbuf[slot], HDR + frame_len, 0, 0);
  vq_publish(&tx, slot);
  vq_notify(&tx);
  if (vq_poll(&tx, &e, 1UL << 32) != 0) hg_panic("vnet: transmit never completed\n");
}

void guest_main(void) {
  if (vio_find(&dev, VIO_ID_NET, 0) != 0) hg_panic("vnet: no virtio-net device\n");
  if (vio_begin(&dev, VIO_F_VERSION_1 | F_MAC | F_STATUS) != 0) hg_panic("vnet: features refused\n");
  for (int i = 0; i < 6; i++) mac[i] = hg_mmio_read8(dev.base + VIO_CONFIG + i);
  u64 ip = vio_arg("vnet.ip", 0x0ad50102); /* 10.213.1.2 */
  for (int i = 0; i < 4; i++) myip[i] = (u8)(ip >> (24 - 8 * i));
  vq_setup(&dev, &rx, 0, RXQ_SIZE);
  vq_setup(&dev, &tx, 1, RXQ_SIZE);
  for (u16 i = 0; i < rx.size; i++) {
    rxbuf[i] = hg_alloc(BUF_SIZE, 64);
    txbuf[i] = hg_alloc(BUF_SIZE, 64);
  }
  vio_driver_ok(&dev);
  for (u16 i = 0; i < rx.size; i++) post_rx(i);
  vq_notify(&rx);
  hg_printf("vnet: mac=%02x:%02x:%02x:%02x:%02x:%02x ready\n", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);

  u64 echoed = 0, arp = 0, other = 0;
  bool quit = false;
  while (!quit) {
    if (!vq_has_used(&rx)) { hg_pause(); continue; }
    struct vq_used_elem e = vq_take(&rx);
    u16 id = (u16)e.id;
    if (id >= rx.size || e.len < HDR + 14 || e.len > BUF_SIZE) hg_panic("vnet: bad used element id=%d len=%d\n", id, e.len);
    u8 *f = rxbuf[id] + HDR;
    u32 len = e.len - HDR;
    u16 type = be16(f + 12);
    u16 slot = tx_next;
    tx_next = (u16)((tx_next + 1) % tx.size);
    u8 *o = txbuf[slot];
    memset(o, 0, HDR);
    if (type == 0x0806 && len >= 42 && be16(f + 20) == 1 && memcmp(f + 38, myip, 4) == 0) {
      /* ARP request for us: answer with our MAC. */
      u8 *r = o + HDR;
      memcpy(r, f + 6, 6);
      memcpy(r + 6, mac, 6);
      memcpy(r + 12, f + 12, 8); /* type, htype, ptype, hlen, plen */
      r[20] = 0; r[21] = 2;      /* reply */
      memcpy(r + 22, mac, 6);
      memcpy(r + 28, myip, 4);
      memcpy(r + 32, f + 22, 10); /* sender MAC and IP become the target */
      send(slot, 42);
      arp++;
    } else if (type == 0x0800 && len >= 42 && f[23] == 17 && memcmp(f + 30, myip, 4) == 0 && be16(f + 36) == ECHO_PORT) {
      u32 ihl = (u32)(f[14] & 0xf) * 4;
      u8 *r = o + HDR;
      memcpy(r, f, len);
      swap(r, r + 6, 6);
      memcpy(r + 6, mac, 6);
      swap(r + 26, r + 30, 4);
      swap(r + 14 + ihl, r + 14 + ihl + 2, 2);
      u32 plen = be16(f + 14 + ihl + 4) - 8;
      quit = plen == 4 && memcmp(f + 14 + ihl + 8, "quit", 4) == 0;
      send(slot, len);
      echoed++;
    } else {
      other++;
    }
    post_rx(id);
    vq_notify(&rx);
  }
  hg_printf("vnet: echoed=%lu arp=%lu other=%lu\n", echoed, arp, other);
  hg_printf("vnet: done\n");
}
