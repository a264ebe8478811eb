// Live charts of one VM from GET /1.0/vms/{name}/metrics (the monitoring API). Samples are taken every
// 10 s by the daemon and no event announces them, so the charts re-read the last hour at that pace
// while they are on screen; the VM's state itself comes from events.
import { useEffect, useMemo } from 'react';
import { getOptional } from '../../api';
import { bytes } from '../../format';
import type { VmSample } from '../../types';
import { useApi } from '../../useApi';
import { Chart } from '../Chart';
import { ErrorBanner } from '../ErrorBanner';

const SAMPLE_INTERVAL_MS = 10_000;

/** Per-second rates from cumulative counters (null for the first sample and after a counter reset). */
export function rates(samples: Array<{ t: number }>, key: string): Array<number | null> {
  return samples.map((s, i) => {
    if (i === 0) return null;
    const prev = samples[i - 1] as unknown as Record<string, number>;
    const cur = s as unknown as Record<string, number>;
    const dt = (cur.t! - prev.t!) / 1000;
    const dv = cur[key]! - prev[key]!;
    return dt > 0 && dv >= 0 ? dv / dt : null;
  });
}

export function VmMetrics({ vm }: { vm: string }) {
  const m = useApi(() => getOptional<{ samples: VmSample[] }>(`/1.0/vms/${encodeURIComponent(vm)}/metrics?since=1h`), [vm]);
  useEffect(() => {
    const t = setInterval(m.reload, SAMPLE_INTERVAL_MS);
    return () => clearInterval(t);
  }, [m.reload]);
  const samples = m.data?.samples ?? [];
  const times = useMemo(() => samples.map((s) => s.t), [samples]);
  const cpu = useMemo(() => [{ label: 'CPU %', values: samples.map((s) => s.cpuPercent), color: '#2f81f7' }], [samples]);
  const mem = useMemo(() => [
    { label: 'process', values: samples.map((s) => s.memoryBytes), color: '#8250df' },
    { label: 'guest used', values: samples.map((s) => s.guestMemoryUsedBytes), color: '#1a7f37' },
  ], [samples]);
  const disk = useMemo(() => [
    { label: 'read/s', values: rates(samples, 'diskReadBytes'), color: '#1a7f37' },
    { label: 'write/s', values: rates(samples, 'diskWriteBytes'), color: '#cf222e' },
  ], [samples]);
  const net = useMemo(() => [
    { label: 'rx/s', values: rates(samples, 'netRxBytes'), color: '#1a7f37' },
    { label: 'tx/s', values: rates(samples, 'netTxBytes'), color: '#bf8700' },
  ], [samples]);
  if (m.data === null && !m.loading && !m.error) return <p className="muted">no data: this daemon has no metrics API</p>;
  return (
    <div className="charts">
      <ErrorBanner error={m.error} />
      <Chart title="CPU (100 % = one host CPU)" times={times} series={cpu} unit={(v) => `${Math.round(v)} %`} />
      <Chart title="Memory" times={times} series={mem} unit={bytes} />
      <Chart title="Disk I/O" times={times} series={disk} unit={(v) => `${bytes(v)}/s`} />
      <Chart title="Network" times={times} series={net} unit={(v) => `${bytes(v)}/s`} />
    </div>
  );
}
