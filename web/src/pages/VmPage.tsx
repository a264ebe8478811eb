// One VM: overview and actions, consoles, charts, disks, NICs, snapshots, activity; kept current by its events.
import { lazy, Suspense } from 'react';
import { get } from '../api';
import { useEvents } from '../events';
import { go, href } from '../router';
import type { Vm } from '../types';
import { useApi } from '../useApi';
import { ErrorBanner } from '../components/ErrorBanner';
import { StateBadge } from '../components/StateBadge';
import { VmActions } from '../components/VmActions';
import { VmActivity } from '../components/vm/VmActivity';
import { VmDisks } from '../components/vm/VmDisks';
import { VmMetrics } from '../components/vm/VmMetrics';
import { VmNics } from '../components/vm/VmNics';
import { VmOverview } from '../components/vm/VmOverview';
import { VmSnapshots } from '../components/vm/VmSnapshots';

// The consoles (xterm.js, noVNC) are most of the UI's code: loaded when first opened.
const SerialConsole = lazy(() => import('../components/SerialConsole').then((m) => ({ default: m.SerialConsole })));
const VncConsole = lazy(() => import('../components/VncConsole').then((m) => ({ default: m.VncConsole })));

const TABS = ['overview', 'console', 'display', 'charts', 'disks', 'nics', 'snapshots', 'activity'] as const;
type Tab = (typeof TABS)[number];

export function VmPage({ name, tab }: { name: string; tab: string | undefined }) {
  const vm = useApi(() => get<Vm>(`/1.0/vms/${encodeURIComponent(name)}`), [name]);
  useEvents((e) => { if (e?.type === 'deleted') go('vms'); else vm.reload(); }, (e) => e.vm === name);
  const current: Tab = (TABS as readonly string[]).includes(tab ?? '') ? tab as Tab : 'overview';
  const v = vm.data;
  const live = v !== null && (v.state === 'running' || v.state === 'paused');
  return (
    <main>
      <header className="page-head">
        <h1>{name} {v && <StateBadge state={v.state} />}</h1>
        {v && <VmActions vm={v} onDone={(a) => { if (a === 'delete') go('vms'); else vm.reload(); }} />}
      </header>
      <ErrorBanner error={vm.error} />
      <nav className="tabs" aria-label="VM sections">
        {TABS.filter((t) => t !== 'display' || v?.display).map((t) => (
          <a key={t} href={href('vms', name, t)} aria-current={t === current ? 'page' : undefined}>{t}</a>
        ))}
      </nav>
      {v && current === 'overview' && <VmOverview vm={v} />}
      <Suspense fallback={<p className="muted">Loading…</p>}>
      {v && current === 'console' && (live ? <SerialConsole key={`${name}-${v.runtime.startedAt}`} vm={name} /> : <p className="muted">The console is available while the VM runs.</p>)}
      {v && current === 'display' && (live && v.display ? <VncConsole key={`${name}-${v.runtime.startedAt}`} vm={name} /> : <p className="muted">The display is available while the VM runs.</p>)}
      </Suspense>
      {current === 'charts' && <VmMetrics vm={name} />}
      {current === 'disks' && <VmDisks vm={name} />}
      {v && current === 'nics' && <VmNics vm={v} onChange={vm.reload} />}
      {current === 'snapshots' && <VmSnapshots vm={name} running={live} />}
      {current === 'activity' && <VmActivity vm={name} />}
    </main>
  );
}
