/**
 * `hangar host check`: what this host offers Hangar (KVM, QEMU, CPUs,
 * memory) and what Hangar will do with it, from GET /1.0/host.
 */
import type { Command } from 'commander';
import type { HostCheck } from '../../host/api/schemas.js';
import { clientFor, out, printJson, withJson } from '../context.js';
import { formatSizeApprox as size } from '../output.js';

function kvmLine(k: HostCheck['kvm']): string {
  if (!k.present) return 'absent';
  if (k.fullSystem) return `present, full-system capable (${k.kind})`;
  return `present, but kernel mode is emulated (${k.kind}): full guests cannot run at native speed`;
}

/** The admission budget: committed against the limit, and the settings behind the limits. */
function budgetLines(b: HostCheck['budget'] | undefined): string[] {
  if (!b) return [];
  const s = b.settings;
  return [
    `Budget:        memory ${size(b.memoryBytes.committed)} of ${size(b.memoryBytes.limit)} committed (host less ${size(s.memoryReserveBytes)} reserve, x${s.memoryRatio})`,
    `               vCPUs ${b.cpus.committed} of ${b.cpus.limit} committed (${s.cpuRatio} per host CPU); VMs ${b.vms.defined} of ${b.vms.limit} defined`,
  ];
}

/** The readable report; advice lines come from the daemon, which knows this host. */
export function renderHostCheck(h: HostCheck): string {
  const lines = [
    `KVM:           ${kvmLine(h.kvm)}`,
    ...(h.kvm.detail ? [`               ${h.kvm.detail}`] : []),
    `QEMU:          ${h.qemu.present ? (h.qemu.version ?? 'present (version unknown)') : 'not installed'}`,
    `CPUs:          ${h.cpus.total} total, ${h.cpus.allocated} allocated to VMs`,
    `Memory:        ${size(h.memory.totalBytes)} total, ${size(h.memory.availableBytes)} available, ${size(h.memory.allocatedBytes)} allocated to VMs`,
    `Acceleration:  full Linux guests run with ${h.defaultAccel === 'kvm' ? 'KVM (hardware acceleration)' : 'TCG (QEMU software emulation)'} by default`,
    ...budgetLines(h.budget),
    ...(h.networks ?? []).map((n, i) => `${i === 0 ? 'Networks:' : ''}`.padEnd(15) + `${`${n.mode}:`.padEnd(10)}${n.available ? 'available' : 'unavailable'} (${n.detail})`),
  ];
  if (h.advice.length) {
    lines.push('', 'What Hangar will do:');
    for (const a of h.advice) lines.push(`  - ${a}`);
  }
  return lines.join('\n') + '\n';
}

export function registerHostCommands(program: Command): void {
  const host = program.command('host').description('this host as Hangar sees it');
  withJson(host.command('check').description('report KVM, QEMU, CPUs and memory, the admission budget, and what Hangar will do')).action(
    async (o: { json?: boolean }, cmd: Command) => {
      const h = await clientFor(cmd).get<HostCheck>('/1.0/host');
      if (o.json) printJson(h);
      else out(renderHostCheck(h));
    },
  );
}
