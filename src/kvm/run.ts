/**
 * A typed view over one vCPU's mmap'ed `struct kvm_run`: the exit reason and
 * the exit-specific fields a VMM acts on. Each thread makes its own view from
 * the mapping's address.
 */
import { EXIT_NAMES, RUN } from './abi.js';
import { viewOf } from './libc.js';

export class KvmRunView {
  readonly bytes: Uint8Array;
  readonly dv: DataView;
  constructor(addr: number, size: number) {
    this.bytes = new Uint8Array(viewOf(addr, size));
    this.dv = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
  }
  get exitReason(): number { return this.dv.getUint32(RUN.exit_reason, true); }
  get exitName(): string { return EXIT_NAMES[this.exitReason] ?? `EXIT_${this.exitReason}`; }
  set immediateExit(v: boolean) { this.bytes[RUN.immediate_exit] = v ? 1 : 0; }
  get immediateExit(): boolean { return this.bytes[RUN.immediate_exit] !== 0; }
  get readyForInterruptInjection(): boolean { return this.bytes[RUN.ready_for_interrupt_injection] !== 0; }
  // KVM_EXIT_IO
  get ioDirection(): number { return this.bytes[RUN.io_direction]!; }
  get ioSize(): number { return this.bytes[RUN.io_size]!; }
  get ioPort(): number { return this.dv.getUint16(RUN.io_port, true); }
  get ioCount(): number { return this.dv.getUint32(RUN.io_count, true); }
  get ioDataOffset(): number { return Number(this.dv.getBigUint64(RUN.io_data_offset, true)); }
  // KVM_EXIT_MMIO
  get mmioPhysAddr(): number { return Number(this.dv.getBigUint64(RUN.mmio_phys_addr, true)); }
  get mmioLen(): number { return this.dv.getUint32(RUN.mmio_len, true); }
  get mmioIsWrite(): boolean { return this.bytes[RUN.mmio_is_write] !== 0; }
  mmioData(): Uint8Array { return this.bytes.subarray(RUN.mmio_data, RUN.mmio_data + 8); }
  // KVM_EXIT_INTERNAL_ERROR
  get internalSuberror(): number { return this.dv.getUint32(RUN.internal_suberror, true); }
  internalData(): bigint[] {
    const n = Math.min(16, this.dv.getUint32(RUN.internal_ndata, true));
    return Array.from({ length: n }, (_, i) => this.dv.getBigUint64(RUN.internal_data + 8 * i, true));
  }
  // KVM_EXIT_FAIL_ENTRY
  get failEntryReason(): bigint { return this.dv.getBigUint64(RUN.fail_entry_reason, true); }
  // KVM_EXIT_SYSTEM_EVENT
  get systemEventType(): number { return this.dv.getUint32(RUN.system_event_type, true); }
  get hwExitReason(): bigint { return this.dv.getBigUint64(RUN.hw_exit_reason, true); }
}

/**
 * The instruction bytes of an emulation failure. With suberror EMULATION the
 * kernel may fill `struct emulation_failure` over the internal.data words:
 * data[0] = flags (bit 0: instruction bytes valid), then a u8 insn_size and
 * up to 15 instruction bytes packed into data[1..2]. Returns [] when absent.
 */
export function emulationFailureBytes(data: bigint[]): number[] {
  if (data.length < 3) return [];
  if ((data[0]! & 1n) === 0n) return [];
  const raw = Buffer.alloc(16);
  raw.writeBigUInt64LE(data[1]!, 0);
  raw.writeBigUInt64LE(data[2]!, 8);
  const n = Math.min(15, raw[0]!);
  return [...raw.subarray(1, 1 + n)];
}
