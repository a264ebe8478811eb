/**
 * virtio-net over a frame backend (a TAP fd in production, a fake in unit
 * tests). Queue 0 receives, queue 1 transmits. We offer no offloads, so the
 * 12-byte virtio_net_hdr is all zeros on receive (num_buffers = 1) and is
 * skipped on transmit; frames go to the TAP as one gathered write straight
 * from guest memory.
 */
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { MAC_PATTERN } from '../../api/name-rules.js';
import { HangarError } from '../../common/errors.js';
import { watchReadable, type FdWatch } from '../../kvm/libc.js';
import type { DeviceMetrics } from '../devices/device.js';
import type { VirtioContext, VirtioDevice } from './mmio.js';
import { VIRTIO_ID } from './mmio.js';
import { openTap } from './tap.js';

export const NET_QUEUE_SIZE = 256;
export const VIRTIO_NET_HDR_BYTES = 12;
export const VIRTIO_NET_F = { MAC: 5n, STATUS: 16n } as const;
export const VIRTIO_NET_S_LINK_UP = 1;
/** Largest frame we move in either direction (no TSO/GSO offered). */
export const MAX_FRAME = 65536;
/** Frames received per wake-up before yielding to the event loop. */
const RX_BATCH = 256;
const RXQ = 0;
const TXQ = 1;

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
}

/** A non-blocking TAP fd, watched through the Node event loop. */
export class TapBackend implements FrameBackend {
  private poller: FdWatch | null = null;
  private fd: number | null;

  constructor(readonly tapName: string, fd: number) {
    this.fd = fd;
  }

  static open(name: string): TapBackend {
    const tap = openTap(name);
    return new TapBackend(tap.name, tap.fd);
  }

  recv(buf: Uint8Array): number | null {
    if (this.fd === null) return null;
    try {
      return fs.readSync(this.fd, buf, 0, buf.length, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return null;
      throw e;
    }
  }

  send(bufs: Uint8Array[]): boolean {
    if (this.fd === null) return false;
    try {
      fs.writevSync(this.fd, bufs);
      return true;
    } catch {
      // EAGAIN (queue full), EIO (interface down): the frame is lost, as on a wire.
      return false;
    }
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
  readonly features = (1n << VIRTIO_NET_F.MAC) | (1n << VIRTIO_NET_F.STATUS);
  readonly queueMaxSizes = [NET_QUEUE_SIZE, NET_QUEUE_SIZE];
  readonly configSize = 12;
  readonly mac: Uint8Array;
  private readonly config = new Uint8Array(12);
  private ctx: VirtioContext | null = null;
  private watching = false;
  private readonly frame = new Uint8Array(MAX_FRAME);
  /** virtio_net_hdr for received frames: no offload, num_buffers = 1. */
  private readonly rxHeader = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0);
  private readonly counters = {
    rx_frames: 0, rx_bytes: 0, rx_dropped: 0, rx_stalls: 0, rx_wakeups: 0,
    tx_frames: 0, tx_bytes: 0, tx_dropped: 0, tx_malformed: 0,
  };

  constructor(readonly opts: NetOptions, readonly backend: FrameBackend) {
    this.kind = `virtio-net:${opts.id}`;
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
    this.startWatching();
  }

  reset(): void {
    this.ctx = null;
    this.stopWatching();
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

  private startWatching(): void {
    if (this.watching || !this.ctx?.queues[RXQ]?.ready) return;
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
    let served = 0;
    for (let chain = q.pop(); chain !== null; chain = q.pop()) {
      served++;
      const len = chain.readableLength - VIRTIO_NET_HDR_BYTES;
      if (len <= 0 || len > MAX_FRAME) {
        this.counters.tx_malformed++;
      } else if (this.backend.send(chain.readableRange(VIRTIO_NET_HDR_BYTES, len))) {
        this.counters.tx_frames++;
        this.counters.tx_bytes += len;
      } else {
        this.counters.tx_dropped++;
      }
      q.pushUsed(chain.head, 0);
    }
    if (served > 0) ctx.usedBuffers(q);
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
    let served = 0;
    try {
      while (served < RX_BATCH) {
        if (q.pending() === 0) {
          this.counters.rx_stalls++;
          this.stopWatching();
          break;
        }
        const n = this.backend.recv(this.frame);
        if (n === null) break;
        const chain = q.pop()!;
        served++;
        if (chain.writableLength < VIRTIO_NET_HDR_BYTES + n) {
          this.counters.rx_dropped++;
          q.pushUsed(chain.head, 0);
          continue;
        }
        chain.write(0, this.rxHeader);
        chain.write(VIRTIO_NET_HDR_BYTES, this.frame.subarray(0, n));
        q.pushUsed(chain.head, VIRTIO_NET_HDR_BYTES + n);
        this.counters.rx_frames++;
        this.counters.rx_bytes += n;
      }
      if (served > 0) ctx.usedBuffers(q);
    } catch (e) {
      // Called from the event loop, not from an MMIO exit: report through the transport ourselves.
      ctx.fail(e);
    }
  }

  metrics(): DeviceMetrics {
    return { ...this.counters };
  }

  close(): void {
    this.reset();
    this.backend.close();
  }
}
