/**
 * How the device thread and the vCPU worker threads talk. Each vCPU has a
 * control word (what it should do next) and a mailbox for exits that need a
 * device model: the worker writes the access into the mailbox, posts a
 * message, and blocks in Atomics.wait until the device thread has answered.
 * Both live in SharedArrayBuffers so the hot path copies no objects.
 */
import type { BlkFastShare } from './virtio/blk-fast.js';
import type { VirtioIrqShare } from './virtio/interrupt-state.js';
import type { NetFastShare } from './virtio/net-fast.js';

/** ctl[CTL_CMD] values. */
export const CMD_HOLD = 0; // not started yet: wait
export const CMD_RUN = 1;
export const CMD_PAUSE = 2;
export const CMD_STOP = 3;
export const CTL_CMD = 0;
/**
 * Set to 1 by the device thread once it has seen the worker's exit message. The worker
 * waits for it before its thread ends, so a kick (pthread_kill) never targets a thread
 * that no longer exists.
 */
export const CTL_RELEASED = 1;
export const CTL_WORDS = 4;

/** mailbox Int32 word indexes. */
export const MB_STATE = 0; // MB_IDLE → MB_REQUEST (worker) → MB_RESPONSE (device thread) → MB_IDLE (worker)
export const MB_KIND = 1; // KIND_PIO | KIND_MMIO
export const MB_WRITE = 2; // 1 for guest writes
export const MB_ADDR_LO = 3;
export const MB_ADDR_HI = 4;
export const MB_SIZE = 5; // bytes per access
export const MB_COUNT = 6; // repetitions (string port I/O)
export const MB_DATA_OFFSET = 64; // bytes: start of the data area
export const MB_DATA_SIZE = 4096;
export const MB_BYTES = MB_DATA_OFFSET + MB_DATA_SIZE;

export const MB_IDLE = 0;
export const MB_REQUEST = 1;
export const MB_RESPONSE = 2;
export const KIND_PIO = 1;
export const KIND_MMIO = 2;
/**
 * Not an exit: a vCPU thread served a queue itself (virtio/blk-fast.ts, net-fast.ts) and the
 * driver wants an interrupt, but the thread cannot raise it itself (HANGAR_VIRTIO_IRQ_FAST=0);
 * MB_ADDR_LO is the device's index in virtioFast.blk, then virtioFast.net. Sent through the
 * mailbox, so the interrupt is raised before the guest runs on, as if the device thread had
 * served the notify.
 */
export const KIND_VIRTIO_USED = 3;

export interface VcpuWorkerData {
  index: number;
  fd: number;
  runAddr: number;
  runSize: number;
  ctl: SharedArrayBuffer;
  mailbox: SharedArrayBuffer;
  /** Shared exit counters: [pio, mmio, all exits] per vCPU. */
  counters: SharedArrayBuffer;
  /** COM1's fast path (devices/serial-fast.ts): THR writes and LSR reads served on this thread. */
  serialFast?: SharedArrayBuffer;
  /** virtio-blk queues this thread serves itself when the guest notifies them (virtio/blk-fast.ts), with guest RAM's mapping. */
  /** …and NICs' transmit queues (virtio/net-fast.ts); `irqs`: transports whose interrupt registers this thread answers (virtio/interrupt-state.ts). */
  virtioFast?: { ram: { hostAddr: number; size: number }; blk: BlkFastShare[]; net: NetFastShare[]; irqs: VirtioIrqShare[] };
}

export const COUNTER_PIO = 0;
export const COUNTER_MMIO = 1;
export const COUNTER_EXITS = 2;
/**
 * Start-up timestamps, in ns of the monotonic clock that process.hrtime.bigint() reads in
 * every thread (0 = not yet): just before this vCPU's first KVM_RUN, and just after the first
 * KVM_RUN that returned an exit (not EINTR) — the first time the guest gave the CPU back.
 * Float64 holds them exactly (below 2^53 ns, i.e. 104 days of uptime).
 */
export const COUNTER_FIRST_ENTRY_NS = 3;
export const COUNTER_FIRST_EXIT_NS = 4;
/** KVM exit reason of that first exit, and its port (IO) or guest-physical address (MMIO); -1 = none yet. */
export const COUNTER_FIRST_EXIT_REASON = 5;
export const COUNTER_FIRST_EXIT_ADDR = 6;
/**
 * Milliseconds this vCPU's thread spent handling exits: from KVM_RUN returning with an exit to
 * the next KVM_RUN call (the VMM's own share of every exit; a device-thread hand-off included).
 */
export const COUNTER_HANDLE_MS = 7;
export const COUNTER_WORDS = 8;

/** Why a vCPU left its run loop for good. */
export type VcpuExitReason = 'poweroff' | 'reboot' | 'crashed' | 'stopped';

export type WorkerMessage =
  | { t: 'ready'; index: number; thread: string }
  | { t: 'io'; index: number }
  | { t: 'paused'; index: number }
  | { t: 'resumed'; index: number }
  /** The vCPU thread found blk device `slot`'s ring broken; the device thread marks the device broken. */
  | { t: 'virtio-fail'; index: number; slot: number; message: string; details: Record<string, unknown> }
  | { t: 'exit'; index: number; reason: VcpuExitReason; detail: string; rip?: string; cr3?: string; paging?: boolean; insn?: number[] };
