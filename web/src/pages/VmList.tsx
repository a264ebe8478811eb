// All VMs, refreshed by lifecycle events.
import { get } from '../api';
import { useEvents } from '../events';
import { bytes, duration, vmAddress } from '../format';
import { href } from '../router';
import type { Vm } from '../types';
import { useApi } from '../useApi';
import { ErrorBanner } from '../components/ErrorBanner';
import { StateBadge } from '../components/StateBadge';
import { VmActions } from '../components/VmActions';

export function VmList() {
  const vms = useApi(() => get<Vm[]>('/1.0/vms'), []);
  useEvents(() => vms.reload());
  return (
    <main>
      <header className="page-head">
        <h1>Virtual machines</h1>
        <a className="button primary" href={href('create')}>Create VM</a>
      </header>
      <ErrorBanner error={vms.error} />
      {vms.data && vms.data.length === 0 && <p>No VMs yet. <a href={href('create')}>Create one</a>.</p>}
      {vms.data && vms.data.length > 0 && (
        <div className="table-wrap">
          <table className="vms">
            <thead><tr><th>Name</th><th>State</th><th>Engine</th><th>Address</th><th>CPU</th><th>Memory</th><th>Uptime</th><th>Actions</th></tr></thead>
            <tbody>
              {vms.data.map((vm) => (
                <tr key={vm.name} data-vm={vm.name}>
                  <td><a href={href('vms', vm.name)}>{vm.name}</a></td>
                  <td><StateBadge state={vm.state} /></td>
                  <td>{vm.spec.engine}</td>
                  <td>{vmAddress(vm)}</td>
                  <td>{vm.spec.cpus} vCPU{vm.runtime.cpuSeconds !== undefined ? ` · ${vm.runtime.cpuSeconds.toFixed(1)} s` : ''}</td>
                  <td>{bytes(vm.spec.memoryBytes)}{vm.runtime.rssBytes !== undefined ? ` · RSS ${bytes(vm.runtime.rssBytes)}` : ''}</td>
                  <td>{duration(vm.runtime.uptimeSeconds)}</td>
                  <td><VmActions vm={vm} compact onDone={() => vms.reload()} /></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </main>
  );
}
