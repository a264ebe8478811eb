// A VM's lifecycle events and operations; new events arrive through the events WebSocket.
import { get } from '../../api';
import { useEvents } from '../../events';
import { when } from '../../format';
import type { LifecycleEvent, Operation } from '../../types';
import { useApi } from '../../useApi';
import { ErrorBanner } from '../ErrorBanner';

export function VmActivity({ vm }: { vm: string }) {
  const events = useApi(() => get<LifecycleEvent[]>(`/1.0/events?vm=${encodeURIComponent(vm)}`), [vm]);
  const ops = useApi(async () => (await get<Operation[]>('/1.0/operations')).filter((o) => o.resources.vms.includes(vm)), [vm]);
  useEvents(() => { events.reload(); ops.reload(); }, (e) => e.vm === vm);
  return (
    <section className="activity">
      <h2>Operations</h2>
      <ErrorBanner error={ops.error} />
      <ul className="list">{ops.data?.slice().reverse().map((o) => (
        <li key={o.id}><span className={`badge op-${o.status}`}>{o.status}</span> {o.description}
          {o.progress && <> — {o.progress.stage}{o.progress.percent !== undefined && <progress max={100} value={o.progress.percent} />}</>}
          {o.error && <span className="error-message"> {o.error.message}</span>} <span className="muted">{when(o.updatedAt)}</span></li>
      ))}</ul>
      <h2>Events</h2>
      <ErrorBanner error={events.error} />
      <ul className="list events">{events.data?.slice().reverse().slice(0, 200).map((e) => (
        <li key={e.seq}><span className="muted">{when(e.at)}</span> {e.type}{e.reason ? ` (${e.reason})` : ''}</li>
      ))}</ul>
    </section>
  );
}
