/**
 * Typed wrappers over the system, VM and vCPU file descriptors of /dev/kvm.
 * Every call checks its result and throws a KvmError naming the ioctl and the
 * errno. Objects hold plain fd numbers so a vCPU can be handed to a worker
 * thread (fds and mappings are per process, not per thread).
 */
import { CAP, CPUID_ENTRY, IOCTL, IOEVENTFD, IOEVENTFD_FLAG, IRQFD, MEM_REGION, REGS, SEGMENT, SIZE, SREGS, type RegName } from './abi.js';
import { check, KvmError } from './errors.js';
import { takeInheritedKvmFd } from './inherited-fd.js';
import { libc, mapResult, MAP_SHARED, O_CLOEXEC, O_RDWR, PROT_READ, PROT_WRITE, errno } from './libc.js';

export const KVM_API_VERSION = 12;

export class Kvm {
  private constructor(readonly fd: number) {}

  /** Opens /dev/kvm and checks the API version. */
  static open(path = '/dev/kvm'): Kvm {
    // A confined hangar-vmm gets /dev/kvm from the daemon (inherited-fd.ts).
    const fd = (path === '/dev/kvm' ? takeInheritedKvmFd() : null) ?? check(`open ${path}`, libc.open(path, O_RDWR | O_CLOEXEC));
    const kvm = new Kvm(fd);
    const v = kvm.apiVersion();
    if (v !== KVM_API_VERSION) {
      kvm.close();
      throw new KvmError(`KVM_GET_API_VERSION (got ${v}, want ${KVM_API_VERSION})`, 0, 'UNSUPPORTED');
    }
    return kvm;
  }

  apiVersion(): number {
    return check('KVM_GET_API_VERSION', libc.ioctlScalar(this.fd, IOCTL.GET_API_VERSION, 0));
  }

  checkExtension(cap: number): number {
    const r = libc.ioctlScalar(this.fd, IOCTL.CHECK_EXTENSION, cap);
    return r < 0 ? 0 : r;
  }

  vcpuMmapSize(): number {
    return check('KVM_GET_VCPU_MMAP_SIZE', libc.ioctlScalar(this.fd, IOCTL.GET_VCPU_MMAP_SIZE, 0));
  }

  /** The CPUID leaves KVM can offer guests on this host. */
  supportedCpuid(): CpuidEntry[] {
    for (let n = 64; n <= 4096; n *= 2) {
      const buf = Buffer.alloc(SIZE.cpuid2 + n * SIZE.cpuid_entry2);
      buf.writeUInt32LE(n, 0);
      const r = libc.ioctlPtr(this.fd, IOCTL.GET_SUPPORTED_CPUID, buf);
      if (r < 0) {
        if (errno() === 7 /* E2BIG */) continue;
        check('KVM_GET_SUPPORTED_CPUID', r);
      }
      return decodeCpuid(buf);
    }
    throw new KvmError('KVM_GET_SUPPORTED_CPUID', 7);
  }

  /** The MSRs KVM saves and restores for a vCPU (KVM_GET_MSR_INDEX_LIST). */
  msrIndexList(): number[] {
    for (let n = 256; n <= 16384; n *= 2) {
      const buf = Buffer.alloc(SIZE.msr_list + 4 * n);
      buf.writeUInt32LE(n, 0);
      const r = libc.ioctlPtr(this.fd, IOCTL.GET_MSR_INDEX_LIST, buf);
      if (r < 0) {
        if (errno() === 7 /* E2BIG */) continue;
        check('KVM_GET_MSR_INDEX_LIST', r);
      }
      const count = Math.min(n, buf.readUInt32LE(0));
      return Array.from({ length: count }, (_, i) => buf.readUInt32LE(SIZE.msr_list + 4 * i));
    }
    throw new KvmError('KVM_GET_MSR_INDEX_LIST', 7);
  }

  createVm(): Vm {
    const fd = check('KVM_CREATE_VM', libc.ioctlScalar(this.fd, IOCTL.CREATE_VM, 0));
    return new Vm(this, fd);
  }

  close(): void {
    libc.close(this.fd);
  }
}

export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

export function decodeCpuid(buf: Buffer): CpuidEntry[] {
  const n = buf.readUInt32LE(0);
  const out: CpuidEntry[] = [];
  for (let i = 0; i < n; i++) {
    const o = SIZE.cpuid2 + i * SIZE.cpuid_entry2;
    out.push({
      function: buf.readUInt32LE(o + CPUID_ENTRY.function),
      index: buf.readUInt32LE(o + CPUID_ENTRY.index),
      flags: buf.readUInt32LE(o + CPUID_ENTRY.flags),
      eax: buf.readUInt32LE(o + CPUID_ENTRY.eax),
      ebx: buf.readUInt32LE(o + CPUID_ENTRY.ebx),
      ecx: buf.readUInt32LE(o + CPUID_ENTRY.ecx),
      edx: buf.readUInt32LE(o + CPUID_ENTRY.edx),
    });
  }
  return out;
}

export function encodeCpuid(entries: CpuidEntry[]): Buffer {
  const buf = Buffer.alloc(SIZE.cpuid2 + entries.length * SIZE.cpuid_entry2);
  buf.writeUInt32LE(entries.length, 0);
  entries.forEach((e, i) => {
    const o = SIZE.cpuid2 + i * SIZE.cpuid_entry2;
    buf.writeUInt32LE(e.function >>> 0, o + CPUID_ENTRY.function);
    buf.writeUInt32LE(e.index >>> 0, o + CPUID_ENTRY.index);
    buf.writeUInt32LE(e.flags >>> 0, o + CPUID_ENTRY.flags);
    buf.writeUInt32LE(e.eax >>> 0, o + CPUID_ENTRY.eax);
    buf.writeUInt32LE(e.ebx >>> 0, o + CPUID_ENTRY.ebx);
    buf.writeUInt32LE(e.ecx >>> 0, o + CPUID_ENTRY.ecx);
    buf.writeUInt32LE(e.edx >>> 0, o + CPUID_ENTRY.edx);
  });
  return buf;
}

const irqLevelScratch = Buffer.alloc(SIZE.irq_level);

/**
 * KVM_IRQ_LINE on a VM fd: any thread of the process may call it, also while
 * vCPUs are inside KVM_RUN (KVM kicks the target vCPU itself).
 */
export function kvmIrqLine(vmFd: number, gsi: number, level: boolean): void {
  // One scratch struct per thread (each has its own copy of this module): interrupts are frequent.
  const b = irqLevelScratch;
  b.writeUInt32LE(gsi, 0);
  b.writeUInt32LE(level ? 1 : 0, 4);
  check('KVM_IRQ_LINE', libc.ioctlPtr(vmFd, IOCTL.IRQ_LINE, b));
}

export class Vm {
  constructor(readonly kvm: Kvm, readonly fd: number) {}

  checkExtension(cap: number): number {
    const r = libc.ioctlScalar(this.fd, IOCTL.CHECK_EXTENSION, cap);
    return r < 0 ? 0 : r;
  }

  setUserMemoryRegion(slot: number, guestPhysAddr: number, size: number, hostAddr: number, flags = 0): void {
    const b = Buffer.alloc(SIZE.userspace_memory_region);
    b.writeUInt32LE(slot, MEM_REGION.slot);
    b.writeUInt32LE(flags, MEM_REGION.flags);
    b.writeBigUInt64LE(BigInt(guestPhysAddr), MEM_REGION.guest_phys_addr);
    b.writeBigUInt64LE(BigInt(size), MEM_REGION.memory_size);
    b.writeBigUInt64LE(BigInt(hostAddr), MEM_REGION.userspace_addr);
    check('KVM_SET_USER_MEMORY_REGION', libc.ioctlPtr(this.fd, IOCTL.SET_USER_MEMORY_REGION, b));
  }

  setTssAddr(addr: number): void {
    check('KVM_SET_TSS_ADDR', libc.ioctlScalar(this.fd, IOCTL.SET_TSS_ADDR, addr));
  }

  setIdentityMapAddr(addr: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(addr));
    check('KVM_SET_IDENTITY_MAP_ADDR', libc.ioctlPtr(this.fd, IOCTL.SET_IDENTITY_MAP_ADDR, b));
  }

  createIrqchip(): void {
    check('KVM_CREATE_IRQCHIP', libc.ioctlScalar(this.fd, IOCTL.CREATE_IRQCHIP, 0));
  }

  createPit2(flags = 0): void {
    const b = Buffer.alloc(SIZE.pit_config);
    b.writeUInt32LE(flags, 0);
    check('KVM_CREATE_PIT2', libc.ioctlPtr(this.fd, IOCTL.CREATE_PIT2, b));
  }

  /** Drives an interrupt line of the in-kernel irqchip (GSI) to a level. */
  irqLine(gsi: number, level: boolean): void {
    kvmIrqLine(this.fd, gsi, level);
  }

  /** Binds an eventfd to a GSI: a write to the eventfd injects the interrupt (edge). */
  irqfd(fd: number, gsi: number, deassign = false): void {
    const b = Buffer.alloc(SIZE.irqfd);
    b.writeUInt32LE(fd, IRQFD.fd);
    b.writeUInt32LE(gsi, IRQFD.gsi);
    b.writeUInt32LE(deassign ? 1 : 0, IRQFD.flags);
    check('KVM_IRQFD', libc.ioctlPtr(this.fd, IOCTL.IRQFD, b));
  }

  /** Binds an eventfd to a guest write of `len` bytes at `addr` (MMIO, or a port with pio). */
  ioeventfd(fd: number, addr: number, len: number, opts: { pio?: boolean; datamatch?: bigint; deassign?: boolean } = {}): void {
    const b = Buffer.alloc(SIZE.ioeventfd);
    let flags = 0;
    if (opts.datamatch !== undefined) { flags |= IOEVENTFD_FLAG.DATAMATCH; b.writeBigUInt64LE(opts.datamatch, IOEVENTFD.datamatch); }
    if (opts.pio) flags |= IOEVENTFD_FLAG.PIO;
    if (opts.deassign) flags |= IOEVENTFD_FLAG.DEASSIGN;
    b.writeBigUInt64LE(BigInt(addr), IOEVENTFD.addr);
    b.writeUInt32LE(len, IOEVENTFD.len);
    b.writeInt32LE(fd, IOEVENTFD.fd);
    b.writeUInt32LE(flags, IOEVENTFD.flags);
    check('KVM_IOEVENTFD', libc.ioctlPtr(this.fd, IOCTL.IOEVENTFD, b));
  }

  /** One in-kernel irqchip's state (IRQCHIP_ID: PIC master, PIC slave, IOAPIC) as struct kvm_irqchip. */
  getIrqchip(chipId: number): Buffer {
    const b = Buffer.alloc(SIZE.irqchip);
    b.writeUInt32LE(chipId, 0);
    check('KVM_GET_IRQCHIP', libc.ioctlPtr(this.fd, IOCTL.GET_IRQCHIP, b));
    return b;
  }

  setIrqchip(b: Buffer): void {
    check('KVM_SET_IRQCHIP', libc.ioctlPtr(this.fd, IOCTL.SET_IRQCHIP, b));
  }

  /** The in-kernel PIT's state (struct kvm_pit_state2). */
  getPit2(): Buffer { return getStruct(this.fd, 'KVM_GET_PIT2', IOCTL.GET_PIT2, SIZE.pit_state2); }
  setPit2(b: Buffer): void { check('KVM_SET_PIT2', libc.ioctlPtr(this.fd, IOCTL.SET_PIT2, b)); }

  /** kvmclock's time base (struct kvm_clock_data). */
  getClock(): Buffer { return getStruct(this.fd, 'KVM_GET_CLOCK', IOCTL.GET_CLOCK, SIZE.clock_data); }
  setClock(b: Buffer): void { check('KVM_SET_CLOCK', libc.ioctlPtr(this.fd, IOCTL.SET_CLOCK, b)); }

  createVcpu(id: number): Vcpu {
    const fd = check('KVM_CREATE_VCPU', libc.ioctlScalar(this.fd, IOCTL.CREATE_VCPU, id));
    const size = this.kvm.vcpuMmapSize();
    const addr = mapResult(libc.mmap(0, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    if (addr === null) throw new KvmError('mmap kvm_run', errno());
    return new Vcpu(id, fd, addr, size);
  }

  close(): void {
    libc.close(this.fd);
  }
}

/** A struct read by one ioctl into a fresh buffer of `size` bytes. */
function getStruct(fd: number, what: string, req: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  check(what, libc.ioctlPtr(fd, req, b));
  return b;
}

export type Regs = Record<RegName, bigint>;

export interface Segment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}

export interface DTable {
  base: bigint;
  limit: number;
}

export interface Sregs {
  cs: Segment; ds: Segment; es: Segment; fs: Segment; gs: Segment; ss: Segment; tr: Segment; ldt: Segment;
  gdt: DTable; idt: DTable;
  cr0: bigint; cr2: bigint; cr3: bigint; cr4: bigint; cr8: bigint; efer: bigint; apic_base: bigint;
  interruptBitmap: bigint[];
}

const SEG_NAMES = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const CR_NAMES = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apic_base'] as const;

function readSeg(b: Buffer, o: number): Segment {
  return {
    base: b.readBigUInt64LE(o + SEGMENT.base), limit: b.readUInt32LE(o + SEGMENT.limit), selector: b.readUInt16LE(o + SEGMENT.selector),
    type: b[o + SEGMENT.type]!, present: b[o + SEGMENT.present]!, dpl: b[o + SEGMENT.dpl]!, db: b[o + SEGMENT.db]!, s: b[o + SEGMENT.s]!,
    l: b[o + SEGMENT.l]!, g: b[o + SEGMENT.g]!, avl: b[o + SEGMENT.avl]!, unusable: b[o + SEGMENT.unusable]!,
  };
}

function writeSeg(b: Buffer, o: number, s: Segment): void {
  b.writeBigUInt64LE(s.base, o + SEGMENT.base);
  b.writeUInt32LE(s.limit >>> 0, o + SEGMENT.limit);
  b.writeUInt16LE(s.selector, o + SEGMENT.selector);
  b[o + SEGMENT.type] = s.type; b[o + SEGMENT.present] = s.present; b[o + SEGMENT.dpl] = s.dpl; b[o + SEGMENT.db] = s.db;
  b[o + SEGMENT.s] = s.s; b[o + SEGMENT.l] = s.l; b[o + SEGMENT.g] = s.g; b[o + SEGMENT.avl] = s.avl; b[o + SEGMENT.unusable] = s.unusable;
}

export class Vcpu {
  constructor(readonly id: number, readonly fd: number, readonly runAddr: number, readonly runSize: number) {}

  /** Enters the guest; returns 0, or -errno (EINTR when kicked) instead of throwing, since that is the hot path. */
  run(): number {
    const r = libc.ioctlScalarOnce(this.fd, IOCTL.RUN, 0);
    return r < 0 ? -errno() : r;
  }

  getRegs(): Regs {
    const b = Buffer.alloc(SIZE.regs);
    check('KVM_GET_REGS', libc.ioctlPtr(this.fd, IOCTL.GET_REGS, b));
    const r = {} as Regs;
    REGS.forEach((n, i) => { r[n] = b.readBigUInt64LE(i * 8); });
    return r;
  }

  /** struct kvm_regs as it is, for snapshots. */
  getRegsRaw(): Buffer { return getStruct(this.fd, 'KVM_GET_REGS', IOCTL.GET_REGS, SIZE.regs); }
  setRegsRaw(b: Buffer): void { check('KVM_SET_REGS', libc.ioctlPtr(this.fd, IOCTL.SET_REGS, b)); }
  /** struct kvm_sregs as it is, for snapshots. */
  getSregsRaw(): Buffer { return getStruct(this.fd, 'KVM_GET_SREGS', IOCTL.GET_SREGS, SIZE.sregs); }
  setSregsRaw(b: Buffer): void { check('KVM_SET_SREGS', libc.ioctlPtr(this.fd, IOCTL.SET_SREGS, b)); }

  setRegs(r: Partial<Regs>): void {
    const b = Buffer.alloc(SIZE.regs);
    REGS.forEach((n, i) => b.writeBigUInt64LE(r[n] ?? (n === 'rflags' ? 2n : 0n), i * 8));
    check('KVM_SET_REGS', libc.ioctlPtr(this.fd, IOCTL.SET_REGS, b));
  }

  getSregs(): Sregs {
    const b = Buffer.alloc(SIZE.sregs);
    check('KVM_GET_SREGS', libc.ioctlPtr(this.fd, IOCTL.GET_SREGS, b));
    const s = {} as Sregs;
    for (const n of SEG_NAMES) s[n] = readSeg(b, SREGS[n]);
    s.gdt = { base: b.readBigUInt64LE(SREGS.gdt), limit: b.readUInt16LE(SREGS.gdt + 8) };
    s.idt = { base: b.readBigUInt64LE(SREGS.idt), limit: b.readUInt16LE(SREGS.idt + 8) };
    for (const n of CR_NAMES) s[n] = b.readBigUInt64LE(SREGS[n]);
    s.interruptBitmap = [0, 1, 2, 3].map((i) => b.readBigUInt64LE(SREGS.interrupt_bitmap + 8 * i));
    return s;
  }

  setSregs(s: Sregs): void {
    const b = Buffer.alloc(SIZE.sregs);
    for (const n of SEG_NAMES) writeSeg(b, SREGS[n], s[n]);
    b.writeBigUInt64LE(s.gdt.base, SREGS.gdt); b.writeUInt16LE(s.gdt.limit, SREGS.gdt + 8);
    b.writeBigUInt64LE(s.idt.base, SREGS.idt); b.writeUInt16LE(s.idt.limit, SREGS.idt + 8);
    for (const n of CR_NAMES) b.writeBigUInt64LE(s[n], SREGS[n]);
    s.interruptBitmap.forEach((v, i) => b.writeBigUInt64LE(v, SREGS.interrupt_bitmap + 8 * i));
    check('KVM_SET_SREGS', libc.ioctlPtr(this.fd, IOCTL.SET_SREGS, b));
  }

  setCpuid(entries: CpuidEntry[]): void {
    check('KVM_SET_CPUID2', libc.ioctlPtr(this.fd, IOCTL.SET_CPUID2, encodeCpuid(entries)));
  }

  /** Writes model-specific registers; returns how many KVM accepted. */
  setMsrs(msrs: Array<{ index: number; data: bigint }>): number {
    const b = Buffer.alloc(SIZE.msrs + msrs.length * SIZE.msr_entry);
    b.writeUInt32LE(msrs.length, 0);
    msrs.forEach((m, i) => {
      b.writeUInt32LE(m.index >>> 0, SIZE.msrs + i * SIZE.msr_entry);
      b.writeBigUInt64LE(m.data, SIZE.msrs + i * SIZE.msr_entry + 8);
    });
    return check('KVM_SET_MSRS', libc.ioctlPtr(this.fd, IOCTL.SET_MSRS, b));
  }

  /** The local APIC's 1 KiB register page (struct kvm_lapic_state). */
  getLapic(): Buffer {
    const b = Buffer.alloc(SIZE.lapic_state);
    check('KVM_GET_LAPIC', libc.ioctlPtr(this.fd, IOCTL.GET_LAPIC, b));
    return b;
  }

  setLapic(b: Buffer): void {
    check('KVM_SET_LAPIC', libc.ioctlPtr(this.fd, IOCTL.SET_LAPIC, b));
  }

  /** Reads the given MSRs; an MSR KVM refuses is left out of the answer (the rest are still read). */
  getMsrs(indices: number[]): Array<{ index: number; data: bigint }> {
    const out: Array<{ index: number; data: bigint }> = [];
    let rest = indices;
    while (rest.length > 0) {
      const b = Buffer.alloc(SIZE.msrs + rest.length * SIZE.msr_entry);
      b.writeUInt32LE(rest.length, 0);
      rest.forEach((idx, i) => b.writeUInt32LE(idx >>> 0, SIZE.msrs + i * SIZE.msr_entry));
      const n = check('KVM_GET_MSRS', libc.ioctlPtr(this.fd, IOCTL.GET_MSRS, b));
      for (let i = 0; i < n; i++) out.push({ index: rest[i]!, data: b.readBigUInt64LE(SIZE.msrs + i * SIZE.msr_entry + 8) });
      // KVM stops at the first MSR it cannot read: skip that one and carry on after it.
      rest = rest.slice(n + 1);
    }
    return out;
  }

  /** The CPUID table this vCPU was given (KVM_GET_CPUID2). */
  getCpuid(): CpuidEntry[] {
    for (let n = 64; n <= 4096; n *= 2) {
      const buf = Buffer.alloc(SIZE.cpuid2 + n * SIZE.cpuid_entry2);
      buf.writeUInt32LE(n, 0);
      const r = libc.ioctlPtr(this.fd, IOCTL.GET_CPUID2, buf);
      if (r < 0) {
        if (errno() === 7 /* E2BIG */) continue;
        check('KVM_GET_CPUID2', r);
      }
      return decodeCpuid(buf);
    }
    throw new KvmError('KVM_GET_CPUID2', 7);
  }

  /** x87/SSE state (struct kvm_fpu); XSAVE supersedes it where the host has it. */
  getFpu(): Buffer { return getStruct(this.fd, 'KVM_GET_FPU', IOCTL.GET_FPU, SIZE.fpu); }
  setFpu(b: Buffer): void { check('KVM_SET_FPU', libc.ioctlPtr(this.fd, IOCTL.SET_FPU, b)); }

  /** The XSAVE area: 4 KiB, or `size` bytes through KVM_GET_XSAVE2 when KVM_CAP_XSAVE2 says it is larger. */
  getXsave(size: number = SIZE.xsave): Buffer {
    return size > SIZE.xsave ? getStruct(this.fd, 'KVM_GET_XSAVE2', IOCTL.GET_XSAVE2, size) : getStruct(this.fd, 'KVM_GET_XSAVE', IOCTL.GET_XSAVE, SIZE.xsave);
  }
  setXsave(b: Buffer): void { check('KVM_SET_XSAVE', libc.ioctlPtr(this.fd, IOCTL.SET_XSAVE, b)); }

  /** Extended control registers (XCR0), struct kvm_xcrs. */
  getXcrs(): Buffer { return getStruct(this.fd, 'KVM_GET_XCRS', IOCTL.GET_XCRS, SIZE.xcrs); }
  setXcrs(b: Buffer): void { check('KVM_SET_XCRS', libc.ioctlPtr(this.fd, IOCTL.SET_XCRS, b)); }

  /** Pending exceptions, interrupts, NMIs and SMIs (struct kvm_vcpu_events). */
  getVcpuEvents(): Buffer { return getStruct(this.fd, 'KVM_GET_VCPU_EVENTS', IOCTL.GET_VCPU_EVENTS, SIZE.vcpu_events); }
  setVcpuEvents(b: Buffer): void { check('KVM_SET_VCPU_EVENTS', libc.ioctlPtr(this.fd, IOCTL.SET_VCPU_EVENTS, b)); }

  /** Debug registers DR0-3, DR6, DR7 (struct kvm_debugregs). */
  getDebugRegs(): Buffer { return getStruct(this.fd, 'KVM_GET_DEBUGREGS', IOCTL.GET_DEBUGREGS, SIZE.debugregs); }
  setDebugRegs(b: Buffer): void { check('KVM_SET_DEBUGREGS', libc.ioctlPtr(this.fd, IOCTL.SET_DEBUGREGS, b)); }

  /** The guest TSC frequency in kHz, or 0 where KVM cannot say. */
  tscKhz(): number {
    const r = libc.ioctlScalar(this.fd, IOCTL.GET_TSC_KHZ, 0);
    return r < 0 ? 0 : r;
  }

  /** Tells a kvmclock guest it was paused, so its soft-lockup watchdog does not fire; false where unsupported. */
  kvmclockPaused(): boolean {
    return libc.ioctlScalar(this.fd, IOCTL.KVMCLOCK_CTRL, 0) === 0;
  }

  /** KVM_MP_STATE_*: 0 runnable, 1 uninitialized (waits for INIT/SIPI), 3 halted. */
  getMpState(): number {
    const b = Buffer.alloc(SIZE.mp_state);
    check('KVM_GET_MP_STATE', libc.ioctlPtr(this.fd, IOCTL.GET_MP_STATE, b));
    return b.readUInt32LE(0);
  }

  setMpState(state: number): void {
    const b = Buffer.alloc(SIZE.mp_state);
    b.writeUInt32LE(state, 0);
    check('KVM_SET_MP_STATE', libc.ioctlPtr(this.fd, IOCTL.SET_MP_STATE, b));
  }

  close(): void {
    libc.munmap(this.runAddr, this.runSize);
    libc.close(this.fd);
  }
}

export { CAP };
