// A VM's NICs (add to or remove from a stopped VM) and its port forwards (publish a guest port, remove).
import { useState } from 'react';
import { act, get, type ApiError } from '../../api';
import type { Network, PortForward, Vm } from '../../types';
import { asApiError, useApi } from '../../useApi';
import { ConfirmDialog, type ConfirmRequest } from '../ConfirmDialog';
import { ErrorBanner } from '../ErrorBanner';

export function VmNics({ vm, onChange }: { vm: Vm; onChange: () => void }) {
  const base = `/1.0/vms/${encodeURIComponent(vm.name)}`;
  const live = new Map((vm.runtime.nics ?? []).map((n) => [n.name, n]));
  const nics = vm.spec.nics ?? [];
  const stopped = vm.state === 'stopped' || vm.state === 'crashed';
  const networks = useApi(() => get<Network[]>('/1.0/networks'), []);
  const forwards = useApi(() => get<PortForward[]>(`${base}/forwards`), [vm.name]);
  const [nic, setNic] = useState({ network: '', name: '', mac: '' });
  const [fwd, setFwd] = useState({ hostPort: '', guestPort: '', proto: 'tcp', address: '' });
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const [confirm, setConfirm] = useState<ConfirmRequest | null>(null);
  const run = (p: Promise<unknown>, after: () => void): void => {
    setError(null); setBusy(true);
    p.then(() => { setBusy(false); after(); }, (e: unknown) => { setBusy(false); setError(asApiError(e)); });
  };
  return (
    <section>
      <h2>NICs</h2>
      <ErrorBanner error={networks.error} />
      {nics.length === 0 ? <p className="muted">No NICs.</p> : (
        <div className="table-wrap"><table>
          <thead><tr><th>Name</th><th>Network</th><th>MAC</th><th>TAP</th><th>IPv4</th><th /></tr></thead>
          <tbody>{nics.map((n) => (
            <tr key={n.name}><td>{n.name}</td><td>{n.network}</td><td><code>{n.mac}</code></td><td>{live.get(n.name)?.tap ?? '—'}</td><td>{live.get(n.name)?.ipv4 ?? n.ipv4 ?? '—'}</td>
              <td><button type="button" disabled={!stopped || busy} title={stopped ? undefined : 'NICs change while the VM is stopped'}
                onClick={() => setConfirm({ title: `Remove NIC ${n.name}?`, body: `The VM loses its NIC on ${n.network}, and its port forwards through it.`, confirm: 'Remove', danger: true, onConfirm: () => run(act('DELETE', `${base}/nics/${encodeURIComponent(n.name)}`), onChange) })}>Remove</button></td></tr>
          ))}</tbody>
        </table></div>
      )}
      <form className="inline" aria-label="Add a NIC" onSubmit={(e) => {
        e.preventDefault();
        run(act('POST', `${base}/nics`, { network: nic.network, ...(nic.name ? { name: nic.name } : {}), ...(nic.mac ? { mac: nic.mac } : {}) }), () => { setNic({ network: '', name: '', mac: '' }); onChange(); });
      }}>
        <label>Network
          <input list="nic-networks" value={nic.network} onChange={(e) => setNic({ ...nic, network: e.target.value })} required placeholder={networks.data?.[0]?.name ?? 'user'} size={12} />
          <datalist id="nic-networks">{['user', ...(networks.data ?? []).map((n) => n.name)].filter((n, i, a) => a.indexOf(n) === i).map((n) => <option key={n} value={n} />)}</datalist>
        </label>
        <label>Name <input value={nic.name} onChange={(e) => setNic({ ...nic, name: e.target.value })} placeholder="next ethN" size={8} /></label>
        <label>MAC <input value={nic.mac} onChange={(e) => setNic({ ...nic, mac: e.target.value })} placeholder="chosen" size={17} /></label>
        <button type="submit" disabled={!stopped || busy} title={stopped ? undefined : 'NICs change while the VM is stopped'}>Add NIC</button>
      </form>
      {!stopped && <p className="muted">NICs are added and removed while the VM is stopped.</p>}

      <h2>Port forwards</h2>
      <ErrorBanner error={forwards.error} />
      {forwards.data?.length ? (
        <div className="table-wrap"><table>
          <thead><tr><th>Host</th><th>Guest</th><th>Protocol</th><th /></tr></thead>
          <tbody>{forwards.data.map((f) => (
            <tr key={f.id}><td>{f.address}:{f.hostPort}</td><td>{f.guestAddress ?? 'guest'}:{f.guestPort}</td><td>{f.proto}</td>
              <td><button type="button" disabled={busy} onClick={() => run(act('DELETE', `${base}/forwards/${f.id}`), forwards.reload)}>Remove</button></td></tr>
          ))}</tbody>
        </table></div>
      ) : <p className="muted">No port forwards.</p>}
      <form className="inline" aria-label="Add a port forward" onSubmit={(e) => {
        e.preventDefault();
        run(act('POST', `${base}/forwards`, { hostPort: Number(fwd.hostPort), guestPort: Number(fwd.guestPort), proto: fwd.proto, ...(fwd.address ? { address: fwd.address } : {}) }),
          () => { setFwd({ hostPort: '', guestPort: '', proto: 'tcp', address: '' }); forwards.reload(); });
      }}>
        <label>Host port <input type="number" min={1} max={65535} value={fwd.hostPort} onChange={(e) => setFwd({ ...fwd, hostPort: e.target.value })} required size={6} /></label>
        <label>Guest port <input type="number" min={1} max={65535} value={fwd.guestPort} onChange={(e) => setFwd({ ...fwd, guestPort: e.target.value })} required size={6} /></label>
        <label>Protocol <select value={fwd.proto} onChange={(e) => setFwd({ ...fwd, proto: e.target.value })}><option value="tcp">tcp</option><option value="udp">udp</option></select></label>
        <label>Host address <input value={fwd.address} onChange={(e) => setFwd({ ...fwd, address: e.target.value })} placeholder="0.0.0.0" size={15} /></label>
        <button type="submit" disabled={busy}>Add forward</button>
      </form>
      <ErrorBanner error={error} onClose={() => setError(null)} />
      <ConfirmDialog request={confirm} onClose={() => setConfirm(null)} />
    </section>
  );
}
