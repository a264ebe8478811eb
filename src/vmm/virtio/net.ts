/**
 * virtio-net over a frame backend (a TAP fd in production, a fake in unit
 * tests). Queue 0 receives, queue 1 transmits; frames go to the TAP as one
 * gathered write straight from guest memory.
 *
 * Two modes, by the backend:
 * - plain (no header on the TAP): no offloads; the 12-byte virtio_net_hdr is
 *   all zeros on receive (num_buffers = 1) and skipped on transmit.
 * - vnet header (a TAP with IFF_VNET_HDR, header size 12): checksum offload
 *   and TSO both ways. The driver's header goes to the TAP as it is (the
 *   kernel checks it, as for any TAP user), and the TAP's header reaches the
 *   driver as it is: partial checksums and TCP segments of up to 64 KiB
 *   instead of one 1500-byte frame per event. No mergeable receive buffers: a
 *   Linux driver that takes GUEST_TSO without MRG_RXBUF posts "big" receive
 *   chains (about 64 KiB each), so every frame fits one chain.
 *   HANGAR_VIRTIO_NET_OFFLOAD=0 turns this mode off (for A/B measurements).
 *
 * On a TAP the NIC's frames are moved by an I/O thread of its own
 * (net-io-thread.ts): it wakes on the guest's kicks (ioeventfds) and on the
 * TAP, transmits and receives in one pass and raises one interrupt; this
 * thread then never watches the TAP. Without it (HANGAR_VIRTIO_NET_IOTHREAD=0,
 * or no ioeventfds) the transmit queue is served by the vCPU thread whose
 * guest kicked it (net-fast.ts), so a transmit completion never waits for the
 * device thread — one that does holds a Linux sender back (its socket may not
 * queue more until the driver has freed what it sent) — and receiving stays
 * on the device thread's event loop.
 */
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { MAC_PATTERN } from '../../api/name-rules.js';
import { HangarError } from '../../common/errors.js';
import { errno, errnoName, libc, watchReadable, type FdWatch } from '../../kvm/libc.js';
import { setTapOffload, setTapVnetHdrSize, tapHasVnetHdr, TUN_F } from '../../kvm/tap.js';
import type { DeviceMetrics } from '../devices/device.js';
import type { VirtioContext, VirtioDevice } from './mmio.js';
import { VIRTIO_ID } from './mmio.js';
import { NetFastPath, type NetFastShare } from './net-fast.js';
import { MAX_FRAME, NET_QUEUE_SIZE, RXQ, TXQ, TX, VIRTIO_NET_HDR_BYTES, createTxCounters, tapSend, transmitQueue } from './net-transmit.js';
import { RX, createRxCounters, receiveQueue } from './net-receive.js';
import type { Virtqueue } from './queue.js';
import { openTap } from './tap.js';

export const VIRTIO_NET_F = {
  CSUM: 0n, GUEST_CSUM: 1n, GUEST_TSO4: 7n, GUEST_TSO6: 8n, HOST_TSO4: 11n, HOST_TSO6: 12n, MAC: 5n, STATUS: 16n,
} as const;
/** What we offer on a backend with virtio-net headers: checksum offload and TSO, both ways. */
export const OFFLOAD_FEATURES = [VIRTIO_NET_F.CSUM, VIRTIO_NET_F.GUEST_CSUM, VIRTIO_NET_F.GUEST_TSO4, VIRTIO_NET_F.GUEST_TSO6, VIRTIO_NET_F.HOST_TSO4, VIRTIO_NET_F.HOST_TSO6]
  .reduce<bigint>((m, b) => m | (1n << b), 0n);
export const VIRTIO_NET_S_LINK_UP = 1;
export { MAX_FRAME, NET_QUEUE_SIZE, RXQ, TXQ, VIRTIO_NET_HDR_BYTES };

/** HANGAR_VIRTIO_NET_FAST=0 keeps transmitting on the device thread (for A/B measurements). */
export function netFastPathEnabled(): boolean {
  return process.env.HANGAR_VIRTIO_NET_FAST !== '0';
}

/** Frames received per wake-up before yielding to the event loop. */
const RX_BATCH = 256;


/** Where frames come from and go to. */
export interface FrameBackend {
  /** Reads one waiting frame into `buf`; its length, or null when none is waiting. */
  recv(buf: Uint8Array): number | null;
  /** Sends one frame gathered from `bufs`; false when the backend dropped it. */
  send(bufs: Uint8Array[]): boolean;
  /** Calls `onReadable` (from the event loop) whenever frames may be waiting, until unwatch(). */
  watch(onReadable: () => void): void;
  unwatch(): void;
  close(): void;
  /** Frames carry a 12-byte virtio_net_hdr both ways (recv fills bytes 0..9, send takes all 12). */
  readonly vnetHdr?: boolean;
  /** Which offloads (TUN_F bits) the receiving side takes; only with vnetHdr. */
  setOffload?(flags: number): void;
}

/** A non-blocking TAP fd, watched through the Node event loop. */
export class TapBackend implements FrameBackend {
  private poller: FdWatch | null = null;
  private fd: number | null;
  readonly vnetHdr: boolean;

  constructor(readonly tapName: string, fd: number) {
    this.fd = fd;
    // Whoever opened the descriptor chose (the daemon for an inherited one); the header is the virtio 1.x one.
    this.vnetHdr = process.env.HANGAR_VIRTIO_NET_OFFLOAD !== '0' && tapHasVnetHdr(fd);
    if (this.vnetHdr) {
      setTapVnetHdrSize(fd, VIRTIO_NET_HDR_BYTES);
      setTapOffload(fd, 0);
    }
  }

  setOffload(flags: number): void {
    if (this.fd !== null && this.vnetHdr) setTapOffload(this.fd, flags);
  }

  /** The open fd (valid on every thread of the process; this backend closes it), or null once closed. */
  get openFd(): number | null {
    return this.fd;
  }

  static open(name: string): TapBackend {
    const tap = openTap(name);
    return new TapBackend(tap.name, tap.fd);
  }

  recv(buf: Uint8Array): number | null {
    if (this.fd === null) return null;
    // read(2) itself, not fs.readSync: every wake-up ends with an empty read, and fs.readSync
    // reports that by throwing an error object (a stack trace per wake-up, costly in a nested guest).
    const n = libc.read(this.fd, buf as Buffer, buf.length);
    if (n >= 0) return n;
    const e = errno();
    if (e === EAGAIN) return null;
    throw new HangarError('INTERNAL', `reading TAP ${this.tapName} failed: ${errnoName(e)}`);
  }

  send(bufs: Uint8Array[]): boolean {
    return this.fd !== null && tapSend(this.fd, bufs);
  }

  watch(onReadable: () => void): void {
    if (this.fd === null) return;
    // A NIC waiting for frames never keeps the VMM process alive by itself (watchReadable unrefs).
    if (!this.poller) this.poller = watchReadable(this.fd, onReadable);
    else this.poller.start(onReadable);
  }

  unwatch(): void {
    this.poller?.stop();
  }

  close(): void {
    this.poller?.close();
    this.poller = null;
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}

const EAGAIN = 11;
const MAC_RE = new RegExp(MAC_PATTERN);

/** Parses "52:54:00:12:34:56"; throws INVALID_ARGUMENT for anything else or a multicast address. */
export function parseMac(mac: string): Uint8Array {
  const m = MAC_RE.test(mac) ? mac.split(':').map((h) => parseInt(h, 16)) : null;
  if (!m) throw new HangarError('INVALID_ARGUMENT', `"${mac}" is not a MAC address like 52:54:00:12:34:56`);
  if (m[0]! & 1) throw new HangarError('INVALID_ARGUMENT', `MAC ${mac} is a multicast address`);
  return Uint8Array.from(m);
}

export function formatMac(mac: Uint8Array): string {
  return [...mac].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** A random locally administered unicast MAC. */
function randomMac(): Uint8Array {
  const m = randomBytes(6);
  m[0] = (m[0]! & 0xfc) | 0x02;
  return m;
}

export interface NetOptions {
  id: string;
  mac?: string;
}

export class VirtioNet implements VirtioDevice {
  readonly kind: string;
  readonly deviceId = VIRTIO_ID.NET;
  readonly features: bigint;
  readonly queueMaxSizes = [NET_QUEUE_SIZE, NET_QUEUE_SIZE];
  readonly configSize = 12;
  readonly mac: Uint8Array;
  private readonly config = new Uint8Array(12);
  private ctx: VirtioContext | null = null;
  private watching = false;
  /** The NIC's I/O thread (net-io-thread.ts) moves its frames: this thread never watches the TAP then. */
  private ioThread?: { wake(): void };
  /** One received frame behind room for its virtio_net_hdr. */
  private readonly frame = new Uint8Array(VIRTIO_NET_HDR_BYTES + MAX_FRAME);
  /** Wake-ups of the device thread for received frames, and its time in receive(). */
  private readonly counters = { rx_wakeups: 0, rx_busy_ms: 0 };
  /** Receive counters (net-receive.ts RX indexes), shared with the NIC's I/O thread. */
  private readonly rxCounters = createRxCounters();
  private readonly txCounters = createTxCounters();
  /** The transmit queue's vCPU-thread fast path (TAP backends; absent when turned off). */
  readonly fast?: NetFastPath;

  constructor(readonly opts: NetOptions, readonly backend: FrameBackend) {
    this.kind = `virtio-net:${opts.id}`;
    this.features = (1n << VIRTIO_NET_F.MAC) | (1n << VIRTIO_NET_F.STATUS) | (backend.vnetHdr ? OFFLOAD_FEATURES : 0n);
    if (backend instanceof TapBackend && netFastPathEnabled()) this.fast = new NetFastPath();
    this.mac = opts.mac ? parseMac(opts.mac) : randomMac();
    this.config.set(this.mac, 0);
    new DataView(this.config.buffer).setUint16(6, VIRTIO_NET_S_LINK_UP, true);
  }

  readConfig(offset: number, data: Uint8Array): void {
    data.set(this.config.subarray(offset, offset + data.length));
  }

  writeConfig(): void {
    // The MAC is ours to set (no VIRTIO_NET_F_CTRL_MAC_ADDR); writes are ignored.
  }

  activate(ctx: VirtioContext): void {
    this.ctx = ctx;
    // Receive: frames arrive from the TAP, so the driver need not kick while buffers last;
    // receive() re-arms the kick when it runs out. Arm it now too (a restore may start us mid-way).
    const rxq = ctx.queues[RXQ];
    if (rxq) {
      rxq.notifyWhenEmptyOnly = rxNotifyWhenEmptyOnly();
      if (rxq.ready) rxq.armNotify();
    }
    // The TAP may hand over what the driver said it can finish: partial checksums, TCP segments.
    if (this.backend.vnetHdr) this.setOffload(tunOffloadFor(ctx.features), ctx);
    this.startWatching();
    this.fast?.setOn(true);
    this.ioThread?.wake();
  }

  reset(): void {
    this.fast?.setOn(false);
    this.ioThread?.wake();
    if (this.ctx && this.backend.vnetHdr) this.setOffload(0, this.ctx);
    this.ctx = null;
    this.stopWatching();
  }

  /** The transport holds this around everything that touches queue state (when the fast path is on). */
  get queueLock(): NetFastPath | undefined {
    return this.fast;
  }

  bindQueues(queues: readonly Virtqueue[]): void {
    if (queues[TXQ]) this.fast?.bindQueue(queues[TXQ].shared);
    if (queues[RXQ]) this.fast?.bindRxQueue(queues[RXQ].shared);
  }

  /** What a vCPU thread needs to serve the transmit queue itself; undefined when the fast path is off. */
  fastShare(notifyAddr: number): NetFastShare | undefined {
    const fd = this.backend instanceof TapBackend ? this.backend.openFd : null;
    if (!this.fast || fd === null) return undefined;
    return this.fast.share(notifyAddr, {
      fd, id: this.opts.id, vnetHdr: this.backend.vnetHdr === true, counters: this.txCounters.buffer as SharedArrayBuffer,
      rxCounters: this.rxCounters.buffer as SharedArrayBuffer, rxNotifyWhenEmptyOnly: rxNotifyWhenEmptyOnly(),
    });
  }

  /** Kicks served on vCPU threads and their suppressed interrupts, for the transport's metrics. */
  fastCounters(): { notifications: number; suppressedInterrupts: number } {
    return { notifications: this.fast?.notifications() ?? 0, suppressedInterrupts: this.fast?.suppressedInterrupts() ?? 0 };
  }

  notify(index: number): void {
    if (!this.ctx) return;
    if (index === TXQ) this.transmit(this.ctx);
    else if (index === RXQ) {
      // New receive buffers: pick up frames that waited for them, and listen again.
      this.receive();
      this.startWatching();
    }
  }

  /**
   * Best effort: a TAP that refuses (its interface gone) keeps handing over finished frames,
   * which every driver takes; the device stays usable.
   */
  private setOffload(flags: number, ctx: VirtioContext): void {
    try {
      this.backend.setOffload?.(flags);
    } catch (e) {
      ctx.log?.warn({ err: e instanceof Error ? e.message : String(e), flags }, 'virtio-net: TAP offloads not changed');
    }
  }

  /** From now on the I/O thread receives (and transmits): the device thread stops watching the TAP. */
  attachIoThread(t: { wake(): void }): void {
    this.ioThread = t;
    this.stopWatching();
  }

  private startWatching(): void {
    if (this.ioThread || this.watching || !this.ctx?.queues[RXQ]?.ready) return;
    this.watching = true;
    this.backend.watch(() => {
      this.counters.rx_wakeups++;
      this.receive();
    });
  }

  private stopWatching(): void {
    if (!this.watching) return;
    this.watching = false;
    this.backend.unwatch();
  }

  private transmit(ctx: VirtioContext): void {
    const q = ctx.queues[TXQ]!;
    if (transmitQueue(q, (bufs) => this.backend.send(bufs), this.txCounters, this.backend.vnetHdr === true) > 0) ctx.usedBuffers(q);
  }

  /**
   * Moves waiting frames into posted receive buffers. With no buffers left we
   * stop watching the backend (it would wake us for nothing) until the driver
   * posts more and kicks the receive queue.
   */
  receive(): void {
    const ctx = this.ctx;
    if (!ctx) return;
    const q = ctx.queues[RXQ]!;
    if (!q.ready) return;
    const t0 = performance.now();
    // The NIC's I/O thread serves the same queue under the same lock.
    this.fast?.acquire();
    try {
      const r = receiveQueue(q, (buf) => this.backend.recv(buf), this.frame, this.backend.vnetHdr === true, this.rxCounters, RX_BATCH);
      // Out of buffers: the backend would wake us for nothing until the driver posts more and kicks.
      if (r.outOfBuffers) this.stopWatching();
      if (r.served > 0) ctx.usedBuffers(q);
    } catch (e) {
      // Called from the event loop, not from an MMIO exit: report through the transport ourselves.
      ctx.fail(e);
    } finally {
      this.fast?.release();
    }
    this.counters.rx_busy_ms += performance.now() - t0;
  }

  metrics(): DeviceMetrics {
    const tx = this.txCounters;
    const rx = this.rxCounters;
    return {
      rx_frames: rx[RX.FRAMES]!, rx_bytes: rx[RX.BYTES]!, rx_dropped: rx[RX.DROPPED]!, rx_stalls: rx[RX.STALLS]!, rx_frames_off_device_thread: rx[RX.FRAMES_OFF_DEVICE_THREAD]!,
      ...this.counters, rx_busy_ms: Math.round(this.counters.rx_busy_ms), tx_frames: tx[TX.FRAMES]!, tx_bytes: tx[TX.BYTES]!, tx_dropped: tx[TX.DROPPED]!, tx_malformed: tx[TX.MALFORMED]!,
      tx_kicks_on_vcpu: this.fast?.notifications() ?? 0,
      io_thread_passes: this.fast?.ioThreadCounts().passes ?? 0, io_thread_tx_kicks: this.fast?.ioThreadCounts().txKicks ?? 0,
    };
  }

  close(): void {
    this.reset();
    this.backend.close();
  }
}

/** With EVENT_IDX the receive queue asks for a kick only when it ran dry (HANGAR_VIRTIO_NET_RX_KICKS=1: at every buffer). */
function rxNotifyWhenEmptyOnly(): boolean {
  return process.env.HANGAR_VIRTIO_NET_RX_KICKS !== '1';
}

/** TUNSETOFFLOAD flags for the offloads the driver accepted on its receive side. */
export function tunOffloadFor(features: bigint): number {
  const has = (b: bigint): boolean => (features & (1n << b)) !== 0n;
  if (!has(VIRTIO_NET_F.GUEST_CSUM)) return 0;
  return TUN_F.CSUM | (has(VIRTIO_NET_F.GUEST_TSO4) ? TUN_F.TSO4 : 0) | (has(VIRTIO_NET_F.GUEST_TSO6) ? TUN_F.TSO6 : 0);
}
