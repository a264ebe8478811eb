import type { Operation } from '../types';

export function OperationProgress({ op }: { op: Operation | null }) {
  if (!op) return null;
  const pct = op.progress?.percent;
  return (
    <div className="operation" role="status">
      <span>{op.description}: {op.status}{op.progress ? ` — ${op.progress.stage}` : ''}</span>
      {pct !== undefined && <progress max={100} value={pct}>{pct}%</progress>}
    </div>
  );
}
