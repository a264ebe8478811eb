/**
 * The shape every device model of hangar-vmm shares: registers reached by
 * MMIO or port I/O, its state kept in one plain object (so it can be
 * snapshotted later), and its metrics. Guest memory and interrupt lines are
 * handed in; a device never touches KVM itself.
 *
 * Everything a guest writes (register values, descriptor addresses, lengths,
 * ring indices) is hostile input: check it against GuestMemory's bounds and
 * answer with a device error, never with an exception that escapes the bus.
 */

/** Guest RAM as seen by device models: guest-physical address 0 .. size-1, one contiguous slot. */
export interface GuestMemory {
  readonly size: number;
  /** Bytes [gpa, gpa+len) as a live view; throws GuestMemoryError when any byte lies outside RAM. */
  slice(gpa: number | bigint, len: number): Uint8Array;
  readU16(gpa: number | bigint): number;
  readU32(gpa: number | bigint): number;
  readU64(gpa: number | bigint): bigint;
  writeU16(gpa: number | bigint, v: number): void;
  writeU32(gpa: number | bigint, v: number): void;
  writeU64(gpa: number | bigint, v: bigint): void;
}

export class GuestMemoryError extends Error {
  constructor(readonly gpa: bigint, readonly len: number) {
    super(`guest address 0x${gpa.toString(16)}+${len} lies outside guest memory`);
    this.name = 'GuestMemoryError';
  }
}

/** An interrupt line into the in-kernel irqchip (KVM_IRQ_LINE or an irqfd). */
export interface IrqLine {
  readonly gsi: number;
  /**
   * Set when other threads may drive this line too, with KVM_IRQ_LINE on this VM fd
   * (virtio's shared interrupt state, virtio/interrupt-state.ts).
   */
  readonly vmFd?: number | undefined;
  /** Edge: raise and lower. */
  pulse(): void;
  /** Level. */
  set(level: boolean): void;
}

export interface DeviceMetrics {
  [counter: string]: number;
}

/** A device on the MMIO bus; `offset` is relative to the device's base address. */
export interface MmioDevice {
  readonly name: string;
  mmioRead(offset: number, data: Uint8Array): void;
  mmioWrite(offset: number, data: Uint8Array): void;
  metrics(): DeviceMetrics;
}

/** A device on the port I/O bus; `offset` is relative to the device's first port. */
export interface PioDevice {
  readonly name: string;
  pioRead(offset: number, data: Uint8Array): void;
  pioWrite(offset: number, data: Uint8Array): void;
  metrics(): DeviceMetrics;
}
