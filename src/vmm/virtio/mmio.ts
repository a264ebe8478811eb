/**
 * The virtio-mmio transport, version 2 (virtio 1.x, "modern" only): the
 * register window a guest driver uses to discover a device, negotiate
 * features, describe its virtqueues and kick them. One instance per device;
 * the device model behind it (blk, net, rng) only sees queues and config.
 *
 * Guest mistakes never throw out of mmioRead/mmioWrite: a malformed ring or
 * chain marks the device broken (DEVICE_NEEDS_RESET plus a config-change
 * interrupt) until the driver resets it, and the reason is logged and kept
 * in `lastError` and the metrics.
 */
import type { Logger } from '../../common/log.js';
import type { DeviceMetrics, GuestMemory, IrqLine, MmioDevice } from '../devices/device.js';
import { HangarError } from '../../common/errors.js';
import { VirtioInterruptState, type VirtioIrqShare } from './interrupt-state.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, Virtqueue, VirtqueueError, createQueueState, type VirtqueuePosition } from './queue.js';

/** Bytes of the register window a device decodes (registers, then config space from 0x100); a layout slot must be at least this big. */
export const VIRTIO_MMIO_REGS_SIZE = 0x200;
export const VIRTIO_MMIO_MAGIC = 0x74726976; // "virt"
export const VIRTIO_MMIO_VERSION = 2;
/** Our vendor id, "HNGR" read as little-endian ASCII. */
export const HANGAR_VIRTIO_VENDOR = 0x52474e48;

export const REG = {
  MAGIC: 0x000,
  VERSION: 0x004,
  DEVICE_ID: 0x008,
  VENDOR_ID: 0x00c,
  DEVICE_FEATURES: 0x010,
  DEVICE_FEATURES_SEL: 0x014,
  DRIVER_FEATURES: 0x020,
  DRIVER_FEATURES_SEL: 0x024,
  QUEUE_SEL: 0x030,
  QUEUE_NUM_MAX: 0x034,
  QUEUE_NUM: 0x038,
  QUEUE_READY: 0x044,
  QUEUE_NOTIFY: 0x050,
  INTERRUPT_STATUS: 0x060,
  INTERRUPT_ACK: 0x064,
  STATUS: 0x070,
  QUEUE_DESC_LOW: 0x080,
  QUEUE_DESC_HIGH: 0x084,
  QUEUE_DRIVER_LOW: 0x090,
  QUEUE_DRIVER_HIGH: 0x094,
  QUEUE_DEVICE_LOW: 0x0a0,
  QUEUE_DEVICE_HIGH: 0x0a4,
  SHM_SEL: 0x0ac,
  SHM_LEN_LOW: 0x0b0,
  SHM_LEN_HIGH: 0x0b4,
  SHM_BASE_LOW: 0x0b8,
  SHM_BASE_HIGH: 0x0bc,
  CONFIG_GENERATION: 0x0fc,
  CONFIG: 0x100,
} as const;

export const STATUS = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  DEVICE_NEEDS_RESET: 0x40,
  FAILED: 0x80,
} as const;

export const INT_VRING = 1;
export const INT_CONFIG = 2;

export const VIRTIO_ID = { NET: 1, BLOCK: 2, RNG: 4 } as const;

/** What the transport gives a device model once the driver is ready (DRIVER_OK). */
export interface VirtioContext {
  readonly memory: GuestMemory;
  readonly queues: readonly Virtqueue[];
  /** Features the driver accepted. */
  readonly features: bigint;
  readonly log: Logger | undefined;
  /** Call after pushing used chains on `queue`: interrupts the driver unless it suppressed that. */
  usedBuffers(queue: Virtqueue): void;
  /** Call after the device's config space changed (bumps the generation, config interrupt). */
  configChanged(): void;
  /** Marks the device broken until the driver resets it. */
  fail(err: unknown): void;
}

/** A device model behind the transport. */
export interface VirtioDevice {
  readonly kind: string;
  readonly deviceId: number;
  /** Device-specific feature bits; the transport adds VERSION_1, INDIRECT_DESC and EVENT_IDX. */
  readonly features: bigint;
  readonly queueMaxSizes: readonly number[];
  /** Size of the device-specific config space in bytes. */
  readonly configSize: number;
  readConfig(offset: number, data: Uint8Array): void;
  writeConfig(offset: number, data: Uint8Array): void;
  /** The driver finished setup; queues in `ctx.queues` that are ready may be used from now on. */
  activate(ctx: VirtioContext): void;
  /** The driver kicked queue `index` (only after activate). May throw VirtqueueError. */
  notify(index: number): void;
  /** The driver reset the device: forget ring state, keep the backend open. */
  reset(): void;
  metrics(): DeviceMetrics;
  /** Releases files and fds; the device is unusable afterwards. */
  close(): void;
  /**
   * Optional, for a device whose queues a vCPU thread may serve too (blk-fast.ts): a lock the
   * transport holds around everything that touches queue state. Reentrant on the device thread.
   */
  readonly queueLock?: { acquire(): void; release(): void } | undefined;
  /** Optional: the transport's queues, once, when it is built (their state is shared memory). */
  bindQueues?(queues: readonly Virtqueue[]): void;
  /** Optional: notifies served and interrupts suppressed outside the transport (on vCPU threads). */
  fastCounters?(): { notifications: number; suppressedInterrupts: number };
}

export interface VirtioMmioOptions {
  /** 'level' (default): line high while interrupt status is non-zero. 'edge': a pulse per new interrupt. */
  irqMode?: 'level' | 'edge';
  log?: Logger;
}

/** Transport state in one plain object, so it can be saved and restored later. */
export interface VirtioMmioState {
  status: number;
  deviceFeaturesSel: number;
  driverFeaturesSel: number;
  driverFeatures: bigint;
  queueSel: number;
  readonly interruptStatus: number;
  configGeneration: number;
  queues: Array<{ num: number; ready: boolean; desc: bigint; driver: bigint; device: bigint }>;
}

/** A JSON-safe copy of a transport's state (64-bit values as hex strings). */
export interface VirtioMmioSnapshot {
  version: 1;
  kind: string;
  status: number;
  deviceFeaturesSel: number;
  driverFeaturesSel: number;
  driverFeatures: string;
  queueSel: number;
  interruptStatus: number;
  configGeneration: number;
  queues: Array<{ num: number; ready: boolean; desc: string; driver: string; device: string } & VirtqueuePosition>;
}

export class VirtioMmioDevice implements MmioDevice {
  readonly name: string;
  readonly state: VirtioMmioState;
  /** Why the device last went broken, for logs and the control API. */
  lastError: { code: string; message: string; details?: Record<string, unknown> } | null = null;
  private readonly queues: Virtqueue[];
  private readonly offered: bigint;
  private readonly irqMode: 'level' | 'edge';
  private readonly log: Logger | undefined;
  /** InterruptStatus and the line, in shared memory: vCPU threads answer the status registers too. */
  private readonly interrupts: VirtioInterruptState;
  private active = false;
  private readonly counters = { notifications: 0, suppressed_interrupts: 0, resets: 0, device_errors: 0, bad_register_accesses: 0 };

  constructor(
    readonly device: VirtioDevice,
    private readonly memory: GuestMemory,
    private readonly irq: IrqLine,
    opts: VirtioMmioOptions = {},
  ) {
    this.name = device.kind;
    this.irqMode = opts.irqMode ?? 'level';
    this.interrupts = new VirtioInterruptState({ set: (l) => irq.set(l), pulse: () => irq.pulse() }, this.irqMode === 'edge');
    this.log = opts.log?.child({ device: device.kind });
    this.offered = device.features | (1n << VIRTIO_F_VERSION_1) | (1n << VIRTIO_F_INDIRECT_DESC) | (1n << VIRTIO_F_EVENT_IDX);
    this.queues = device.queueMaxSizes.map((max, i) => new Virtqueue(i, max, memory, createQueueState()));
    device.bindQueues?.(this.queues);
    const interrupts = this.interrupts;
    this.state = {
      status: 0, deviceFeaturesSel: 0, driverFeaturesSel: 0, driverFeatures: 0n, queueSel: 0,
      get interruptStatus() { return interrupts.status; },
      configGeneration: 0,
      queues: device.queueMaxSizes.map(() => ({ num: 0, ready: false, desc: 0n, driver: 0n, device: 0n })),
    };
  }

  /**
   * What a vCPU thread needs to answer this transport's InterruptStatus reads and
   * InterruptACK writes and to raise its interrupt (interrupt-state.ts); undefined
   * when the line cannot be driven from other threads (a test's line) or
   * HANGAR_VIRTIO_IRQ_FAST=0 keeps everything on the device thread.
   */
  irqShare(base: number): VirtioIrqShare | undefined {
    const vmFd = this.irq.vmFd;
    if (vmFd === undefined || process.env.HANGAR_VIRTIO_IRQ_FAST === '0') return undefined;
    return { base, vmFd, gsi: this.irq.gsi, edge: this.irqMode === 'edge', words: this.interrupts.words.buffer as SharedArrayBuffer };
  }

  /** Features offered to the driver (device bits plus the ring features). */
  get offeredFeatures(): bigint {
    return this.offered;
  }

  get broken(): boolean {
    return (this.state.status & STATUS.DEVICE_NEEDS_RESET) !== 0;
  }

  mmioRead(offset: number, data: Uint8Array): void {
    data.fill(0);
    try {
      if (offset >= REG.CONFIG) {
        const off = offset - REG.CONFIG;
        if (off + data.length <= this.device.configSize) this.device.readConfig(off, data);
        return;
      }
      if (data.length !== 4 || offset % 4 !== 0) {
        this.counters.bad_register_accesses++;
        return;
      }
      writeLe32(data, this.readRegister(offset));
    } catch (e) {
      this.fail(e);
    }
  }

  /** Runs `fn` holding the device's queue lock, when it has one (a vCPU thread may be serving a queue). */
  private locked<T>(fn: () => T): T {
    const lock = this.device.queueLock;
    if (!lock) return fn();
    lock.acquire();
    try {
      return fn();
    } finally {
      lock.release();
    }
  }

  mmioWrite(offset: number, data: Uint8Array): void {
    this.locked(() => this.mmioWriteLocked(offset, data));
  }

  private mmioWriteLocked(offset: number, data: Uint8Array): void {
    try {
      if (offset >= REG.CONFIG) {
        const off = offset - REG.CONFIG;
        if (off + data.length <= this.device.configSize) this.device.writeConfig(off, data);
        return;
      }
      if (data.length !== 4 || offset % 4 !== 0) {
        this.counters.bad_register_accesses++;
        return;
      }
      this.writeRegister(offset, readLe32(data));
    } catch (e) {
      this.fail(e);
    }
  }

  private selectedQueue(): VirtioMmioState['queues'][number] | undefined {
    return this.state.queues[this.state.queueSel];
  }

  private readRegister(offset: number): number {
    const s = this.state;
    const q = this.selectedQueue();
    switch (offset) {
      case REG.MAGIC: return VIRTIO_MMIO_MAGIC;
      case REG.VERSION: return VIRTIO_MMIO_VERSION;
      case REG.DEVICE_ID: return this.device.deviceId;
      case REG.VENDOR_ID: return HANGAR_VIRTIO_VENDOR;
      case REG.DEVICE_FEATURES:
        return s.deviceFeaturesSel > 1 ? 0 : Number((this.offered >> BigInt(32 * s.deviceFeaturesSel)) & 0xffffffffn);
      case REG.QUEUE_NUM_MAX: return q ? this.device.queueMaxSizes[s.queueSel]! : 0;
      case REG.QUEUE_READY: return q?.ready ? 1 : 0;
      case REG.INTERRUPT_STATUS: return this.interrupts.status;
      case REG.STATUS: return s.status;
      case REG.SHM_LEN_LOW:
      case REG.SHM_LEN_HIGH:
        return 0xffffffff; // no shared memory regions
      case REG.CONFIG_GENERATION: return s.configGeneration;
      default:
        return 0;
    }
  }

  private writeRegister(offset: number, v: number): void {
    const s = this.state;
    const q = this.selectedQueue();
    const queueWritable = q !== undefined && !q.ready && (s.status & STATUS.DRIVER_OK) === 0;
    switch (offset) {
      case REG.DEVICE_FEATURES_SEL: s.deviceFeaturesSel = v; return;
      case REG.DRIVER_FEATURES_SEL: s.driverFeaturesSel = v; return;
      case REG.DRIVER_FEATURES: {
        // Only between DRIVER and FEATURES_OK, and only the two defined words.
        if ((s.status & STATUS.DRIVER) === 0 || (s.status & STATUS.FEATURES_OK) !== 0 || s.driverFeaturesSel > 1) {
          this.counters.bad_register_accesses++;
          return;
        }
        const shift = BigInt(32 * s.driverFeaturesSel);
        s.driverFeatures = (s.driverFeatures & ~(0xffffffffn << shift)) | (BigInt(v >>> 0) << shift);
        return;
      }
      case REG.QUEUE_SEL: s.queueSel = v; return;
      case REG.QUEUE_NUM: if (queueWritable) q.num = v; else this.counters.bad_register_accesses++; return;
      case REG.QUEUE_DESC_LOW: if (queueWritable) q.desc = setLow(q.desc, v); else this.counters.bad_register_accesses++; return;
      case REG.QUEUE_DESC_HIGH: if (queueWritable) q.desc = setHigh(q.desc, v); else this.counters.bad_register_accesses++; return;
      case REG.QUEUE_DRIVER_LOW: if (queueWritable) q.driver = setLow(q.driver, v); else this.counters.bad_register_accesses++; return;
      case REG.QUEUE_DRIVER_HIGH: if (queueWritable) q.driver = setHigh(q.driver, v); else this.counters.bad_register_accesses++; return;
      case REG.QUEUE_DEVICE_LOW: if (queueWritable) q.device = setLow(q.device, v); else this.counters.bad_register_accesses++; return;
      case REG.QUEUE_DEVICE_HIGH: if (queueWritable) q.device = setHigh(q.device, v); else this.counters.bad_register_accesses++; return;
      case REG.QUEUE_READY: this.setQueueReady(v === 1); return;
      case REG.QUEUE_NOTIFY: this.queueNotify(v); return;
      case REG.INTERRUPT_ACK:
        this.interrupts.ack(v);
        return;
      case REG.STATUS: this.setStatus(v); return;
      default:
        this.counters.bad_register_accesses++;
    }
  }

  private setQueueReady(ready: boolean): void {
    const s = this.state;
    const q = this.selectedQueue();
    if (!q) {
      this.counters.bad_register_accesses++;
      return;
    }
    const queue = this.queues[s.queueSel]!;
    if (!ready) {
      q.ready = false;
      queue.reset();
      return;
    }
    if (q.ready) return;
    if ((s.status & STATUS.FEATURES_OK) === 0) {
      this.counters.bad_register_accesses++;
      return;
    }
    // Throws VirtqueueError for a bad layout; mmioWrite turns it into a broken device.
    queue.configure({ size: q.num, descAddr: q.desc, driverAddr: q.driver, deviceAddr: q.device }, {
      eventIdx: (s.driverFeatures & (1n << VIRTIO_F_EVENT_IDX)) !== 0n,
      indirect: (s.driverFeatures & (1n << VIRTIO_F_INDIRECT_DESC)) !== 0n,
    });
    q.ready = true;
  }

  private setStatus(v: number): void {
    const s = this.state;
    if (v === 0) {
      this.reset();
      return;
    }
    // The driver may only add bits; DEVICE_NEEDS_RESET is ours to set.
    const wanted = (v & ~STATUS.DEVICE_NEEDS_RESET) | (s.status & STATUS.DEVICE_NEEDS_RESET);
    if ((wanted & s.status) !== s.status) {
      this.counters.bad_register_accesses++;
      return;
    }
    let next = wanted;
    const adding = next & ~s.status;
    if (adding & STATUS.FEATURES_OK) {
      const unknown = s.driverFeatures & ~this.offered;
      const v1 = (s.driverFeatures & (1n << VIRTIO_F_VERSION_1)) !== 0n;
      if (unknown !== 0n || !v1 || (s.status & STATUS.DRIVER) === 0) {
        // Leaving FEATURES_OK clear tells the driver we refuse this set.
        next &= ~STATUS.FEATURES_OK;
        this.log?.warn({ driverFeatures: `0x${s.driverFeatures.toString(16)}`, offered: `0x${this.offered.toString(16)}` }, 'virtio: driver features refused');
      }
    }
    if ((adding & STATUS.DRIVER_OK) && (next & STATUS.FEATURES_OK) === 0) {
      next &= ~STATUS.DRIVER_OK;
      this.counters.bad_register_accesses++;
    }
    s.status = next;
    if ((adding & STATUS.DRIVER_OK) && (next & STATUS.DRIVER_OK) && !this.broken) {
      this.active = true;
      this.device.activate(this.context());
      this.log?.debug({ features: `0x${s.driverFeatures.toString(16)}` }, 'virtio: driver ready');
    }
  }

  /**
   * A queue notification that arrived outside the register path (an
   * ioeventfd): same as the driver writing `index` to QUEUE_NOTIFY.
   */
  notifyQueue(index: number): void {
    this.locked(() => {
      try {
        this.queueNotify(index);
      } catch (e) {
        this.fail(e);
      }
    });
  }

  /**
   * A vCPU thread served a queue (blk-fast.ts) and the driver wants to hear about it:
   * raise the used-buffer interrupt, as usedBuffers() would have.
   */
  fastPathUsed(): void {
    this.locked(() => {
      if (this.active && !this.broken) this.interrupt(INT_VRING);
    });
  }

  private queueNotify(index: number): void {
    this.counters.notifications++;
    if (!this.active || this.broken) return;
    if (index >= this.queues.length || !this.queues[index]!.ready) {
      this.counters.bad_register_accesses++;
      return;
    }
    this.device.notify(index);
  }

  /** Driver wrote 0 to status: everything back to power-on, backend kept. */
  reset(): void {
    this.locked(() => this.resetLocked());
  }

  private resetLocked(): void {
    const s = this.state;
    this.active = false;
    this.device.reset();
    for (const q of this.queues) q.reset();
    for (const q of s.queues) Object.assign(q, { num: 0, ready: false, desc: 0n, driver: 0n, device: 0n });
    Object.assign(s, { status: 0, deviceFeaturesSel: 0, driverFeaturesSel: 0, driverFeatures: 0n, queueSel: 0 });
    this.counters.resets++;
    this.interrupts.assign(0);
  }

  private context(): VirtioContext {
    return {
      memory: this.memory,
      queues: this.queues,
      features: this.state.driverFeatures,
      log: this.log,
      usedBuffers: (queue) => {
        if (queue.needsInterrupt()) this.interrupt(INT_VRING);
        else this.counters.suppressed_interrupts++;
      },
      configChanged: () => {
        this.state.configGeneration = (this.state.configGeneration + 1) >>> 0;
        this.interrupt(INT_CONFIG);
      },
      fail: (err) => this.fail(err),
    };
  }

  private interrupt(bit: number): void {
    this.interrupts.raise(bit);
  }

  /**
   * A guest broke the protocol (or a device hit a bug): stop using the
   * queues, tell the driver with DEVICE_NEEDS_RESET and a config interrupt
   * (only once it is running, as the spec asks), and say what happened.
   */
  fail(err: unknown): void {
    this.locked(() => this.failLocked(err));
  }

  private failLocked(err: unknown): void {
    const e = err instanceof VirtqueueError ? err : null;
    this.lastError = e
      ? { code: e.code, message: e.message, ...(e.details ? { details: e.details } : {}) }
      : { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) };
    this.counters.device_errors++;
    this.log?.warn({ error: this.lastError }, 'virtio: device broken by the guest, needs reset');
    if (this.broken) return;
    this.state.status |= STATUS.DEVICE_NEEDS_RESET;
    this.active = false;
    // Quiesce the model (stop receive polling, drop ring state) until the driver resets us.
    try {
      this.device.reset();
    } catch (resetErr) {
      this.log?.error({ err: String(resetErr) }, 'virtio: device reset after failure threw');
    }
    if (this.state.status & STATUS.DRIVER_OK) this.interrupt(INT_CONFIG);
  }

  metrics(): DeviceMetrics {
    const fast = this.device.fastCounters?.() ?? { notifications: 0, suppressedInterrupts: 0 };
    const irqFast = this.interrupts.fastAccesses;
    return {
      ...this.counters, notifications: this.counters.notifications + fast.notifications, interrupts: this.interrupts.raised,
      interrupt_status_reads_on_vcpu: irqFast.reads, interrupt_acks_on_vcpu: irqFast.acks,
      suppressed_interrupts: this.counters.suppressed_interrupts + fast.suppressedInterrupts,
      broken: this.broken ? 1 : 0, ...this.device.metrics(),
    };
  }

  /**
   * The transport's state, taken on the device thread between two events.
   * Our device models finish every request before returning, so the rings
   * (in guest memory, saved with it) plus this are the whole device.
   */
  snapshot(): VirtioMmioSnapshot {
    const s = this.state;
    const hex = (v: bigint) => `0x${v.toString(16)}`;
    return {
      version: 1, kind: this.device.kind, status: s.status, deviceFeaturesSel: s.deviceFeaturesSel, driverFeaturesSel: s.driverFeaturesSel,
      driverFeatures: hex(s.driverFeatures), queueSel: s.queueSel, interruptStatus: this.interrupts.status, configGeneration: s.configGeneration,
      queues: s.queues.map((q, i) => ({ num: q.num, ready: q.ready, desc: hex(q.desc), driver: hex(q.driver), device: hex(q.device), ...this.queues[i]!.state() })),
    };
  }

  /**
   * Brings a freshly built transport (same device kind, guest memory already
   * restored) to a snapshot's state, re-checking every ring against guest
   * memory as if the driver had just programmed it. Fails as a whole with
   * INVALID_ARGUMENT and leaves the device reset.
   */
  restore(snap: VirtioMmioSnapshot): void {
    this.locked(() => this.restoreLocked(snap));
  }

  private restoreLocked(snap: VirtioMmioSnapshot): void {
    if (this.state.status !== 0) throw new HangarError('INVALID_STATE', `${this.name}: restore needs a device that was never started`);
    let restoredStatus = 0;
    try {
      if (snap.version !== 1 || snap.kind !== this.device.kind || snap.queues.length !== this.queues.length) {
        throw new HangarError('INVALID_ARGUMENT', `${this.name}: snapshot is for ${snap.kind} with ${snap.queues.length} queues`);
      }
      const u32 = (v: number, what: string) => {
        if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new HangarError('INVALID_ARGUMENT', `${this.name}: snapshot ${what} ${v} is not a 32-bit value`);
        return v;
      };
      const u64 = (v: string, what: string) => {
        if (!/^0x[0-9a-f]{1,16}$/.test(v)) throw new HangarError('INVALID_ARGUMENT', `${this.name}: snapshot ${what} "${v}" is not a 64-bit hex value`);
        return BigInt(v);
      };
      const s = this.state;
      const features = u64(snap.driverFeatures, 'driverFeatures');
      if ((features & ~this.offered) !== 0n) throw new HangarError('INVALID_ARGUMENT', `${this.name}: snapshot features were never offered`);
      restoredStatus = u32(snap.interruptStatus, 'interruptStatus') & (INT_VRING | INT_CONFIG);
      Object.assign(s, {
        status: u32(snap.status, 'status') & 0xff, deviceFeaturesSel: u32(snap.deviceFeaturesSel, 'deviceFeaturesSel'),
        driverFeaturesSel: u32(snap.driverFeaturesSel, 'driverFeaturesSel'), driverFeatures: features, queueSel: u32(snap.queueSel, 'queueSel'),
        configGeneration: u32(snap.configGeneration, 'configGeneration'),
      });
      snap.queues.forEach((q, i) => {
        const reg = s.queues[i]!;
        Object.assign(reg, { num: u32(q.num, 'queue size'), ready: false, desc: u64(q.desc, 'desc'), driver: u64(q.driver, 'driver'), device: u64(q.device, 'device') });
        if (!q.ready) return;
        this.queues[i]!.configure({ size: reg.num, descAddr: reg.desc, driverAddr: reg.driver, deviceAddr: reg.device }, {
          eventIdx: (features & (1n << VIRTIO_F_EVENT_IDX)) !== 0n,
          indirect: (features & (1n << VIRTIO_F_INDIRECT_DESC)) !== 0n,
        });
        this.queues[i]!.restorePosition(q);
        reg.ready = true;
      });
    } catch (e) {
      this.reset();
      if (e instanceof VirtqueueError) throw new HangarError('INVALID_ARGUMENT', `${this.name}: snapshot does not fit guest memory: ${e.message}`, e.details);
      throw e;
    }
    if ((this.state.status & STATUS.DRIVER_OK) && !this.broken) {
      this.active = true;
      this.device.activate(this.context());
    }
    this.interrupts.assign(restoredStatus);
  }

  close(): void {
    this.locked(() => {
      this.active = false;
      this.device.close();
    });
  }
}

function setLow(v: bigint, low: number): bigint {
  return (v & ~0xffffffffn) | BigInt(low >>> 0);
}
function setHigh(v: bigint, high: number): bigint {
  return (v & 0xffffffffn) | (BigInt(high >>> 0) << 32n);
}
function readLe32(d: Uint8Array): number {
  return (d[0]! | (d[1]! << 8) | (d[2]! << 16) | (d[3]! << 24)) >>> 0;
}
function writeLe32(d: Uint8Array, v: number): void {
  d[0] = v & 0xff;
  d[1] = (v >>> 8) & 0xff;
  d[2] = (v >>> 16) & 0xff;
  d[3] = (v >>> 24) & 0xff;
}
