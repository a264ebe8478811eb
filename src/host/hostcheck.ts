/**
 * What this host can do for VMs: the kind of KVM it has (the engine
 * registry's one probe per daemon), QEMU's version, CPUs and memory with the
 * admission budget (what active VMs hold against what the daemon admits),
 * the accelerator full-system guests get, and advice in plain words.
 */
import fs from 'node:fs';
import os from 'node:os';
import type { EngineRegistry } from '../engines/registry.js';
import type { AdmissionBudget, HostCheck } from './api/schemas.js';
import { formatSize } from '../common/sizes.js';
import type { Accel } from '../api/engine.js';
import type { NetworkModeInfo } from './network/modes.js';

export interface HostCheckDeps {
  engines: EngineRegistry;
  /** The admission budget (VmManager.budget()). */
  budget: () => AdmissionBudget;
  /** Which network modes this host offers (src/host/network/modes.ts); absent: not reported. */
  networkModes?: () => NetworkModeInfo[];
}

/** MemAvailable from /proc/meminfo, falling back to os.freemem(). */
export function availableMemoryBytes(): number {
  try {
    const m = /^MemAvailable:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch { /* not Linux */ }
  return os.freemem();
}

/** The PVM flavour of nested KVM shows as the kvm_pvm module. */
function onPvm(): boolean {
  // /sys/module lists built-in modules too; /proc/modules may be absent.
  return fs.existsSync('/sys/module/kvm_pvm');
}

export class HostChecker {
  constructor(private readonly deps: HostCheckDeps) {}

  /** QEMU's version as its engine reports it (null: not installed, or no QEMU engine). */
  private async qemu(): Promise<{ version: string | null; defaultAccel: Accel | null }> {
    const e = this.deps.engines.find('qemu');
    if (!e) return { version: null, defaultAccel: null };
    try {
      const caps = await e.capabilities();
      return { version: caps.available ? caps.version ?? null : null, defaultAccel: caps.defaultAccel };
    } catch {
      return { version: null, defaultAccel: null };
    }
  }

  async check(): Promise<HostCheck> {
    const [kvm, qemu] = await Promise.all([this.deps.engines.kvm(), this.qemu()]);
    const budget = this.deps.budget();
    const totalCpus = os.cpus().length;
    const totalMem = os.totalmem();
    const advice: string[] = [];
    if (!kvm.present) {
      advice.push('No /dev/kvm: Hangar runs full-system guests with QEMU/TCG (software emulation, slow); the micro engine needs KVM and is unavailable.');
    } else if (!kvm.fullSystem) {
      const how = [onPvm() ? 'nested on PVM' : 'nested or emulated', kvm.ring0LoopMs !== undefined ? `ring-0 probe loop ${kvm.ring0LoopMs.toFixed(1)} ms` : null].filter(Boolean).join(', ');
      advice.push(`KVM here emulates guest kernel mode (${how}): Hangar runs full-system guests with QEMU/TCG.`);
      advice.push('The micro engine runs guests whose work happens in user mode (ring 3) at native speed here; a Linux kernel under it boots only partly.');
    } else {
      advice.push('KVM runs guest kernel mode natively: full-system guests use QEMU with KVM acceleration.');
    }
    if (qemu.version === null) advice.push('qemu-system-x86_64 was not found: install the Debian package qemu-system-x86 to run full-system guests.');
    const m = budget.memoryBytes;
    const c = budget.cpus;
    const networks = this.deps.networkModes?.();
    if (networks && !networks.find((n) => n.mode === 'nat')?.available && networks.find((n) => n.mode === 'user')?.available) {
      advice.push('This daemon cannot make bridges here: QEMU VMs can still reach out and publish ports with `--network user` (QEMU user-mode networking).');
    }
    advice.push(`Admission: VMs may hold ${formatSize(m.limit)} of memory (${formatSize(m.committed)} committed) and ${c.limit} vCPUs (${c.committed} committed); starts beyond that are refused.`);
    return {
      kvm: { present: kvm.present, fullSystem: kvm.fullSystem, kind: kvm.kind, detail: kvm.detail },
      qemu: { present: qemu.version !== null, version: qemu.version },
      cpus: { total: totalCpus, allocated: c.committed },
      memory: { totalBytes: totalMem, availableBytes: availableMemoryBytes(), allocatedBytes: m.committed },
      defaultAccel: qemu.defaultAccel ?? (kvm.fullSystem ? 'kvm' : 'tcg'),
      budget,
      ...(networks ? { networks } : {}),
      advice,
    };
  }
}
