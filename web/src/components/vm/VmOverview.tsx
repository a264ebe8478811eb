import { bytes, duration, vmAddress, when } from '../../format';
import type { Vm } from '../../types';

export function VmOverview({ vm }: { vm: Vm }) {
  const rows: Array<[string, string]> = [
    ['Image', vm.spec.image],
    ['Engine', `${vm.spec.engine}${vm.runtime.accel ? ` (${vm.runtime.accel})` : ''}`],
    ['vCPUs', String(vm.spec.cpus)],
    ['Memory', bytes(vm.spec.memoryBytes)],
    ['Boot', vm.spec.boot ?? 'kernel'],
    ['Address', vmAddress(vm)],
    ['Display', vm.display ? 'VNC (see Display)' : 'none (serial console only)'],
    ['PID', vm.runtime.pid === null ? '—' : String(vm.runtime.pid)],
    ['Started', when(vm.runtime.startedAt)],
    ['Uptime', duration(vm.runtime.uptimeSeconds)],
    ['CPU time', vm.runtime.cpuSeconds === undefined ? '—' : `${vm.runtime.cpuSeconds.toFixed(1)} s`],
    ['Memory used (RSS)', bytes(vm.runtime.rssBytes)],
    ['Created', when(vm.createdAt)],
    ['Kernel command line', vm.spec.cmdline || '—'],
  ];
  if (vm.runtime.lastExit) rows.push(['Last exit', `${vm.runtime.lastExit.reason}${vm.runtime.lastExit.detail ? `: ${vm.runtime.lastExit.detail}` : ''} (${when(vm.runtime.lastExit.at)})`]);
  return <dl className="facts">{rows.map(([k, v]) => <div key={k}><dt>{k}</dt><dd>{v}</dd></div>)}</dl>;
}
