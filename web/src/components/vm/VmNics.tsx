import type { Vm } from '../../types';

export function VmNics({ vm }: { vm: Vm }) {
  const live = new Map((vm.runtime.nics ?? []).map((n) => [n.name, n]));
  const nics = vm.spec.nics ?? [];
  if (nics.length === 0) return <p className="muted">No NICs.</p>;
  return (
    <div className="table-wrap"><table>
      <thead><tr><th>Name</th><th>Network</th><th>MAC</th><th>TAP</th><th>IPv4</th></tr></thead>
      <tbody>{nics.map((n) => (
        <tr key={n.name}><td>{n.name}</td><td>{n.network}</td><td><code>{n.mac}</code></td><td>{live.get(n.name)?.tap ?? '—'}</td><td>{live.get(n.name)?.ipv4 ?? n.ipv4 ?? '—'}</td></tr>
      ))}</tbody>
    </table></div>
  );
}
