/**
 * The graceful shutdown request (PUT /actions RequestShutdown, the daemon's
 * stop path): hangar-vmm presses the ACPI power button where the guest's OS
 * listens for it — the Generic Event Device's GSI is unmasked in the IOAPIC —
 * and sends Ctrl-Alt-Del otherwise. Pinned here against KVM's own IOAPIC
 * state layout (a real in-kernel irqchip where /dev/kvm exists), without a
 * guest; the lab (test/e2e/kvm-lab.test.ts) proves a Linux guest powers off.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { IRQCHIP_ID } from '../../src/kvm/abi.js';
import { Kvm } from '../../src/kvm/kvm.js';
import { ACPI_GED_GSI } from '../../src/vmm/layout.js';
import { ioapicPinUnmasked } from '../../src/vmm/machine.js';

const REDIRTBL = 8 + 24;

test('ioapicPinUnmasked reads bit 16 of the pin\'s redirection entry in struct kvm_irqchip', () => {
  const chip = Buffer.alloc(8 + 512);
  chip.writeUInt32LE(IRQCHIP_ID.IOAPIC, 0);
  for (let pin = 0; pin < 24; pin++) chip.writeBigUInt64LE(1n << 16n, REDIRTBL + 8 * pin);
  assert.equal(ioapicPinUnmasked(chip, ACPI_GED_GSI), false);
  chip.writeBigUInt64LE(0x0000_0000_0000_0031n, REDIRTBL + 8 * ACPI_GED_GSI); // vector 0x31, unmasked, edge
  assert.equal(ioapicPinUnmasked(chip, ACPI_GED_GSI), true);
  assert.equal(ioapicPinUnmasked(chip, ACPI_GED_GSI - 1), false, 'only that pin');
  assert.throws(() => ioapicPinUnmasked(chip, 24), RangeError);
});

test('KVM\'s in-kernel IOAPIC: the GED pin starts masked (no ACPI OS yet) and reads unmasked once a guest would have programmed it', { skip: !fs.existsSync('/dev/kvm') && 'no /dev/kvm' }, () => {
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  try {
    vm.createIrqchip();
    const chip = vm.getIrqchip(IRQCHIP_ID.IOAPIC);
    assert.equal(ioapicPinUnmasked(chip, ACPI_GED_GSI), false, 'masked at reset: RequestShutdown falls back to Ctrl-Alt-Del');
    // What Linux's IOAPIC driver writes when the GED driver requests its interrupt: a vector, edge, unmasked.
    chip.writeBigUInt64LE(0x41n, REDIRTBL + 8 * ACPI_GED_GSI);
    vm.setIrqchip(chip);
    assert.equal(ioapicPinUnmasked(vm.getIrqchip(IRQCHIP_ID.IOAPIC), ACPI_GED_GSI), true, 'unmasked: RequestShutdown presses the power button');
  } finally {
    vm.close();
    kvm.close();
  }
});
