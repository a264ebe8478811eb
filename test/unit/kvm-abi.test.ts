/**
 * Checks Hangar's KVM ABI tables (src/kvm/abi.ts) against the host's
 * <linux/kvm.h>: a small C program, compiled with gcc at test time, prints
 * ioctl numbers, struct sizes and field offsets, and every one must match.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { CAP, EXIT, IRQCHIP_ID, IOCTL, IOEVENTFD, IRQFD, MEM_REGION, RUN, SEGMENT, SIZE, SREGS, CPUID_ENTRY } from '../../src/kvm/abi.js';

const C_SOURCE = String.raw`
#include <stdio.h>
#include <stddef.h>
#include <linux/kvm.h>
#define P(name, v) printf("%s %llu\n", name, (unsigned long long)(v))
#define OFF(t, f) P(#t "." #f, offsetof(struct t, f))
int main(void) {
  P("ioctl.GET_API_VERSION", KVM_GET_API_VERSION); P("ioctl.CREATE_VM", KVM_CREATE_VM);
  P("ioctl.CHECK_EXTENSION", KVM_CHECK_EXTENSION); P("ioctl.GET_VCPU_MMAP_SIZE", KVM_GET_VCPU_MMAP_SIZE);
  P("ioctl.GET_SUPPORTED_CPUID", KVM_GET_SUPPORTED_CPUID); P("ioctl.CREATE_VCPU", KVM_CREATE_VCPU);
  P("ioctl.SET_USER_MEMORY_REGION", KVM_SET_USER_MEMORY_REGION); P("ioctl.SET_TSS_ADDR", KVM_SET_TSS_ADDR);
  P("ioctl.SET_IDENTITY_MAP_ADDR", KVM_SET_IDENTITY_MAP_ADDR); P("ioctl.CREATE_IRQCHIP", KVM_CREATE_IRQCHIP);
  P("ioctl.IRQ_LINE", KVM_IRQ_LINE); P("ioctl.IRQFD", KVM_IRQFD); P("ioctl.CREATE_PIT2", KVM_CREATE_PIT2);
  P("ioctl.IOEVENTFD", KVM_IOEVENTFD); P("ioctl.RUN", KVM_RUN); P("ioctl.GET_REGS", KVM_GET_REGS);
  P("ioctl.SET_REGS", KVM_SET_REGS); P("ioctl.GET_SREGS", KVM_GET_SREGS); P("ioctl.SET_SREGS", KVM_SET_SREGS);
  P("ioctl.SET_MSRS", KVM_SET_MSRS); P("ioctl.SET_CPUID2", KVM_SET_CPUID2); P("ioctl.GET_MP_STATE", KVM_GET_MP_STATE);
  P("ioctl.SET_MP_STATE", KVM_SET_MP_STATE); P("ioctl.GET_LAPIC", KVM_GET_LAPIC); P("ioctl.SET_LAPIC", KVM_SET_LAPIC);
  P("ioctl.GET_FPU", KVM_GET_FPU); P("ioctl.SET_FPU", KVM_SET_FPU);
  P("ioctl.GET_MSR_INDEX_LIST", KVM_GET_MSR_INDEX_LIST); P("ioctl.GET_MSRS", KVM_GET_MSRS); P("ioctl.GET_CPUID2", KVM_GET_CPUID2);
  P("ioctl.GET_IRQCHIP", KVM_GET_IRQCHIP); P("ioctl.SET_IRQCHIP", KVM_SET_IRQCHIP); P("ioctl.SET_CLOCK", KVM_SET_CLOCK);
  P("ioctl.GET_CLOCK", KVM_GET_CLOCK); P("ioctl.GET_PIT2", KVM_GET_PIT2); P("ioctl.SET_PIT2", KVM_SET_PIT2);
  P("ioctl.GET_VCPU_EVENTS", KVM_GET_VCPU_EVENTS); P("ioctl.SET_VCPU_EVENTS", KVM_SET_VCPU_EVENTS);
  P("ioctl.GET_DEBUGREGS", KVM_GET_DEBUGREGS); P("ioctl.SET_DEBUGREGS", KVM_SET_DEBUGREGS);
  P("ioctl.SET_TSC_KHZ", KVM_SET_TSC_KHZ); P("ioctl.GET_TSC_KHZ", KVM_GET_TSC_KHZ);
  P("ioctl.GET_XSAVE", KVM_GET_XSAVE); P("ioctl.SET_XSAVE", KVM_SET_XSAVE); P("ioctl.GET_XCRS", KVM_GET_XCRS); P("ioctl.GET_XSAVE2", KVM_GET_XSAVE2);
  P("ioctl.SET_XCRS", KVM_SET_XCRS); P("ioctl.KVMCLOCK_CTRL", KVM_KVMCLOCK_CTRL);
  P("size.msr_list", sizeof(struct kvm_msr_list)); P("size.xsave", sizeof(struct kvm_xsave)); P("size.xcrs", sizeof(struct kvm_xcrs));
  P("size.vcpu_events", sizeof(struct kvm_vcpu_events)); P("size.debugregs", sizeof(struct kvm_debugregs));
  P("size.irqchip", sizeof(struct kvm_irqchip)); P("size.pit_state2", sizeof(struct kvm_pit_state2));
  P("size.clock_data", sizeof(struct kvm_clock_data));
  P("size.userspace_memory_region", sizeof(struct kvm_userspace_memory_region)); P("size.regs", sizeof(struct kvm_regs));
  P("size.sregs", sizeof(struct kvm_sregs)); P("size.segment", sizeof(struct kvm_segment)); P("size.dtable", sizeof(struct kvm_dtable));
  P("size.cpuid2", sizeof(struct kvm_cpuid2)); P("size.cpuid_entry2", sizeof(struct kvm_cpuid_entry2));
  P("size.irq_level", sizeof(struct kvm_irq_level)); P("size.pit_config", sizeof(struct kvm_pit_config));
  P("size.irqfd", sizeof(struct kvm_irqfd)); P("size.ioeventfd", sizeof(struct kvm_ioeventfd)); P("size.msrs", sizeof(struct kvm_msrs));
  P("size.msr_entry", sizeof(struct kvm_msr_entry)); P("size.lapic_state", sizeof(struct kvm_lapic_state)); P("size.fpu", sizeof(struct kvm_fpu));
  P("size.mp_state", sizeof(struct kvm_mp_state));
  OFF(kvm_run, request_interrupt_window); OFF(kvm_run, immediate_exit); OFF(kvm_run, exit_reason);
  OFF(kvm_run, ready_for_interrupt_injection); OFF(kvm_run, if_flag); OFF(kvm_run, flags); OFF(kvm_run, cr8); OFF(kvm_run, apic_base);
  OFF(kvm_run, io.direction); OFF(kvm_run, io.size); OFF(kvm_run, io.port); OFF(kvm_run, io.count); OFF(kvm_run, io.data_offset);
  OFF(kvm_run, mmio.phys_addr); OFF(kvm_run, mmio.data); OFF(kvm_run, mmio.len); OFF(kvm_run, mmio.is_write);
  OFF(kvm_run, internal.suberror); OFF(kvm_run, internal.ndata); OFF(kvm_run, internal.data);
  OFF(kvm_run, fail_entry.hardware_entry_failure_reason); OFF(kvm_run, fail_entry.cpu);
  OFF(kvm_run, system_event.type); OFF(kvm_run, system_event.ndata); OFF(kvm_run, system_event.data);
  OFF(kvm_run, hw.hardware_exit_reason);
  OFF(kvm_sregs, cs); OFF(kvm_sregs, ds); OFF(kvm_sregs, es); OFF(kvm_sregs, fs); OFF(kvm_sregs, gs); OFF(kvm_sregs, ss);
  OFF(kvm_sregs, tr); OFF(kvm_sregs, ldt); OFF(kvm_sregs, gdt); OFF(kvm_sregs, idt); OFF(kvm_sregs, cr0); OFF(kvm_sregs, cr2);
  OFF(kvm_sregs, cr3); OFF(kvm_sregs, cr4); OFF(kvm_sregs, cr8); OFF(kvm_sregs, efer); OFF(kvm_sregs, apic_base);
  OFF(kvm_sregs, interrupt_bitmap);
  OFF(kvm_segment, base); OFF(kvm_segment, limit); OFF(kvm_segment, selector); OFF(kvm_segment, type); OFF(kvm_segment, present);
  OFF(kvm_segment, dpl); OFF(kvm_segment, db); OFF(kvm_segment, s); OFF(kvm_segment, l); OFF(kvm_segment, g); OFF(kvm_segment, avl);
  OFF(kvm_segment, unusable);
  OFF(kvm_cpuid_entry2, function); OFF(kvm_cpuid_entry2, index); OFF(kvm_cpuid_entry2, flags); OFF(kvm_cpuid_entry2, eax);
  OFF(kvm_cpuid_entry2, ebx); OFF(kvm_cpuid_entry2, ecx); OFF(kvm_cpuid_entry2, edx);
  OFF(kvm_userspace_memory_region, slot); OFF(kvm_userspace_memory_region, flags); OFF(kvm_userspace_memory_region, guest_phys_addr);
  OFF(kvm_userspace_memory_region, memory_size); OFF(kvm_userspace_memory_region, userspace_addr);
  OFF(kvm_irqfd, fd); OFF(kvm_irqfd, gsi); OFF(kvm_irqfd, flags); OFF(kvm_irqfd, resamplefd);
  OFF(kvm_ioeventfd, datamatch); OFF(kvm_ioeventfd, addr); OFF(kvm_ioeventfd, len); OFF(kvm_ioeventfd, fd); OFF(kvm_ioeventfd, flags);
  P("exit.IO", KVM_EXIT_IO); P("exit.HLT", KVM_EXIT_HLT); P("exit.MMIO", KVM_EXIT_MMIO); P("exit.SHUTDOWN", KVM_EXIT_SHUTDOWN);
  P("exit.FAIL_ENTRY", KVM_EXIT_FAIL_ENTRY); P("exit.INTR", KVM_EXIT_INTR); P("exit.INTERNAL_ERROR", KVM_EXIT_INTERNAL_ERROR);
  P("exit.SYSTEM_EVENT", KVM_EXIT_SYSTEM_EVENT);
  P("cap.IRQCHIP", KVM_CAP_IRQCHIP); P("cap.USER_MEMORY", KVM_CAP_USER_MEMORY); P("cap.SET_TSS_ADDR", KVM_CAP_SET_TSS_ADDR);
  P("cap.NR_VCPUS", KVM_CAP_NR_VCPUS); P("cap.MAX_VCPUS", KVM_CAP_MAX_VCPUS); P("cap.PIT2", KVM_CAP_PIT2); P("cap.IRQFD", KVM_CAP_IRQFD);
  P("cap.IOEVENTFD", KVM_CAP_IOEVENTFD); P("cap.SET_IDENTITY_MAP_ADDR", KVM_CAP_SET_IDENTITY_MAP_ADDR);
  P("cap.IMMEDIATE_EXIT", KVM_CAP_IMMEDIATE_EXIT); P("cap.NR_MEMSLOTS", KVM_CAP_NR_MEMSLOTS);
  P("cap.ADJUST_CLOCK", KVM_CAP_ADJUST_CLOCK); P("cap.VCPU_EVENTS", KVM_CAP_VCPU_EVENTS); P("cap.DEBUGREGS", KVM_CAP_DEBUGREGS);
  P("cap.XSAVE", KVM_CAP_XSAVE); P("cap.XCRS", KVM_CAP_XCRS); P("cap.TSC_CONTROL", KVM_CAP_TSC_CONTROL);
  P("cap.GET_TSC_KHZ", KVM_CAP_GET_TSC_KHZ); P("cap.KVMCLOCK_CTRL", KVM_CAP_KVMCLOCK_CTRL); P("cap.XSAVE2", KVM_CAP_XSAVE2);
  P("cap.HLT", KVM_CAP_HLT); P("cap.EXT_CPUID", KVM_CAP_EXT_CPUID);
  P("irqchip.PIC_MASTER", KVM_IRQCHIP_PIC_MASTER); P("irqchip.PIC_SLAVE", KVM_IRQCHIP_PIC_SLAVE); P("irqchip.IOAPIC", KVM_IRQCHIP_IOAPIC);
  return 0;
}
`;

function hostAbi(): Map<string, number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-kvm-abi-'));
  try {
    fs.writeFileSync(path.join(dir, 'abi.c'), C_SOURCE);
    execFileSync('gcc', ['-o', path.join(dir, 'abi'), path.join(dir, 'abi.c')], { stdio: 'pipe' });
    const out = execFileSync(path.join(dir, 'abi'), { encoding: 'utf8' });
    return new Map(out.trim().split('\n').map((l) => { const [k, v] = l.split(' '); return [k!, Number(v)]; }));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const abi = hostAbi();
const get = (k: string): number => {
  const v = abi.get(k);
  assert.notEqual(v, undefined, `C program did not print ${k}`);
  return v!;
};

test('ioctl request numbers match <linux/kvm.h>', () => {
  for (const [k, v] of Object.entries(IOCTL)) assert.equal(v, get(`ioctl.${k}`), `KVM_${k}`);
});

test('struct sizes match', () => {
  for (const [k, v] of Object.entries(SIZE)) assert.equal(v, get(`size.${k}`), `sizeof ${k}`);
});

test('kvm_run field offsets match', () => {
  const map: Record<string, string> = {
    request_interrupt_window: 'request_interrupt_window', immediate_exit: 'immediate_exit', exit_reason: 'exit_reason',
    ready_for_interrupt_injection: 'ready_for_interrupt_injection', if_flag: 'if_flag', flags: 'flags', cr8: 'cr8', apic_base: 'apic_base',
    io_direction: 'io.direction', io_size: 'io.size', io_port: 'io.port', io_count: 'io.count', io_data_offset: 'io.data_offset',
    mmio_phys_addr: 'mmio.phys_addr', mmio_data: 'mmio.data', mmio_len: 'mmio.len', mmio_is_write: 'mmio.is_write',
    internal_suberror: 'internal.suberror', internal_ndata: 'internal.ndata', internal_data: 'internal.data',
    fail_entry_reason: 'fail_entry.hardware_entry_failure_reason', fail_entry_cpu: 'fail_entry.cpu',
    system_event_type: 'system_event.type', system_event_ndata: 'system_event.ndata', system_event_data: 'system_event.data',
    hw_exit_reason: 'hw.hardware_exit_reason',
  };
  for (const [k, c] of Object.entries(map)) assert.equal(RUN[k as keyof typeof RUN], get(`kvm_run.${c}`), `kvm_run.${c}`);
});

test('sregs, segment, cpuid, memory region, irqfd and ioeventfd offsets match', () => {
  for (const [k, v] of Object.entries(SREGS)) assert.equal(v, get(`kvm_sregs.${k}`), `kvm_sregs.${k}`);
  for (const [k, v] of Object.entries(SEGMENT)) assert.equal(v, get(`kvm_segment.${k}`), `kvm_segment.${k}`);
  for (const [k, v] of Object.entries(CPUID_ENTRY)) assert.equal(v, get(`kvm_cpuid_entry2.${k}`), `kvm_cpuid_entry2.${k}`);
  for (const [k, v] of Object.entries(MEM_REGION)) assert.equal(v, get(`kvm_userspace_memory_region.${k}`), k);
  for (const [k, v] of Object.entries(IRQFD)) assert.equal(v, get(`kvm_irqfd.${k}`), `kvm_irqfd.${k}`);
  for (const [k, v] of Object.entries(IOEVENTFD)) assert.equal(v, get(`kvm_ioeventfd.${k}`), `kvm_ioeventfd.${k}`);
});

test('exit reasons and capability numbers match', () => {
  for (const k of ['IO', 'HLT', 'MMIO', 'SHUTDOWN', 'FAIL_ENTRY', 'INTR', 'INTERNAL_ERROR', 'SYSTEM_EVENT'] as const) assert.equal(EXIT[k], get(`exit.${k}`), k);
  for (const k of Object.keys(CAP) as Array<keyof typeof CAP>) {
    assert.equal(CAP[k], get(`cap.${k}`), `KVM_CAP_${k}`);
  }
  for (const [k, v] of Object.entries(IRQCHIP_ID)) assert.equal(v, get(`irqchip.${k}`), `KVM_IRQCHIP_${k}`);
});
