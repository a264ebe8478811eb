/**
 * virtio-net's transmit path, shared by the device model (net.ts) and the
 * vCPU threads that serve the transmit queue themselves (net-fast.ts): the
 * queue numbers, frame limits, counters and the loop that sends frames.
 * It imports nothing heavy, so a vCPU thread can load it.
 */
import fs from 'node:fs';
import type { Virtqueue } from './queue.js';

export const NET_QUEUE_SIZE = 256;
export const VIRTIO_NET_HDR_BYTES = 12;
/** Largest frame we move in either direction (a 64 KiB TSO segment plus its headers fits). */
export const MAX_FRAME = 65536 + 256;
export const RXQ = 0;
export const TXQ = 1;

/** Transmit counters, in shared memory (vCPU threads transmit too): indexes into the array createTxCounters makes. */
export const TX = { FRAMES: 0, BYTES: 1, DROPPED: 2, MALFORMED: 3 } as const;
const TX_COUNTERS = 4;

export function createTxCounters(): Float64Array {
  return new Float64Array(new SharedArrayBuffer(TX_COUNTERS * 8));
}

/**
 * Sends every chain the driver has made available on the transmit queue and
 * returns them used; how many. The same code on the device thread and on
 * vCPU threads (net-fast.ts); the caller holds the queue (lock or thread).
 * `withHeader`: the backend takes the driver's virtio_net_hdr in front of the
 * frame (a TAP with virtio-net headers: it asks for checksum and segmentation,
 * and the kernel checks it); otherwise the header is skipped.
 */
export function transmitQueue(q: Virtqueue, send: (bufs: Uint8Array[]) => boolean, counters: Float64Array, withHeader = false): number {
  let served = 0;
  const skip = withHeader ? 0 : VIRTIO_NET_HDR_BYTES;
  for (let chain = q.pop(); chain !== null; chain = q.pop()) {
    served++;
    const len = chain.readableLength - VIRTIO_NET_HDR_BYTES;
    if (len <= 0 || len > MAX_FRAME) {
      counters[TX.MALFORMED]!++;
    } else if (send(chain.readableRange(skip, chain.readableLength - skip))) {
      counters[TX.FRAMES]!++;
      counters[TX.BYTES]! += len;
    } else {
      counters[TX.DROPPED]!++;
    }
    q.pushUsed(chain.head, 0);
  }
  return served;
}

/** One frame gathered from `bufs` onto a TAP fd; false when the kernel refused it (dropped, as on a wire). */
export function tapSend(fd: number, bufs: Uint8Array[]): boolean {
  try {
    fs.writevSync(fd, bufs);
    return true;
  } catch {
    // EAGAIN (queue full), EIO (interface down): the frame is lost.
    return false;
  }
}
