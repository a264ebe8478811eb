import { useState } from 'react';
import { act, get, type ApiError } from '../api';
import { bytes } from '../format';
import type { Image, Operation } from '../types';
import { asApiError, useApi } from '../useApi';
import { ConfirmDialog, type ConfirmRequest } from '../components/ConfirmDialog';
import { ErrorBanner } from '../components/ErrorBanner';
import { OperationProgress } from '../components/OperationProgress';
import { ImageUpload } from '../components/ImageUpload';

export function Images() {
  const images = useApi(() => get<Image[]>('/1.0/images'), []);
  const [op, setOp] = useState<Operation | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [confirm, setConfirm] = useState<ConfirmRequest | null>(null);
  const run = (p: Promise<unknown>): void => {
    setError(null);
    p.then(() => { setOp(null); images.reload(); }, (e: unknown) => { setOp(null); setError(asApiError(e)); images.reload(); });
  };
  return (
    <main>
      <h1>Images</h1>
      <ErrorBanner error={images.error} />
      <div className="table-wrap"><table>
        <thead><tr><th>Name</th><th>Description</th><th>Status</th><th>Origin</th><th>Boot</th><th>Size</th><th /></tr></thead>
        <tbody>{images.data?.map((i) => (
          <tr key={i.name}><td>{i.name}</td><td>{i.description}</td><td>{i.status}</td><td>{i.origin ?? '—'}</td><td>{i.boot?.join(', ') ?? 'kernel'}</td><td>{bytes(i.sizeBytes)}</td>
            <td className="actions compact">
              {i.origin !== 'imported' && <button type="button" disabled={op !== null} onClick={() => run(act('POST', `/1.0/images/${encodeURIComponent(i.name)}/build`, {}, setOp))}>{i.status === 'ready' ? 'Rebuild' : 'Build'}</button>}
              {i.origin === 'imported' && <button type="button" className="danger" onClick={() => setConfirm({ title: `Delete image ${i.name}?`, body: 'VMs made from it keep working; new ones cannot use it.', confirm: 'Delete', danger: true, onConfirm: () => run(act('DELETE', `/1.0/images/${encodeURIComponent(i.name)}`)) })}>Delete</button>}
            </td></tr>
        ))}</tbody>
      </table></div>
      <OperationProgress op={op} />
      <ErrorBanner error={error} onClose={() => setError(null)} />
      <ImageUpload onDone={images.reload} />
      <p className="muted">From a shell: <code>hangar image import</code> does the same.</p>
      <ConfirmDialog request={confirm} onClose={() => setConfirm(null)} />
    </main>
  );
}
