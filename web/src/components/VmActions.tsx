// Start, stop, pause, resume, restart and delete, the ones that fit the VM's state; stopping and deleting ask first.
import { useState } from 'react';
import { act, type ApiError } from '../api';
import type { Operation, Vm } from '../types';
import { asApiError } from '../useApi';
import { ConfirmDialog, type ConfirmRequest } from './ConfirmDialog';
import { ErrorBanner } from './ErrorBanner';
import { OperationProgress } from './OperationProgress';

type Action = 'start' | 'stop' | 'pause' | 'resume' | 'restart' | 'delete';

function actionsFor(state: string): Action[] {
  switch (state) {
    case 'stopped': case 'crashed': return ['start', 'delete'];
    case 'running': return ['stop', 'restart', 'pause', 'delete'];
    case 'paused': return ['resume', 'stop', 'delete'];
    default: return ['stop', 'delete'];
  }
}

const ASK: Partial<Record<Action, (vm: string, state: string) => Omit<ConfirmRequest, 'onConfirm'>>> = {
  stop: (vm) => ({ title: `Stop ${vm}?`, body: `The guest is asked to shut down; after 30 s it is powered off.`, confirm: 'Stop', option: 'Force: power off at once' }),
  restart: (vm) => ({ title: `Restart ${vm}?`, body: 'The guest shuts down and boots again.', confirm: 'Restart', option: 'Force: power off at once' }),
  delete: (vm, state) => ({ title: `Delete ${vm}?`, body: `The VM and its own disks are removed for good${state === 'stopped' ? '' : ' (it is stopped first)'}.`, confirm: 'Delete', danger: true }),
};

export function VmActions({ vm, onDone, compact }: { vm: Vm; onDone?: (action: Action) => void; compact?: boolean }) {
  const [confirm, setConfirm] = useState<ConfirmRequest | null>(null);
  const [op, setOp] = useState<Operation | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const run = (a: Action, force = false): void => {
    setError(null);
    const path = `/1.0/vms/${encodeURIComponent(vm.name)}`;
    const p = a === 'delete' ? act('DELETE', `${path}?force=true`, undefined, setOp) : act('PUT', `${path}/state`, { action: a, ...(force ? { force } : {}) }, setOp);
    p.then(() => { setOp(null); onDone?.(a); }, (e: unknown) => { setOp(null); setError(asApiError(e)); });
  };
  const click = (a: Action): void => {
    const ask = ASK[a];
    if (ask) setConfirm({ ...ask(vm.name, vm.state), onConfirm: (force) => run(a, force) });
    else run(a);
  };
  return (
    <div className={compact ? 'actions compact' : 'actions'}>
      {actionsFor(vm.state).map((a) => (
        <button key={a} type="button" className={a === 'delete' ? 'danger' : undefined} disabled={op !== null} onClick={() => click(a)} aria-label={`${a} ${vm.name}`}>{a}</button>
      ))}
      <OperationProgress op={op} />
      <ErrorBanner error={error} onClose={() => setError(null)} />
      <ConfirmDialog request={confirm} onClose={() => setConfirm(null)} />
    </div>
  );
}
