/**
 * What a device factory gets from the VMM to add its devices: guest memory,
 * interrupt lines, the buses, and virtio-mmio slots (base address, size and
 * IRQ from layout.ts) that the DSDT describes to the guest automatically
 * (an LNRO0005 device each). Devices must be attached before the
 * guest starts.
 */
import type { GuestMemory, IrqLine, MmioDevice, PioDevice } from './device.js';
import type { MmioSlot } from '../layout.js';
import type { Logger } from '../../common/log.js';

export interface DeviceHost {
  readonly memory: GuestMemory;
  readonly log: Logger;
  /** An interrupt line into the in-kernel irqchip. */
  irqLine(gsi: number): IrqLine;
  /**
   * Takes the next free virtio-mmio slot, lets `make` build the device with
   * the slot's IRQ line, registers it on the MMIO bus at the slot's base and
   * records the slot for the DSDT (an LNRO0005 device with its window and IRQ).
   */
  attachVirtioMmio<D extends MmioDevice>(make: (slot: MmioSlot, irq: IrqLine) => D): { device: D; slot: MmioSlot };
  addMmioDevice(base: number, size: number, device: MmioDevice): void;
  addPioDevice(port: number, count: number, device: PioDevice): void;
  appendCmdline(fragment: string): void;
  /**
   * Optional fast paths where the host KVM has them: an eventfd the kernel
   * signals when the guest writes `len` bytes at `addr` (e.g. a virtio queue
   * notify, optionally only for `datamatch`), delivered as a callback on the
   * device thread; null when ioeventfd is unavailable.
   */
  ioEventFd?(addr: number, len: number, datamatch: number | undefined, onEvent: () => void): { close(): void } | null;
}

/** Drive and network-interface configuration as the control API accepts it (schemas in src/api/vmm.ts). */
export type { VmmDrive as DriveConfig, VmmNetworkInterface as NetConfig } from '../../api/vmm.js';
