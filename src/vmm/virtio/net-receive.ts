/**
 * virtio-net's receive path, shared by the device thread (net.ts, woken by
 * the TAP) and the vCPU threads (net-fast.ts, right after they transmitted):
 * the loop that moves waiting frames into the driver's posted buffers, and
 * its counters, in shared memory. It imports nothing heavy, so a vCPU thread
 * can load it. The caller holds the queue (the fast path's lock).
 */
import type { Virtqueue } from './queue.js';
import { VIRTIO_NET_HDR_BYTES } from './net-transmit.js';

/** Receive counters, in shared memory: indexes into the array createRxCounters makes. */
/** FRAMES_OFF_DEVICE_THREAD: those a NIC's I/O thread or a vCPU thread received (net-fast.ts). */
export const RX = { FRAMES: 0, BYTES: 1, DROPPED: 2, STALLS: 3, FRAMES_OFF_DEVICE_THREAD: 4 } as const;
const RX_COUNTERS = 5;

export function createRxCounters(): Float64Array {
  return new Float64Array(new SharedArrayBuffer(RX_COUNTERS * 8));
}

/** virtio_net_hdr for frames from a backend without headers: no offload, num_buffers = 1. */
const PLAIN_HEADER = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0);

/** What one receive pass did. */
export interface ReceiveResult {
  /** Chains used (frames delivered or dropped). */
  served: number;
  /** The driver has no buffers left: a kick is armed for when it posts more. */
  outOfBuffers: boolean;
}

/**
 * Moves up to `batch` waiting frames into the receive queue's posted chains.
 * `recv` reads one frame into the buffer it is given (after room for the
 * header, unless `vnet`: then the backend writes its header too) and returns
 * its length, or null when nothing waits. `frame` is the bounce buffer: the
 * header's 12 bytes and the largest frame.
 */
export function receiveQueue(
  q: Virtqueue, recv: (buf: Uint8Array) => number | null, frame: Uint8Array, vnet: boolean, counters: Float64Array, batch: number,
): ReceiveResult {
  let served = 0;
  while (served < batch) {
    if (q.pending() === 0) {
      // Out of buffers: ask for a kick when the driver posts more, and look once more.
      if (q.armNotify() > 0) continue;
      counters[RX.STALLS]!++;
      return { served, outOfBuffers: true };
    }
    const got = recv(vnet ? frame : frame.subarray(VIRTIO_NET_HDR_BYTES));
    if (got === null) break;
    // Header + frame in `frame`: the TAP's header (it writes bytes 0..9, num_buffers is ours) or ours.
    const total = vnet ? got : VIRTIO_NET_HDR_BYTES + got;
    if (vnet) { frame[10] = 1; frame[11] = 0; } else frame.set(PLAIN_HEADER, 0);
    const n = total - VIRTIO_NET_HDR_BYTES;
    const chain = q.pop()!;
    served++;
    if (n < 0 || chain.writableLength < total) {
      counters[RX.DROPPED]!++;
      q.pushUsed(chain.head, 0);
      continue;
    }
    chain.write(0, frame.subarray(0, total));
    q.pushUsed(chain.head, total);
    counters[RX.FRAMES]!++;
    counters[RX.BYTES]! += n;
  }
  return { served, outOfBuffers: false };
}
