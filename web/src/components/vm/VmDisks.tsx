import { useState } from 'react';
import { act, get, type ApiError } from '../../api';
import { bytes } from '../../format';
import type { Operation, VmDiskInfo } from '../../types';
import { asApiError, useApi } from '../../useApi';
import { ErrorBanner } from '../ErrorBanner';
import { OperationProgress } from '../OperationProgress';

export function VmDisks({ vm }: { vm: string }) {
  const base = `/1.0/vms/${encodeURIComponent(vm)}/disks`;
  const disks = useApi(() => get<VmDiskInfo[]>(base), [vm]);
  const [size, setSize] = useState('1G');
  const [op, setOp] = useState<Operation | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const run = (p: Promise<unknown>): void => {
    setError(null);
    p.then(() => { setOp(null); disks.reload(); }, (e: unknown) => { setOp(null); setError(asApiError(e)); });
  };
  return (
    <section>
      <ErrorBanner error={disks.error} />
      <div className="table-wrap"><table>
        <thead><tr><th>Name</th><th>Volume</th><th>Format</th><th>Size</th><th>Read-only</th><th /></tr></thead>
        <tbody>{disks.data?.map((d) => (
          <tr key={d.name}><td>{d.name}</td><td>{d.volume}</td><td>{d.format}</td><td>{bytes(d.sizeBytes)}</td><td>{d.readOnly ? 'yes' : 'no'}</td>
            <td>{d.name !== 'root' && <button type="button" onClick={() => run(act('DELETE', `${base}/${encodeURIComponent(d.name)}`, undefined, setOp))}>Detach</button>}</td></tr>
        ))}</tbody>
      </table></div>
      <form className="inline" onSubmit={(e) => { e.preventDefault(); run(act('POST', base, { size }, setOp)); }}>
        <label>New disk of <input value={size} onChange={(e) => setSize(e.target.value)} size={6} /></label>
        <button type="submit">Attach</button>
      </form>
      <OperationProgress op={op} />
      <ErrorBanner error={error} onClose={() => setError(null)} />
    </section>
  );
}
