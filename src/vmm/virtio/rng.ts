/**
 * virtio-rng: fills every device-writable buffer the driver posts with bytes
 * from the host's CSPRNG. Readable buffers in a chain carry nothing for us
 * and are ignored.
 */
import { randomFillSync } from 'node:crypto';
import type { DeviceMetrics } from '../devices/device.js';
import type { VirtioContext, VirtioDevice } from './mmio.js';
import { VIRTIO_ID } from './mmio.js';

export const RNG_QUEUE_SIZE = 64;
/** Bytes served per request at most, so one huge buffer cannot stall the device loop. */
export const RNG_MAX_REQUEST = 64 * 1024;

export class VirtioRng implements VirtioDevice {
  readonly kind = 'virtio-rng';
  readonly deviceId = VIRTIO_ID.RNG;
  readonly features = 0n;
  readonly queueMaxSizes = [RNG_QUEUE_SIZE];
  readonly configSize = 0;
  private ctx: VirtioContext | null = null;
  private readonly counters = { requests: 0, bytes: 0 };

  readConfig(): void {}
  writeConfig(): void {}

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
    let served = 0;
    for (let chain = q.pop(); chain !== null; chain = q.pop()) {
      let n = 0;
      for (const v of chain.writableRange(0, RNG_MAX_REQUEST)) {
        randomFillSync(v);
        n += v.length;
      }
      q.pushUsed(chain.head, n);
      this.counters.requests++;
      this.counters.bytes += n;
      served++;
    }
    if (served > 0) ctx.usedBuffers(q);
  }

  metrics(): DeviceMetrics {
    return { ...this.counters };
  }

  close(): void {
    this.ctx = null;
  }
}
