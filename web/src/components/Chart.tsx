// A uPlot line chart of time series (times in ms); sized to its box, redrawn when the data changes.
import { useEffect, useRef } from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export interface Series { label: string; values: Array<number | null>; color: string }

export function Chart({ title, times, series, unit }: { title: string; times: number[]; series: Series[]; unit?: (v: number) => string }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  useEffect(() => {
    const el = box.current;
    if (!el || times.length === 0) return;
    const data: uPlot.AlignedData = [times.map((t) => t / 1000), ...series.map((s) => s.values)];
    const fmt = unit ?? ((v: number) => String(Math.round(v * 10) / 10));
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height: 180,
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 1.5, value: (_u: uPlot, v: number | null) => (v === null ? '—' : fmt(v)) }))],
      axes: [{ stroke: 'currentColor' }, { stroke: 'currentColor', size: 70, values: (_u: uPlot, vals: number[]) => vals.map((v) => fmt(v)) }],
      legend: { show: true },
    };
    plot.current?.destroy();
    plot.current = new uPlot(opts, data, el);
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: Math.max(200, el.clientWidth), height: 180 }));
    resize.observe(el);
    return () => { resize.disconnect(); plot.current?.destroy(); plot.current = null; };
  }, [times, series, unit]);
  return (
    <figure className="chart">
      <figcaption>{title}</figcaption>
      {times.length === 0 ? <p className="muted">no data</p> : <div ref={box} className="chart-box" data-points={times.length} />}
    </figure>
  );
}
