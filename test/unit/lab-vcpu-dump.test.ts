/**
 * The lab's stall dump (test/lab/vcpu-dump.ts) reads KVM's structs out of a
 * hangar-vmm snapshot: these buffers are laid out as KVM lays them out
 * (kvm_regs, kvm_sregs, the LAPIC register page, MSR records,
 * kvm_vcpu_events, kvm_irqchip with kvm_ioapic_state), and the decoder must
 * name a halted vCPU, its timer, a stuck vector and an asserted pin.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { REGS, SIZE, SREGS } from '../../src/kvm/abi.js';
import { apicVectors, describeIoapic, describeLapic, describeVmState } from '../lab/vcpu-dump.js';

function lapicPage(o: { lvtt: number; tmict?: number; tmcct?: number; irr?: number[]; isr?: number[] }): Buffer {
  const b = Buffer.alloc(SIZE.lapic_state);
  b.writeUInt32LE(o.lvtt, 0x320);
  b.writeUInt32LE(o.tmict ?? 0, 0x380);
  b.writeUInt32LE(o.tmcct ?? 0, 0x390);
  b.writeUInt32LE(0xb, 0x3e0);
  const set = (base: number, v: number) => b.writeUInt32LE((b.readUInt32LE(base + (v >> 5) * 16) | (1 << (v & 31))) >>> 0, base + (v >> 5) * 16);
  for (const v of o.irr ?? []) set(0x200, v);
  for (const v of o.isr ?? []) set(0x100, v);
  return b;
}

test('vectors in the LAPIC\'s 256-bit registers: 8 words of 32 bits, 16 bytes apart', () => {
  const page = lapicPage({ lvtt: 0, irr: [0x21, 0xec, 0xff], isr: [0x30] });
  assert.deepEqual(apicVectors(page, 0x200), [0x21, 0xec, 0xff]);
  assert.deepEqual(apicVectors(page, 0x100), [0x30]);
});

test('the LAPIC timer: TSC-deadline, one-shot and masked modes, vector and counts', () => {
  assert.match(describeLapic(lapicPage({ lvtt: (2 << 17) | 0xec })), /timer tsc-deadline vector 236 /);
  assert.match(describeLapic(lapicPage({ lvtt: 0xef, tmict: 5000, tmcct: 1200 })), /timer one-shot vector 239 initial 5000 current 1200 divide 0xb/);
  assert.match(describeLapic(lapicPage({ lvtt: (1 << 16) | 0xec })), /timer one-shot MASKED/);
  assert.match(describeLapic(lapicPage({ lvtt: 0, irr: [0xec] })), /irr 236; isr -$/);
});

test('a halted vCPU with interrupts on, its TSC deadline passed, an interrupt pending in the IRR, and the IOAPIC pin asserted', () => {
  const regs = Buffer.alloc(SIZE.regs);
  regs.writeBigUInt64LE(0xffffffff81e0a1b2n, REGS.indexOf('rip') * 8);
  regs.writeBigUInt64LE(0x246n, REGS.indexOf('rflags') * 8); // IF set
  const sregs = Buffer.alloc(SIZE.sregs);
  sregs.writeBigUInt64LE(0n, SREGS.cr8);
  const mp = Buffer.alloc(SIZE.mp_state);
  mp.writeUInt32LE(3, 0); // KVM_MP_STATE_HALTED
  const msrs = Buffer.alloc(32);
  msrs.writeUInt32LE(0x10, 0); msrs.writeBigUInt64LE(1_000_500n, 8); // TSC
  msrs.writeUInt32LE(0x6e0, 16); msrs.writeBigUInt64LE(1_000_000n, 24); // TSC_DEADLINE, already passed
  const events = Buffer.alloc(SIZE.vcpu_events);
  events[8] = 1; events[9] = 0xec; // interrupt 236 injected
  const chip = Buffer.alloc(8 + 24 + 24 * 8);
  chip.writeUInt32LE(1 << 5, 8 + 16); // pin 5 asserted
  for (let pin = 0; pin < 24; pin++) chip.writeBigUInt64LE(1n << 16n, 8 + 24 + pin * 8); // all masked …
  chip.writeBigUInt64LE(0x21n | (1n << 15n) | (1n << 14n), 8 + 24 + 5 * 8); // … but pin 5: vector 0x21, level, remote IRR
  chip.writeBigUInt64LE(0x24n, 8 + 24 + 4 * 8); // pin 4: vector 0x24, edge
  const lines = describeVmState(new Map([
    ['cpu0/mpstate', mp], ['cpu0/regs', regs], ['cpu0/sregs', sregs], ['cpu0/lapic', lapicPage({ lvtt: (2 << 17) | 0xec, irr: [0xec] })],
    ['cpu0/msrs', msrs], ['cpu0/events', events], ['vm/ioapic', chip],
  ]));
  assert.deepEqual(lines, [
    'cpu0: HALTED rip 0xffffffff81e0a1b2 interrupts enabled cr8 0',
    'cpu0 lapic: timer tsc-deadline vector 236 initial 0 current 0 divide 0xb; tpr 0; irr 236; isr -',
    'cpu0 tsc-deadline: PASSED 500 cycles ago',
    'cpu0 events: interrupt 236 injected',
    'ioapic: unmasked pins 4→36; 5→33 level REMOTE-IRR ASSERTED',
  ]);
  assert.match(describeIoapic(chip), /5→33 level REMOTE-IRR ASSERTED/);
});
