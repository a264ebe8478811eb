/**
 * The KVM probe's measuring half, run in its own process by probe.ts so a
 * vCPU stuck in the host's emulator cannot hang the caller. It creates a VM
 * with 64 KiB of RAM, runs a real-mode (CPL 0) `dec ecx; jnz` loop of
 * PROBE_ITERATIONS rounds between an `out` and a `hlt`, times the KVM_RUN
 * that executes the loop, and prints one JSON line.
 *
 * On hardware virtualization the loop takes tens of microseconds; where the
 * host emulates guest kernel mode instruction by instruction (nested KVM on
 * PVM, ~0.6 µs per instruction) it takes about 100 ms.
 */
import { EXIT, EXIT_NAMES } from './abi.js';
import { Kvm } from './kvm.js';
import { libc, mapResult, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, viewOf } from './libc.js';
import { KvmRunView, emulationFailureBytes } from './run.js';
import { PROBE_ITERATIONS, type ProbeMeasurement } from './probe.js';

const MEM = 0x10000;
const CODE = 0x1000;

function measure(): ProbeMeasurement {
  const kvm = Kvm.open();
  try {
    const vm = kvm.createVm();
    const addr = mapResult(libc.mmap(0, MEM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (addr === null) return { ok: false, error: 'mmap failed' };
    const mem = new Uint8Array(viewOf(addr, MEM));
    const n = PROBE_ITERATIONS;
    // out 0x10, al ; mov ecx, n ; L: dec ecx ; jnz L ; hlt
    mem.set([0xe6, 0x10, 0x66, 0xb9, n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff, 0x66, 0x49, 0x75, 0xfc, 0xf4], CODE);
    vm.setUserMemoryRegion(0, 0, MEM, addr);
    const vcpu = vm.createVcpu(0);
    const s = vcpu.getSregs();
    s.cs = { ...s.cs, base: 0n, selector: 0 };
    vcpu.setSregs(s);
    vcpu.setRegs({ rip: BigInt(CODE), rflags: 2n });
    const run = new KvmRunView(vcpu.runAddr, vcpu.runSize);
    let r = vcpu.run();
    if (r < 0) return { ok: false, error: `KVM_RUN errno ${-r}` };
    if (run.exitReason !== EXIT.IO) return exitResult(run);
    const t0 = process.hrtime.bigint();
    r = vcpu.run();
    const loopMs = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r < 0) return { ok: false, error: `KVM_RUN errno ${-r}` };
    if ((run.exitReason as number) !== EXIT.HLT) return exitResult(run);
    return { ok: true, loopMs, exit: 'HLT' };
  } finally {
    kvm.close();
  }
}

function exitResult(run: KvmRunView): ProbeMeasurement {
  const exit = EXIT_NAMES[run.exitReason] ?? String(run.exitReason);
  if (run.exitReason === EXIT.INTERNAL_ERROR) {
    return { ok: false, exit, internalError: { suberror: run.internalSuberror, bytes: emulationFailureBytes(run.internalData()) } };
  }
  return { ok: false, exit };
}

let out: ProbeMeasurement;
try {
  out = measure();
} catch (e) {
  out = { ok: false, error: e instanceof Error ? e.message : String(e) };
}
process.stdout.write(JSON.stringify(out) + '\n');
