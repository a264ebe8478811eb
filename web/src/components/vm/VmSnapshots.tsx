import { useState } from 'react';
import { act, get, type ApiError } from '../../api';
import { bytes, when } from '../../format';
import type { Operation, Snapshot } from '../../types';
import { asApiError, useApi } from '../../useApi';
import { ConfirmDialog, type ConfirmRequest } from '../ConfirmDialog';
import { ErrorBanner } from '../ErrorBanner';
import { OperationProgress } from '../OperationProgress';

export function VmSnapshots({ vm, running }: { vm: string; running: boolean }) {
  const base = `/1.0/vms/${encodeURIComponent(vm)}/snapshots`;
  const snaps = useApi(() => get<Snapshot[]>(base), [vm]);
  const [name, setName] = useState('');
  const [memory, setMemory] = useState(false);
  const [op, setOp] = useState<Operation | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [confirm, setConfirm] = useState<ConfirmRequest | null>(null);
  const run = (p: Promise<unknown>): void => {
    setError(null);
    p.then(() => { setOp(null); snaps.reload(); }, (e: unknown) => { setOp(null); setError(asApiError(e)); });
  };
  return (
    <section>
      <ErrorBanner error={snaps.error} />
      <div className="table-wrap"><table>
        <thead><tr><th>Name</th><th>Taken</th><th>VM state</th><th>Memory</th><th /></tr></thead>
        <tbody>{snaps.data?.map((s) => (
          <tr key={s.name}><td>{s.name}</td><td>{when(s.createdAt)}</td><td>{s.vmState}</td><td>{s.memory ? bytes(s.vmStateBytes) : 'no'}</td>
            <td className="actions compact">
              <button type="button" onClick={() => setConfirm({ title: `Restore ${s.name}?`, body: `${vm} goes back to this snapshot.`, confirm: 'Restore', onConfirm: () => run(act('POST', `${base}/${encodeURIComponent(s.name)}/restore`, {}, setOp)) })}>Restore</button>
              <button type="button" className="danger" onClick={() => setConfirm({ title: `Delete snapshot ${s.name}?`, body: 'It cannot be restored afterwards.', confirm: 'Delete', danger: true, onConfirm: () => run(act('DELETE', `${base}/${encodeURIComponent(s.name)}`, undefined, setOp)) })}>Delete</button>
            </td></tr>
        ))}</tbody>
      </table></div>
      <form className="inline" onSubmit={(e) => { e.preventDefault(); run(act('POST', base, { ...(name ? { name } : {}), ...(memory ? { memory } : {}) }, setOp)); }}>
        <label>Name <input value={name} onChange={(e) => setName(e.target.value)} placeholder="snapN" size={10} /></label>
        <label className="check"><input type="checkbox" checked={memory} disabled={!running} onChange={(e) => setMemory(e.target.checked)} /> with memory</label>
        <button type="submit">Take snapshot</button>
      </form>
      <OperationProgress op={op} />
      <ErrorBanner error={error} onClose={() => setError(null)} />
      <ConfirmDialog request={confirm} onClose={() => setConfirm(null)} />
    </section>
  );
}
