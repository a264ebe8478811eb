// The host at a glance: gauges and budget, VMs by state, alerts, host charts (monitoring API; "no data" without it).
import { useEffect, useMemo } from 'react';
import { get, getOptional } from '../api';
import { useEvents } from '../events';
import { bytes, when } from '../format';
import { href } from '../router';
import type { Alert, HostCheck, HostMetrics, Vm } from '../types';
import { useApi } from '../useApi';
import { Chart } from '../components/Chart';
import { ErrorBanner } from '../components/ErrorBanner';
import { Gauge } from '../components/Gauge';

const SAMPLE_INTERVAL_MS = 10_000;

export function Dashboard() {
  const host = useApi(() => get<HostCheck>('/1.0/host'), []);
  const vms = useApi(() => get<Vm[]>('/1.0/vms'), []);
  const alerts = useApi(() => getOptional<Alert[]>('/1.0/alerts'), []);
  const metrics = useApi(() => getOptional<HostMetrics>('/1.0/host/metrics?since=1h'), []);
  useEvents((e) => {
    vms.reload();
    host.reload();
    if (e === null || e.type === 'alert') alerts.reload();
  });
  // Host samples arrive every 10 s with no event of their own: re-read them at that pace while shown.
  useEffect(() => { const t = setInterval(metrics.reload, SAMPLE_INTERVAL_MS); return () => clearInterval(t); }, [metrics.reload]);
  const counts = new Map<string, number>();
  for (const v of vms.data ?? []) counts.set(v.state, (counts.get(v.state) ?? 0) + 1);
  const samples = metrics.data?.samples ?? [];
  const times = useMemo(() => samples.map((s) => s.t), [samples]);
  const cpu = useMemo(() => [{ label: 'CPU %', values: samples.map((s) => s.cpuPercent), color: '#2f81f7' }, { label: 'load', values: samples.map((s) => s.load1 * 100), color: '#bf8700' }], [samples]);
  const mem = useMemo(() => [{ label: 'used', values: samples.map((s) => s.memoryUsedBytes), color: '#8250df' }], [samples]);
  const last = samples[samples.length - 1];
  const h = host.data;
  const budget = metrics.data?.budget;
  return (
    <main>
      <h1>Dashboard</h1>
      <ErrorBanner error={host.error ?? vms.error} />
      <section className="gauges">
        {h && <Gauge label="vCPUs allocated" value={h.cpus.allocated} max={h.cpus.total} text={`${h.cpus.allocated} of ${h.cpus.total}`} />}
        {h && <Gauge label="Memory allocated" value={h.memory.allocatedBytes} max={h.memory.totalBytes} text={`${bytes(h.memory.allocatedBytes)} of ${bytes(h.memory.totalBytes)}`} />}
        {budget && <Gauge label="vCPU budget" value={budget.vcpus.committed} max={budget.vcpus.available} text={`${budget.vcpus.committed} of ${budget.vcpus.available}`} />}
        {budget && <Gauge label="Memory budget" value={budget.memoryBytes.committed} max={budget.memoryBytes.available} text={`${bytes(budget.memoryBytes.committed)} of ${bytes(budget.memoryBytes.available)}`} />}
        {last && <Gauge label="Host CPU" value={last.cpuPercent} max={100} text={`${Math.round(last.cpuPercent)} %`} />}
        {last && <Gauge label="Data directory" value={last.dataDirUsedBytes} max={last.dataDirTotalBytes} text={`${bytes(last.dataDirUsedBytes)} of ${bytes(last.dataDirTotalBytes)}`} />}
      </section>
      {h && <p className="muted">KVM: {h.kvm.kind} · QEMU {h.qemu.version ?? 'absent'}{h.advice.length ? ` · ${h.advice.join(' ')}` : ''}</p>}
      <section>
        <h2>VMs</h2>
        <p className="counts">{vms.data && vms.data.length === 0 ? 'none' : [...counts].map(([s, n]) => <a key={s} href={href('vms')} className={`badge state-${s}`}>{n} {s}</a>)}</p>
      </section>
      <section>
        <h2>Alerts</h2>
        <ErrorBanner error={alerts.error} />
        {alerts.data === null || alerts.data === undefined ? <p className="muted">no data</p> : alerts.data.length === 0 ? <p>No alerts.</p> : (
          <ul className="list">{alerts.data.map((a) => (
            <li key={a.id} className={a.clearedAt ? 'muted' : 'alert-active'}>{a.vm ? `${a.vm}: ` : ''}{a.message} <span className="muted">({a.kind}, {when(a.raisedAt)}{a.clearedAt ? `, cleared ${when(a.clearedAt)}` : ''})</span></li>
          ))}</ul>
        )}
      </section>
      <section className="charts">
        <ErrorBanner error={metrics.error} />
        <Chart title="Host CPU (%) and load (×100)" times={times} series={cpu} unit={(v) => String(Math.round(v))} />
        <Chart title="Host memory" times={times} series={mem} unit={bytes} />
      </section>
    </main>
  );
}
