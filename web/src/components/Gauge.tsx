export function Gauge({ label, value, max, text }: { label: string; value: number; max: number; text: string }) {
  const pct = max > 0 ? Math.min(100, Math.round((value / max) * 100)) : 0;
  return (
    <div className="gauge">
      <div className="gauge-label">{label}</div>
      <meter min={0} max={100} low={70} high={90} optimum={0} value={pct} aria-label={label}>{pct}%</meter>
      <div className="gauge-text">{text}</div>
    </div>
  );
}
