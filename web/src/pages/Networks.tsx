import { useState } from 'react';
import { act, getOptional, type ApiError } from '../api';
import type { Network } from '../types';
import { asApiError, useApi } from '../useApi';
import { ConfirmDialog, type ConfirmRequest } from '../components/ConfirmDialog';
import { ErrorBanner } from '../components/ErrorBanner';

export function Networks() {
  const nets = useApi(() => getOptional<Network[]>('/1.0/networks'), []);
  const [form, setForm] = useState({ name: '', kind: 'nat', subnet: '' });
  const [error, setError] = useState<ApiError | null>(null);
  const [confirm, setConfirm] = useState<ConfirmRequest | null>(null);
  const run = (p: Promise<unknown>): void => { setError(null); p.then(() => nets.reload(), (e: unknown) => setError(asApiError(e))); };
  return (
    <main>
      <h1>Networks</h1>
      <ErrorBanner error={nets.error} />
      {nets.data === null && !nets.loading && <p className="muted">This daemon has no networks API.</p>}
      <div className="table-wrap"><table>
        <thead><tr><th>Name</th><th>Kind</th><th>Subnet</th><th>Gateway</th><th>Bridge</th><th>VMs</th><th /></tr></thead>
        <tbody>{nets.data?.map((n) => (
          <tr key={n.name}><td>{n.name}</td><td>{n.kind}</td><td>{n.subnet ?? '—'}</td><td>{n.gateway ?? '—'}</td><td>{n.bridge}{n.status.bridge ? '' : ' (down)'}</td><td>{n.usedBy.join(', ') || '—'}</td>
            <td><button type="button" className="danger" onClick={() => setConfirm({ title: `Delete network ${n.name}?`, body: 'Its bridge and DHCP server are removed.', confirm: 'Delete', danger: true, onConfirm: () => run(act('DELETE', `/1.0/networks/${encodeURIComponent(n.name)}`)) })}>Delete</button></td></tr>
        ))}</tbody>
      </table></div>
      <form className="inline" onSubmit={(e) => { e.preventDefault(); run(act('POST', '/1.0/networks', { name: form.name, kind: form.kind, ...(form.subnet ? { subnet: form.subnet } : {}) })); }}>
        <label>New network <input value={form.name} onChange={(e) => setForm({ ...form, name: e.target.value })} required size={12} /></label>
        <label>kind <select value={form.kind} onChange={(e) => setForm({ ...form, kind: e.target.value })}><option>nat</option><option>isolated</option></select></label>
        <label>subnet <input value={form.subnet} onChange={(e) => setForm({ ...form, subnet: e.target.value })} placeholder="automatic" size={16} /></label>
        <button type="submit">Create</button>
      </form>
      <ErrorBanner error={error} onClose={() => setError(null)} />
      <ConfirmDialog request={confirm} onClose={() => setConfirm(null)} />
    </main>
  );
}
