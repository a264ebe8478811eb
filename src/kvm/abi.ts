/**
 * The KVM ABI as Hangar uses it on x86-64: ioctl request numbers and the byte
 * layouts of the structs those ioctls pass. Every offset here is checked
 * against <linux/kvm.h> by test/unit/kvm-abi.test.ts, which compiles a small
 * C program at test time and compares.
 */

const IOC_NONE = 0;
const IOC_WRITE = 1;
const IOC_READ = 2;
const KVMIO = 0xae;

function ioc(dir: number, nr: number, size: number): number {
  // dir:2 size:14 type:8 nr:8, computed without 32-bit overflow.
  return dir * 2 ** 30 + size * 2 ** 16 + KVMIO * 2 ** 8 + nr;
}
const io = (nr: number) => ioc(IOC_NONE, nr, 0);
const ior = (nr: number, size: number) => ioc(IOC_READ, nr, size);
const iow = (nr: number, size: number) => ioc(IOC_WRITE, nr, size);
const iowr = (nr: number, size: number) => ioc(IOC_READ | IOC_WRITE, nr, size);

/** Struct sizes in bytes. */
export const SIZE = {
  userspace_memory_region: 32,
  regs: 144,
  sregs: 312,
  segment: 24,
  dtable: 16,
  cpuid2: 8,
  cpuid_entry2: 40,
  irq_level: 8,
  pit_config: 64,
  irqfd: 32,
  ioeventfd: 64,
  msrs: 8,
  msr_entry: 16,
  lapic_state: 1024,
  fpu: 416,
  mp_state: 4,
  msr_list: 4,
  xsave: 4096,
  xcrs: 392,
  vcpu_events: 64,
  debugregs: 128,
  irqchip: 520,
  pit_state2: 112,
  clock_data: 48,
} as const;

export const IOCTL = {
  GET_API_VERSION: io(0x00),
  CREATE_VM: io(0x01),
  CHECK_EXTENSION: io(0x03),
  GET_VCPU_MMAP_SIZE: io(0x04),
  GET_SUPPORTED_CPUID: iowr(0x05, SIZE.cpuid2),
  CREATE_VCPU: io(0x41),
  SET_USER_MEMORY_REGION: iow(0x46, SIZE.userspace_memory_region),
  SET_TSS_ADDR: io(0x47),
  SET_IDENTITY_MAP_ADDR: iow(0x48, 8),
  CREATE_IRQCHIP: io(0x60),
  IRQ_LINE: iow(0x61, SIZE.irq_level),
  IRQFD: iow(0x76, SIZE.irqfd),
  CREATE_PIT2: iow(0x77, SIZE.pit_config),
  IOEVENTFD: iow(0x79, SIZE.ioeventfd),
  RUN: io(0x80),
  GET_REGS: ior(0x81, SIZE.regs),
  SET_REGS: iow(0x82, SIZE.regs),
  GET_SREGS: ior(0x83, SIZE.sregs),
  SET_SREGS: iow(0x84, SIZE.sregs),
  SET_MSRS: iow(0x89, SIZE.msrs),
  SET_CPUID2: iow(0x90, SIZE.cpuid2),
  GET_MP_STATE: ior(0x98, SIZE.mp_state),
  SET_MP_STATE: iow(0x99, SIZE.mp_state),
  GET_LAPIC: ior(0x8e, SIZE.lapic_state),
  SET_LAPIC: iow(0x8f, SIZE.lapic_state),
  GET_FPU: ior(0x8c, SIZE.fpu),
  SET_FPU: iow(0x8d, SIZE.fpu),
  // Saving and restoring a VM (src/vmm/snapshot/).
  GET_MSR_INDEX_LIST: iowr(0x02, SIZE.msr_list),
  GET_MSRS: iowr(0x88, SIZE.msrs),
  GET_CPUID2: iowr(0x91, SIZE.cpuid2),
  GET_IRQCHIP: iowr(0x62, SIZE.irqchip),
  // Declared _IOR in <linux/kvm.h>, although it writes.
  SET_IRQCHIP: ior(0x63, SIZE.irqchip),
  SET_CLOCK: iow(0x7b, SIZE.clock_data),
  GET_CLOCK: ior(0x7c, SIZE.clock_data),
  GET_PIT2: ior(0x9f, SIZE.pit_state2),
  SET_PIT2: iow(0xa0, SIZE.pit_state2),
  GET_VCPU_EVENTS: ior(0x9f, SIZE.vcpu_events),
  SET_VCPU_EVENTS: iow(0xa0, SIZE.vcpu_events),
  GET_DEBUGREGS: ior(0xa1, SIZE.debugregs),
  SET_DEBUGREGS: iow(0xa2, SIZE.debugregs),
  SET_TSC_KHZ: io(0xa2),
  GET_TSC_KHZ: io(0xa3),
  GET_XSAVE: ior(0xa4, SIZE.xsave),
  SET_XSAVE: iow(0xa5, SIZE.xsave),
  GET_XSAVE2: ior(0xcf, SIZE.xsave),
  GET_XCRS: ior(0xa6, SIZE.xcrs),
  SET_XCRS: iow(0xa7, SIZE.xcrs),
  KVMCLOCK_CTRL: io(0xad),
} as const;

/** KVM_CHECK_EXTENSION capability numbers Hangar asks about. */
export const CAP = {
  IRQCHIP: 0,
  HLT: 1,
  USER_MEMORY: 3,
  SET_TSS_ADDR: 4,
  EXT_CPUID: 7,
  NR_VCPUS: 9,
  NR_MEMSLOTS: 10,
  PIT2: 33,
  IOEVENTFD: 36,
  SET_IDENTITY_MAP_ADDR: 37,
  IRQFD: 32,
  IMMEDIATE_EXIT: 136,
  MAX_VCPUS: 66,
  ADJUST_CLOCK: 39,
  VCPU_EVENTS: 41,
  DEBUGREGS: 50,
  XSAVE: 55,
  XCRS: 56,
  TSC_CONTROL: 60,
  GET_TSC_KHZ: 61,
  KVMCLOCK_CTRL: 76,
  XSAVE2: 208,
} as const;

/** kvm_irqchip.chip_id values: the two 8259 PICs and the IOAPIC. */
export const IRQCHIP_ID = { PIC_MASTER: 0, PIC_SLAVE: 1, IOAPIC: 2 } as const;

/** kvm_run.exit_reason values. */
export const EXIT = {
  UNKNOWN: 0,
  EXCEPTION: 1,
  IO: 2,
  HYPERCALL: 3,
  DEBUG: 4,
  HLT: 5,
  MMIO: 6,
  IRQ_WINDOW_OPEN: 7,
  SHUTDOWN: 8,
  FAIL_ENTRY: 9,
  INTR: 10,
  SET_TPR: 11,
  TPR_ACCESS: 12,
  NMI: 16,
  INTERNAL_ERROR: 17,
  SYSTEM_EVENT: 24,
} as const;

export const EXIT_NAMES: Record<number, string> = Object.fromEntries(Object.entries(EXIT).map(([k, v]) => [v, k]));

export const IO_DIRECTION = { IN: 0, OUT: 1 } as const;
export const INTERNAL_SUBERROR = { EMULATION: 1, SIMUL_EX: 2, DELIVERY_EV: 3, UNEXPECTED_EXIT_REASON: 4 } as const;
export const SYSTEM_EVENT = { SHUTDOWN: 1, RESET: 2, CRASH: 3 } as const;

/** Byte offsets inside struct kvm_run. */
export const RUN = {
  request_interrupt_window: 0,
  immediate_exit: 1,
  exit_reason: 8,
  ready_for_interrupt_injection: 12,
  if_flag: 13,
  flags: 14,
  cr8: 16,
  apic_base: 24,
  /** Start of the exit-specific union. */
  union: 32,
  io_direction: 32,
  io_size: 33,
  io_port: 34,
  io_count: 36,
  io_data_offset: 40,
  mmio_phys_addr: 32,
  mmio_data: 40,
  mmio_len: 48,
  mmio_is_write: 52,
  internal_suberror: 32,
  internal_ndata: 36,
  internal_data: 40,
  fail_entry_reason: 32,
  fail_entry_cpu: 40,
  system_event_type: 32,
  system_event_ndata: 36,
  system_event_data: 40,
  hw_exit_reason: 32,
} as const;

/** Offsets inside struct kvm_regs (18 × u64). */
export const REGS = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags'] as const;
export type RegName = (typeof REGS)[number];

/** Offsets inside struct kvm_segment. */
export const SEGMENT = { base: 0, limit: 8, selector: 12, type: 14, present: 15, dpl: 16, db: 17, s: 18, l: 19, g: 20, avl: 21, unusable: 22 } as const;

/** Offsets inside struct kvm_sregs. */
export const SREGS = {
  cs: 0, ds: 24, es: 48, fs: 72, gs: 96, ss: 120, tr: 144, ldt: 168,
  gdt: 192, idt: 208,
  cr0: 224, cr2: 232, cr3: 240, cr4: 248, cr8: 256, efer: 264, apic_base: 272,
  interrupt_bitmap: 280,
} as const;

/** Offsets inside struct kvm_cpuid_entry2. */
export const CPUID_ENTRY = { function: 0, index: 4, flags: 8, eax: 12, ebx: 16, ecx: 20, edx: 24 } as const;
export const CPUID_FLAG_SIGNIFICANT_INDEX = 1;

/** Offsets inside struct kvm_userspace_memory_region. */
export const MEM_REGION = { slot: 0, flags: 4, guest_phys_addr: 8, memory_size: 16, userspace_addr: 24 } as const;

/** Offsets inside struct kvm_irqfd and kvm_ioeventfd. */
export const IRQFD = { fd: 0, gsi: 4, flags: 8, resamplefd: 12 } as const;
export const IOEVENTFD = { datamatch: 0, addr: 8, len: 16, fd: 20, flags: 24 } as const;
export const IOEVENTFD_FLAG = { DATAMATCH: 1, PIO: 2, DEASSIGN: 4 } as const;
