/**
 * virtio-blk backed by a raw image file. Requests are served synchronously
 * with positioned reads and writes straight between the file and the guest's
 * buffers (no bounce copy); a request whose sector range, length or layout
 * does not fit gets an error status, and the status byte is always the last
 * thing written before the chain goes back to the driver.
 */
import fs from 'node:fs';
import { HangarError } from '../../common/errors.js';
import type { DeviceMetrics } from '../devices/device.js';
import type { VirtioContext, VirtioDevice } from './mmio.js';
import { VIRTIO_ID } from './mmio.js';
import type { DescriptorChain } from './queue.js';

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
  private fd: number | null;
  private readonly config = new Uint8Array(24);
  private readonly serial: Uint8Array;
  private ctx: VirtioContext | null = null;
  private readonly header = new Uint8Array(HEADER_BYTES);
  private readonly headerView = new DataView(this.header.buffer);
  private readonly counters = {
    read_requests: 0, write_requests: 0, flush_requests: 0, id_requests: 0,
    read_bytes: 0, write_bytes: 0, io_errors: 0, unsupported_requests: 0, malformed_requests: 0,
  };

  constructor(readonly opts: BlockOptions) {
    this.kind = `virtio-blk:${opts.id}`;
    this.readOnly = opts.readOnly ?? false;
    const serial = opts.serial ?? opts.id;
    if (!/^[\x20-\x7e]{0,20}$/.test(serial)) {
      throw new HangarError('INVALID_ARGUMENT', `drive ${opts.id}: serial must be at most ${BLK_ID_BYTES} printable ASCII characters`);
    }
    this.serial = new TextEncoder().encode(serial);
    try {
      this.fd = fs.openSync(opts.path, this.readOnly ? 'r' : 'r+');
    } catch (e) {
      throw new HangarError('NOT_FOUND', `drive ${opts.id}: cannot open ${opts.path}: ${(e as Error).message}`, { path: opts.path });
    }
    const size = fs.fstatSync(this.fd, { bigint: true }).size;
    this.capacitySectors = size / BigInt(SECTOR_SIZE);
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
  }

  reset(): void {
    this.ctx = null;
  }

  notify(index: number): void {
    const ctx = this.ctx;
    if (!ctx || index !== 0) return;
    const q = ctx.queues[0]!;
    let chain: DescriptorChain | null;
    let served = 0;
    while ((chain = q.pop()) !== null) {
      q.pushUsed(chain.head, this.serve(chain));
      served++;
    }
    if (served > 0) ctx.usedBuffers(q);
  }

  /** Serves one request; returns the number of bytes written into the chain (data plus status). */
  serve(chain: DescriptorChain): number {
    if (chain.writableLength < 1) {
      // Nowhere to put a status byte: the request can only be handed back untouched.
      this.counters.malformed_requests++;
      this.ctx?.log?.warn({ head: chain.head }, 'virtio-blk: request without a status byte');
      return 0;
    }
    const statusAt = chain.writableLength - 1;
    const finish = (status: number, dataWritten: number): number => {
      if (status === VIRTIO_BLK_S.IOERR) this.counters.io_errors++;
      if (status === VIRTIO_BLK_S.UNSUPP) this.counters.unsupported_requests++;
      chain.write(statusAt, Uint8Array.of(status));
      return dataWritten + 1;
    };
    if (chain.read(0, this.header) < HEADER_BYTES) {
      this.counters.malformed_requests++;
      return finish(VIRTIO_BLK_S.IOERR, 0);
    }
    const type = this.headerView.getUint32(0, true);
    const sector = this.headerView.getBigUint64(8, true);
    switch (type) {
      case VIRTIO_BLK_T.IN: {
        this.counters.read_requests++;
        const len = statusAt;
        if (!this.inRange(sector, len)) return finish(VIRTIO_BLK_S.IOERR, 0);
        const ok = this.transfer('read', chain.writableRange(0, len), sector);
        if (ok) this.counters.read_bytes += len;
        return finish(ok ? VIRTIO_BLK_S.OK : VIRTIO_BLK_S.IOERR, ok ? len : 0);
      }
      case VIRTIO_BLK_T.OUT: {
        this.counters.write_requests++;
        const len = chain.readableLength - HEADER_BYTES;
        if (this.readOnly || !this.inRange(sector, len)) return finish(VIRTIO_BLK_S.IOERR, 0);
        const ok = this.transfer('write', chain.readableRange(HEADER_BYTES, len), sector);
        if (ok) this.counters.write_bytes += len;
        return finish(ok ? VIRTIO_BLK_S.OK : VIRTIO_BLK_S.IOERR, 0);
      }
      case VIRTIO_BLK_T.FLUSH: {
        this.counters.flush_requests++;
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
        this.counters.id_requests++;
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
  private inRange(sector: bigint, len: number): boolean {
    if (len < 0 || len % SECTOR_SIZE !== 0) {
      this.counters.malformed_requests++;
      return false;
    }
    if (sector + BigInt(len / SECTOR_SIZE) > this.capacitySectors) return false;
    return true;
  }

  /** Positioned I/O between the file and guest buffers; false on any short or failed transfer. */
  private transfer(dir: 'read' | 'write', bufs: Uint8Array[], sector: bigint): boolean {
    const fd = this.requireFd();
    let pos = Number(sector) * SECTOR_SIZE;
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
    return { ...this.counters };
  }

  close(): void {
    this.ctx = null;
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}
