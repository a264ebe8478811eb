/**
 * What this host can do for VMs: the kind of KVM it has (probed once per
 * daemon lifetime: the probe runs a guest loop and takes about half a
 * second), QEMU's version, CPUs and memory with what running VMs hold, the
 * accelerator full-system guests get, and advice in plain words.
 */
import fs from 'node:fs';
import os from 'node:os';
import type { KvmProbe } from '../kvm/probe.js';
import type { HostCheck } from './api/schemas.js';

export interface HostCheckDeps {
  probeKvm: () => Promise<KvmProbe>;
  qemuVersion: () => Promise<string | null>;
  /** Sum of CPUs and memory of VMs that are running, paused or starting. */
  allocated: () => { cpus: number; memoryBytes: number };
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
  private kvm: Promise<KvmProbe> | null = null;
  private qemu: Promise<string | null> | null = null;

  constructor(private readonly deps: HostCheckDeps) {}

  /** The KVM probe, run once and cached for the daemon's lifetime. */
  probe(): Promise<KvmProbe> {
    this.kvm ??= this.deps.probeKvm().catch((e: unknown): KvmProbe => ({
      present: fs.existsSync('/dev/kvm'), fullSystem: false, kind: 'absent', detail: `probe failed: ${String(e)}`,
    }));
    return this.kvm;
  }

  qemuVersion(): Promise<string | null> {
    this.qemu ??= this.deps.qemuVersion().catch(() => null);
    return this.qemu;
  }

  /** Accelerator for full-system (QEMU) guests: KVM only where it runs guest kernel mode natively. */
  async defaultAccel(): Promise<'kvm' | 'tcg'> {
    return (await this.probe()).fullSystem ? 'kvm' : 'tcg';
  }

  async check(): Promise<HostCheck> {
    const [kvm, qemu] = await Promise.all([this.probe(), this.qemuVersion()]);
    const alloc = this.deps.allocated();
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
    if (qemu === null) advice.push('qemu-system-x86_64 was not found: install the Debian package qemu-system-x86 to run full-system guests.');
    if (alloc.cpus > totalCpus) advice.push(`Running VMs hold ${alloc.cpus} vCPUs on ${totalCpus} host CPUs (overcommitted).`);
    if (alloc.memoryBytes > totalMem) advice.push('Running VMs are configured with more memory than the host has (overcommitted).');
    return {
      kvm: { present: kvm.present, fullSystem: kvm.fullSystem, kind: kvm.kind, detail: kvm.detail },
      qemu: { present: qemu !== null, version: qemu },
      cpus: { total: totalCpus, allocated: alloc.cpus },
      memory: { totalBytes: totalMem, availableBytes: availableMemoryBytes(), allocatedBytes: alloc.memoryBytes },
      defaultAccel: kvm.fullSystem ? 'kvm' : 'tcg',
      advice,
    };
  }
}
