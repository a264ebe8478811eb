/**
 * Interrupt lines into KVM's in-kernel irqchip (8259 PICs + IOAPIC): a GSI
 * below 16 reaches both the PIC and the IOAPIC pin of the same number.
 * KVM_IRQ_LINE is safe to call from the device thread while vCPUs are inside
 * KVM_RUN; KVM kicks the target vCPU itself.
 */
import type { IrqLine } from './devices/device.js';
import type { Vm } from '../kvm/kvm.js';

export class KvmIrqLine implements IrqLine {
  private level = false;
  raised = 0;
  constructor(private readonly vm: Vm, readonly gsi: number) {}

  pulse(): void {
    this.raised++;
    this.vm.irqLine(this.gsi, true);
    this.vm.irqLine(this.gsi, false);
    this.level = false;
  }

  set(level: boolean): void {
    if (level === this.level) return;
    this.level = level;
    if (level) this.raised++;
    this.vm.irqLine(this.gsi, level);
  }
}
