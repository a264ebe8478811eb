/**
 * Interrupt lines into KVM's in-kernel irqchip (8259 PICs + IOAPIC): a GSI
 * below 16 reaches both the PIC and the IOAPIC pin of the same number.
 * KVM_IRQ_LINE is safe to call from any thread while vCPUs are inside
 * KVM_RUN; KVM kicks the target vCPU itself.
 */
import type { IrqLine } from './devices/device.js';
import type { Vm } from '../kvm/kvm.js';

export class KvmIrqLine implements IrqLine {
  private level = false;
  private readonly cached: boolean;
  raised = 0;

  /**
   * `cached: false` drives the line on every set(): for a line whose level other
   * threads change too (virtio's shared interrupt state keeps the one record of it).
   */
  constructor(private readonly vm: Vm, readonly gsi: number, opts: { cached?: boolean } = {}) {
    this.cached = opts.cached ?? true;
  }

  /** The VM's fd: other threads may drive this line themselves (uncached lines only). */
  get vmFd(): number | undefined {
    return this.cached ? undefined : this.vm.fd;
  }

  pulse(): void {
    this.raised++;
    this.vm.irqLine(this.gsi, true);
    this.vm.irqLine(this.gsi, false);
    this.level = false;
  }

  set(level: boolean): void {
    if (this.cached && level === this.level) return;
    this.level = level;
    if (level) this.raised++;
    this.vm.irqLine(this.gsi, level);
  }
}
