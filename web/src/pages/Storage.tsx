import { useState } from 'react';
import { act, get, getOptional, type ApiError } from '../api';
import { bytes, when } from '../format';
import type { StoragePool, Volume } from '../types';
import { asApiError, useApi } from '../useApi';
import { ConfirmDialog, type ConfirmRequest } from '../components/ConfirmDialog';
import { ErrorBanner } from '../components/ErrorBanner';

function PoolVolumes({ pool }: { pool: string }) {
  const base = `/1.0/storage-pools/${encodeURIComponent(pool)}/volumes`;
  const vols = useApi(() => get<Volume[]>(base), [pool]);
  const [name, setName] = useState('');
  const [size, setSize] = useState('1G');
  const [error, setError] = useState<ApiError | null>(null);
  const [confirm, setConfirm] = useState<ConfirmRequest | null>(null);
  const run = (p: Promise<unknown>): void => { setError(null); p.then(() => vols.reload(), (e: unknown) => setError(asApiError(e))); };
  return (
    <>
      <ErrorBanner error={vols.error} />
      <div className="table-wrap"><table>
        <thead><tr><th>Volume</th><th>Format</th><th>Size</th><th>Allocated</th><th>Used by</th><th>Created</th><th /></tr></thead>
        <tbody>{vols.data?.map((v) => (
          <tr key={v.name}><td>{v.name}</td><td>{v.format}</td><td>{bytes(v.sizeBytes)}</td><td>{bytes(v.allocatedBytes)}</td>
            <td>{v.usedBy.map((u) => (typeof u === 'string' ? u : u.vm)).join(', ') || '—'}</td><td>{when(v.createdAt)}</td>
            <td>{v.usedBy.length === 0 && <button type="button" className="danger" onClick={() => setConfirm({ title: `Delete volume ${v.name}?`, body: 'Its data is gone for good.', confirm: 'Delete', danger: true, onConfirm: () => run(act('DELETE', `${base}/${encodeURIComponent(v.name)}`)) })}>Delete</button>}</td></tr>
        ))}</tbody>
      </table></div>
      <form className="inline" onSubmit={(e) => { e.preventDefault(); run(act('POST', base, { name, size })); }}>
        <label>New volume <input value={name} onChange={(e) => setName(e.target.value)} required size={12} /></label>
        <label>of <input value={size} onChange={(e) => setSize(e.target.value)} size={6} /></label>
        <button type="submit">Create</button>
      </form>
      <ErrorBanner error={error} onClose={() => setError(null)} />
      <ConfirmDialog request={confirm} onClose={() => setConfirm(null)} />
    </>
  );
}

export function Storage() {
  const pools = useApi(() => getOptional<StoragePool[]>('/1.0/storage-pools'), []);
  return (
    <main>
      <h1>Storage</h1>
      <ErrorBanner error={pools.error} />
      {pools.data === null && !pools.loading && <p className="muted">This daemon has no storage pools.</p>}
      {pools.data?.map((p) => (
        <section key={p.name}>
          <h2>Pool {p.name}</h2>
          <p className="muted">{p.path} · {p.usage.volumes} volumes · {bytes(p.usage.provisionedBytes)} of quota {bytes(p.quotaBytes)} · {bytes(p.usage.freeBytes)} free on the host</p>
          <PoolVolumes pool={p.name} />
        </section>
      ))}
    </main>
  );
}
