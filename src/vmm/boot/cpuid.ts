/**
 * CPUID as each vCPU sees it: KVM's supported leaves, with the topology made
 * ours (APIC id = vCPU index, logical processor counts = vCPU count) and the
 * features removed that a guest must not rely on. On hosts whose KVM emulates
 * guest kernel mode (nested KVM on PVM), the host's emulator cannot execute
 * the XSAVE family, AVX, CMPXCHG16B, CLAC/STAC and friends; a kernel that sees
 * those bits uses them and dies with an emulation failure, so they are masked
 * when `conservative` is set (the default: a guest without them is still
 * correct on hardware, only slower).
 */
import type { CpuidEntry } from '../../kvm/kvm.js';

const bit = (n: number) => (1 << n) >>> 0;

/** Leaf 1 ECX features masked in conservative mode. */
const LEAF1_ECX_MASK = bit(13) /* CX16 */ | bit(17) /* PCID */ | bit(26) /* XSAVE */ | bit(27) /* OSXSAVE */ | bit(28) /* AVX */ | bit(29) /* F16C */ | bit(12) /* FMA */ | bit(24) /* TSC deadline */;
/** Leaf 7.0 EBX features masked in conservative mode (AVX2, AVX-512, INVPCID, SMAP, FSGSBASE, RTM/HLE, MPX...). */
const LEAF7_EBX_MASK = bit(0) | bit(4) | bit(5) | bit(10) | bit(11) | bit(14) | bit(16) | bit(17) | bit(20) | bit(21) | bit(26) | bit(27) | bit(28) | bit(30) | bit(31);
/** Leaf 7.0 ECX: AVX-512 extensions, PKU/OSPKE, VAES, VPCLMULQDQ, LA57, GFNI, CET... */
const LEAF7_ECX_MASK = bit(1) | bit(3) | bit(4) | bit(6) | bit(7) | bit(8) | bit(9) | bit(10) | bit(11) | bit(12) | bit(14) | bit(16);
/** Leaf 7.0 EDX: AVX-512 4VNNIW/4FMAPS, AMX, CET-IBT... */
const LEAF7_EDX_MASK = bit(2) | bit(3) | bit(8) | bit(20) | bit(22) | bit(24) | bit(25);
/** Leaf 0x80000001 ECX: XOP, FMA4, TBM (AMD vector extensions). */
const EXT1_ECX_MASK = bit(11) | bit(16) | bit(21);

export interface CpuidOptions {
  vcpuIndex: number;
  vcpuCount: number;
  conservative?: boolean;
}

export function normaliseCpuid(supported: CpuidEntry[], opts: CpuidOptions): CpuidEntry[] {
  const { vcpuIndex: id, vcpuCount: n } = opts;
  const conservative = opts.conservative ?? true;
  const out: CpuidEntry[] = [];
  for (const src of supported) {
    const e = { ...src };
    switch (e.function) {
      case 0x1:
        // EBX[31:24] initial APIC id, [23:16] logical processors per package, [15:8] CLFLUSH size (8 × 8 bytes).
        e.ebx = ((id & 0xff) << 24 | (Math.min(n, 255) << 16) | (8 << 8) | (e.ebx & 0xff)) >>> 0;
        e.ecx = (e.ecx | bit(31)) >>> 0; // hypervisor present
        if (conservative) e.ecx = (e.ecx & ~LEAF1_ECX_MASK) >>> 0;
        e.edx = n > 1 ? (e.edx | bit(28)) >>> 0 : (e.edx & ~bit(28)) >>> 0; // HTT: more than one logical CPU
        break;
      case 0x4:
        // Cores per package (EAX[31:26]) and threads sharing the cache (EAX[25:14]).
        e.eax = ((e.eax & 0x3fff) | (((n - 1) & 0x3f) << 26)) >>> 0;
        break;
      case 0x7:
        if (conservative && e.index === 0) {
          e.ebx = (e.ebx & ~LEAF7_EBX_MASK) >>> 0;
          e.ecx = (e.ecx & ~LEAF7_ECX_MASK) >>> 0;
          e.edx = (e.edx & ~LEAF7_EDX_MASK) >>> 0;
        } else if (conservative) {
          e.eax = 0; e.ebx = 0; e.ecx = 0; e.edx = 0;
        }
        break;
      case 0xb:
      case 0x1f:
        // x2APIC topology: one thread per core, n cores per package.
        e.edx = id >>> 0;
        if (e.index === 0) { e.eax = 0; e.ebx = 1; e.ecx = (1 << 8) | 0; }
        else if (e.index === 1) { e.eax = Math.ceil(Math.log2(Math.max(1, n))); e.ebx = n; e.ecx = (2 << 8) | 1; }
        else { e.eax = 0; e.ebx = 0; e.ecx = e.index; }
        break;
      case 0xd:
        if (conservative) continue; // no XSAVE: drop its leaves altogether
        break;
      case 0x80000001:
        if (conservative) e.ecx = (e.ecx & ~EXT1_ECX_MASK) >>> 0;
        break;
      case 0x80000008:
        // AMD: ECX[7:0] number of cores - 1.
        e.ecx = ((e.ecx & ~0xff) | ((n - 1) & 0xff)) >>> 0;
        break;
      default:
        break;
    }
    out.push(e);
  }
  return out;
}
