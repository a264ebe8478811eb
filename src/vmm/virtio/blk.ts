/**
 * virtio-blk backed by a raw image file. Requests are served synchronously
 * with positioned reads and writes straight between the file and the guest's
 * buffers (no bounce copy); a request whose sector range, length or layout
 * does not fit gets an error status, and the status byte is always the last
 * thing written before the chain goes back to the driver.
 *
 * The request queue may also be served on a vCPU thread (blk-fast.ts): a
 * second VirtioBlock there, built on this one's fd and counters, runs the
 * same serve() code; this one then only hands out what that needs.
 */
import fs from 'node:fs';
import { HangarError } from '../../common/errors.js';
import type { DeviceMetrics } from '../devices/device.js';
import type { VirtioContext, VirtioDevice } from './mmio.js';
import { VIRTIO_ID } from './mmio.js';
import type { DescriptorChain, Virtqueue } from './queue.js';
import { BlkFastPath, type BlkFastShare } from './blk-fast.js';

export const SECTOR_SIZE = 512;
export const BLK_QUEUE_SIZE = 256;
/** Bytes of the GET_ID answer. */
export const BLK_ID_BYTES = 20;

export const VIRTIO_BLK_F = { SIZE_MAX: 1n, SEG_MAX: 2n, RO: 5n, BLK_SIZE: 6n, FLUSH: 9n } as const;
export const VIRTIO_BLK_T = { IN: 0, OUT: 1, FLUSH: 4, GET_ID: 8 } as const;
export const VIRTIO_BLK_S = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;

/** Largest data segment we accept (and advertise as size_max). */
const SIZE_MAX = 1 << 20;
const HEADER_BYTES = 16;

/** Request counters, in one shared Float64Array (the vCPU threads' fast path counts into it too). */
const COUNTERS = [
  'read_requests', 'write_requests', 'flush_requests', 'id_requests',
  'read_bytes', 'write_bytes', 'io_errors', 'unsupported_requests', 'malformed_requests',
] as const;
const C = Object.fromEntries(COUNTERS.map((n, i) => [n, i])) as Record<(typeof COUNTERS)[number], number>;

/** Whether blk queues are served on the notifying vCPU thread (default) or on the device thread (HANGAR_VIRTIO_BLK_FAST=0). */
export function blkFastPathEnabled(): boolean {
  return process.env.HANGAR_VIRTIO_BLK_FAST !== '0';
}

export interface BlockOptions {
  id: string;
  path: string;
  readOnly?: boolean;
  /** Answer to GET_ID, at most 20 ASCII bytes; defaults to the drive id. */
  serial?: string;
}

export class VirtioBlock implements VirtioDevice {
  readonly kind: string;
  readonly deviceId = VIRTIO_ID.BLOCK;
  readonly features: bigint;
  readonly queueMaxSizes = [BLK_QUEUE_SIZE];
  readonly configSize = 24;
  readonly readOnly: boolean;
  readonly capacitySectors: bigint;
  /** capacitySectors as a number (exact: disks are far below 2^53 sectors). */
  private readonly capacity: number;
  private fd: number | null;
  /** False for a vCPU thread's copy: the fd belongs to the device thread's instance. */
  private readonly ownsFd: boolean;
  private readonly config = new Uint8Array(24);
  private readonly serial: Uint8Array;
  private ctx: VirtioContext | null = null;
  private readonly header = new Uint8Array(HEADER_BYTES);
  private readonly headerView = new DataView(this.header.buffer);
  private readonly counters: Float64Array;
  /** The vCPU-thread fast path's control block (device thread only; absent when it is turned off). */
  readonly fast?: BlkFastPath;

  /**
   * `shared`: build a vCPU thread's copy over the device thread's open fd and counters
   * (blk-fast.ts) instead of opening the image.
   */
  constructor(readonly opts: BlockOptions, shared?: { fd: number; counters: SharedArrayBuffer }) {
    this.kind = `virtio-blk:${opts.id}`;
    this.readOnly = opts.readOnly ?? false;
    const serial = opts.serial ?? opts.id;
    if (!/^[\x20-\x7e]{0,20}$/.test(serial)) {
      throw new HangarError('INVALID_ARGUMENT', `drive ${opts.id}: serial must be at most ${BLK_ID_BYTES} printable ASCII characters`);
    }
    this.serial = new TextEncoder().encode(serial);
    this.counters = new Float64Array(shared?.counters ?? new SharedArrayBuffer(COUNTERS.length * 8));
    this.ownsFd = !shared;
    if (shared) {
      this.fd = shared.fd;
    } else {
      try {
        this.fd = fs.openSync(opts.path, this.readOnly ? 'r' : 'r+');
      } catch (e) {
        throw new HangarError('NOT_FOUND', `drive ${opts.id}: cannot open ${opts.path}: ${(e as Error).message}`, { path: opts.path });
      }
      if (blkFastPathEnabled()) this.fast = new BlkFastPath();
    }
    const size = fs.fstatSync(this.fd, { bigint: true }).size;
    this.capacitySectors = size / BigInt(SECTOR_SIZE);
    this.capacity = Number(this.capacitySectors);
    this.features = (1n << VIRTIO_BLK_F.SIZE_MAX) | (1n << VIRTIO_BLK_F.SEG_MAX) | (1n << VIRTIO_BLK_F.BLK_SIZE) | (1n << VIRTIO_BLK_F.FLUSH)
      | (this.readOnly ? 1n << VIRTIO_BLK_F.RO : 0n);
    const dv = new DataView(this.config.buffer);
    dv.setBigUint64(0, this.capacitySectors, true);
    dv.setUint32(8, SIZE_MAX, true);
    dv.setUint32(12, BLK_QUEUE_SIZE - 2, true); // seg_max: the chain also carries header and status
    dv.setUint32(20, SECTOR_SIZE, true);
  }

  readConfig(offset: number, data: Uint8Array): void {
    data.set(this.config.subarray(offset, offset + data.length));
  }

  writeConfig(): void {
    // Nothing in our config space is writable (no CONFIG_WCE).
  }

  activate(ctx: VirtioContext): void {
    this.ctx = ctx;
    this.fast?.setOn(true);
  }

  reset(): void {
    this.fast?.setOn(false);
    this.ctx = null;
  }

  /** The transport holds this around everything that touches queue state (when the fast path is on). */
  get queueLock(): BlkFastPath | undefined {
    return this.fast;
  }

  bindQueues(queues: readonly Virtqueue[]): void {
    if (queues[0]) this.fast?.bindQueue(queues[0].shared);
  }

  /** What a vCPU thread needs to serve the queue itself; undefined when the fast path is off. */
  fastShare(notifyAddr: number): BlkFastShare | undefined {
    if (!this.fast || this.fd === null) return undefined;
    return this.fast.share(notifyAddr, {
      fd: this.fd, id: this.opts.id, path: this.opts.path, readOnly: this.readOnly,
      serial: new TextDecoder().decode(this.serial), counters: this.counters.buffer as SharedArrayBuffer,
    });
  }

  /** Notifies served on vCPU threads and their suppressed interrupts, for the transport's metrics. */
  fastCounters(): { notifications: number; suppressedInterrupts: number } {
    return { notifications: this.fast?.notifications() ?? 0, suppressedInterrupts: this.fast?.suppressedInterrupts() ?? 0 };
  }

  notify(index: number): void {
    const ctx = this.ctx;
    if (!ctx || index !== 0) return;
    const q = ctx.queues[0]!;
    if (this.serveQueue(q) > 0) ctx.usedBuffers(q);
  }

  /** Serves every request available on `q` (one batch per notify); returns how many. */
  serveQueue(q: Virtqueue): number {
    let chain: DescriptorChain | null;
    let served = 0;
    while ((chain = q.pop()) !== null) {
      q.pushUsed(chain.head, this.serve(chain));
      served++;
    }
    return served;
  }

  /** Serves one request; returns the number of bytes written into the chain (data plus status). */
  serve(chain: DescriptorChain): number {
    if (chain.writableLength < 1) {
      // Nowhere to put a status byte: the request can only be handed back untouched.
      this.counters[C.malformed_requests]!++;
      this.ctx?.log?.warn({ head: chain.head }, 'virtio-blk: request without a status byte');
      return 0;
    }
    const statusAt = chain.writableLength - 1;
    const finish = (status: number, dataWritten: number): number => {
      if (status === VIRTIO_BLK_S.IOERR) this.counters[C.io_errors]!++;
      if (status === VIRTIO_BLK_S.UNSUPP) this.counters[C.unsupported_requests]!++;
      // The status byte is the last byte of the writable stream: of the last buffer, unless that one is empty.
      const last = chain.writable[chain.writable.length - 1]!;
      if (last.length > 0) last[last.length - 1] = status;
      else chain.write(statusAt, Uint8Array.of(status));
      return dataWritten + 1;
    };
    const first = chain.readable[0];
    if (first && first.length >= HEADER_BYTES) {
      // The usual layout, the header in a buffer of its own: no copy through the stream API.
      for (let i = 0; i < HEADER_BYTES; i++) this.header[i] = first[i]!;
    } else if (chain.read(0, this.header) < HEADER_BYTES) {
      this.counters[C.malformed_requests]!++;
      return finish(VIRTIO_BLK_S.IOERR, 0);
    }
    const type = this.headerView.getUint32(0, true);
    // As a number: exact below 2^53; anything larger lies beyond every disk and fails inRange.
    const sector = this.headerView.getUint32(8, true) + this.headerView.getUint32(12, true) * 2 ** 32;
    switch (type) {
      case VIRTIO_BLK_T.IN: {
        this.counters[C.read_requests]!++;
        const len = statusAt;
        if (!this.inRange(sector, len)) return finish(VIRTIO_BLK_S.IOERR, 0);
        const ok = this.transfer('read', chain.writableRange(0, len), sector);
        if (ok) this.counters[C.read_bytes]! += len;
        return finish(ok ? VIRTIO_BLK_S.OK : VIRTIO_BLK_S.IOERR, ok ? len : 0);
      }
      case VIRTIO_BLK_T.OUT: {
        this.counters[C.write_requests]!++;
        const len = chain.readableLength - HEADER_BYTES;
        if (this.readOnly || !this.inRange(sector, len)) return finish(VIRTIO_BLK_S.IOERR, 0);
        const ok = this.transfer('write', chain.readableRange(HEADER_BYTES, len), sector);
        if (ok) this.counters[C.write_bytes]! += len;
        return finish(ok ? VIRTIO_BLK_S.OK : VIRTIO_BLK_S.IOERR, 0);
      }
      case VIRTIO_BLK_T.FLUSH: {
        this.counters[C.flush_requests]!++;
        if (this.readOnly) return finish(VIRTIO_BLK_S.OK, 0);
        try {
          fs.fdatasyncSync(this.requireFd());
          return finish(VIRTIO_BLK_S.OK, 0);
        } catch (e) {
          this.ctx?.log?.warn({ err: (e as Error).message }, 'virtio-blk: flush failed');
          return finish(VIRTIO_BLK_S.IOERR, 0);
        }
      }
      case VIRTIO_BLK_T.GET_ID: {
        this.counters[C.id_requests]!++;
        const id = new Uint8Array(Math.min(BLK_ID_BYTES, statusAt));
        id.set(this.serial.subarray(0, id.length));
        chain.write(0, id);
        return finish(VIRTIO_BLK_S.OK, id.length);
      }
      default:
        return finish(VIRTIO_BLK_S.UNSUPP, 0);
    }
  }

  /** Whole sectors, not too large, and inside the disk. */
  private inRange(sector: number, len: number): boolean {
    if (len < 0 || len % SECTOR_SIZE !== 0) {
      this.counters[C.malformed_requests]!++;
      return false;
    }
    if (sector + len / SECTOR_SIZE > this.capacity) return false;
    return true;
  }

  /** Positioned I/O between the file and guest buffers; false on any short or failed transfer. */
  private transfer(dir: 'read' | 'write', bufs: Uint8Array[], sector: number): boolean {
    const fd = this.requireFd();
    let pos = sector * SECTOR_SIZE;
    try {
      for (const b of bufs) {
        let done = 0;
        while (done < b.length) {
          const n = dir === 'read' ? fs.readSync(fd, b, done, b.length - done, pos) : fs.writeSync(fd, b, done, b.length - done, pos);
          if (n <= 0) return false; // the file shrank under us
          done += n;
          pos += n;
        }
      }
      return true;
    } catch (e) {
      this.ctx?.log?.warn({ err: (e as Error).message, dir, sector: sector.toString() }, 'virtio-blk: I/O failed');
      return false;
    }
  }

  private requireFd(): number {
    if (this.fd === null) throw new HangarError('INVALID_STATE', `${this.kind} is closed`);
    return this.fd;
  }

  metrics(): DeviceMetrics {
    return Object.fromEntries(COUNTERS.map((n, i) => [n, this.counters[i]!]));
  }

  close(): void {
    this.fast?.setOn(false);
    this.ctx = null;
    if (this.fd !== null) {
      if (this.ownsFd) fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}
