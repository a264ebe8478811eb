/**
 * Monitoring from the command line (docs/monitoring.md):
 *   hangar top     live usage of every VM and the host, like virt-top
 *                  (sortable; `--once --json` for scripts and pipes)
 *   hangar stats   one VM's history (GET /1.0/vms/{name}/metrics)
 *   hangar alerts  active and recent alerts (GET /1.0/alerts)
 */
import { Option, type Command } from 'commander';
import { HangarError } from '../../common/errors.js';
import type { Alert, MetricsSummary, VmMetrics } from '../../host/api/schemas.js';
import { checkVmName, clientFor, formatFor, note, out, printJson, vmPath, withJson } from '../context.js';
import { parseDurationOption } from '../duration.js';
import { formatSizeApprox as size, formatTime, renderRows, renderTable } from '../output.js';

export const TOP_SORT_KEYS = ['cpu', 'mem', 'name', 'disk', 'net', 'state'] as const;
export type TopSortKey = (typeof TOP_SORT_KEYS)[number];
/** Keys that change the order while `hangar top` runs on a terminal. */
const SORT_BY_KEY: Record<string, TopSortKey> = { c: 'cpu', m: 'mem', n: 'name', d: 'disk', t: 'net', s: 'state' };

export const TOP_HEADERS = ['NAME', 'STATE', 'ENGINE', 'VCPUS', 'CPU%', 'MEM', 'GUEST MEM', 'DISK R', 'DISK W', 'NET RX', 'NET TX'];

type VmNow = MetricsSummary['vms'][number];

const iso = (ms: number): string => new Date(ms).toISOString();
const dash = (n: number | null | undefined, f: (x: number) => string): string => (n === null || n === undefined ? '-' : f(n));

function sortValue(v: VmNow, key: TopSortKey): number | string {
  const s = v.sample;
  switch (key) {
    case 'cpu': return s?.cpuPercent ?? -1;
    case 'mem': return s?.memoryBytes ?? -1;
    case 'disk': return s ? s.diskReadBytes + s.diskWriteBytes : -1;
    case 'net': return s ? s.netRxBytes + s.netTxBytes : -1;
    case 'state': return v.state;
    case 'name': return v.vm;
  }
}

/** Biggest first for numbers; names and states in alphabetical order; ties by name. */
export function sortVms(vms: VmNow[], key: TopSortKey): VmNow[] {
  return [...vms].sort((a, b) => {
    const x = sortValue(a, key);
    const y = sortValue(b, key);
    if (typeof x === 'number' && typeof y === 'number' && x !== y) return y - x;
    if (typeof x === 'string' && typeof y === 'string' && x !== y) return x < y ? -1 : 1;
    return a.vm < b.vm ? -1 : a.vm > b.vm ? 1 : 0;
  });
}

export function topRow(v: VmNow): string[] {
  const s = v.sample;
  return [
    v.vm, v.state, v.engine, String(v.cpus),
    dash(s?.cpuPercent, (n) => n.toFixed(1)),
    dash(s?.memoryBytes, size),
    dash(s?.guestMemoryUsedBytes, size),
    dash(s?.diskReadBytes, size), dash(s?.diskWriteBytes, size),
    dash(s?.netRxBytes, size), dash(s?.netTxBytes, size),
  ];
}

/** The host lines above the table. */
export function topHeader(m: MetricsSummary, sort: TopSortKey): string {
  const h = m.host;
  const b = m.budget;
  const lines = [
    h ? `host: cpu ${h.cpuPercent.toFixed(1)}%  memory ${size(h.memoryUsedBytes)} of ${size(h.memoryTotalBytes)}  load ${h.load1.toFixed(2)}  data dir ${size(h.dataDirUsedBytes)} of ${size(h.dataDirTotalBytes)}` : 'host: no sample yet',
    `committed: ${b.vcpus.committed} of ${b.vcpus.available} vCPUs, ${size(b.memoryBytes.committed)} of ${size(b.memoryBytes.available)} memory  VMs: ${m.vms.filter((v) => v.state === 'running').length} running of ${m.vms.length}  sorted by ${sort}`,
  ];
  for (const a of m.alerts) lines.push(`ALERT ${a.kind}${a.vm ? ` ${a.vm}` : ''}: ${a.message} (since ${formatTime(iso(a.raisedAt))})`);
  return lines.join('\n') + '\n';
}

export function renderTop(m: MetricsSummary, sort: TopSortKey): string {
  return topHeader(m, sort) + '\n' + renderTable(TOP_HEADERS, sortVms(m.vms, sort).map(topRow));
}

/** `since` for the API: a duration back from now (90s, 15m, 1h, 7d) or ms since the epoch. */
export function parseSinceOption(v: string): string {
  const t = v.trim();
  if (/^\d{1,6}(s|m|h|d)$/.test(t) || /^\d{12,15}$/.test(t)) return t;
  throw new HangarError('INVALID_ARGUMENT', `--since must be a duration such as 30m, 1h or 7d (or ms since the epoch), got "${v}"`);
}

function parseSort(v: string): TopSortKey {
  if ((TOP_SORT_KEYS as readonly string[]).includes(v)) return v as TopSortKey;
  throw new HangarError('INVALID_ARGUMENT', `--sort must be one of ${TOP_SORT_KEYS.join(', ')}, got "${v}"`);
}

export const STATS_HEADERS = ['TIME', 'CPU%', 'CPU TIME', 'MEM', 'GUEST MEM', 'DISK R', 'DISK W', 'NET RX', 'NET TX'];

export function statsRow(s: VmMetrics['samples'][number]): string[] {
  return [
    formatTime(iso(s.t)), s.cpuPercent.toFixed(1), `${s.cpuSeconds.toFixed(2)}s`, size(s.memoryBytes), dash(s.guestMemoryUsedBytes, size),
    size(s.diskReadBytes), size(s.diskWriteBytes), size(s.netRxBytes), size(s.netTxBytes),
  ];
}

export function statsSummary(m: VmMetrics): string {
  if (m.samples.length === 0) return `No samples of ${m.vm} in that range (it has not run, or the daemon samples less often).\n`;
  const cpu = m.samples.map((s) => s.cpuPercent);
  const avg = cpu.reduce((a, b) => a + b, 0) / cpu.length;
  const first = m.samples[0]!;
  const last = m.samples.at(-1)!;
  return `${m.samples.length} samples every ${m.step}s; CPU average ${avg.toFixed(1)}%, peak ${Math.max(...cpu).toFixed(1)}%; memory now ${size(last.memoryBytes)}; ` +
    `CPU time ${Math.max(0, last.cpuSeconds - first.cpuSeconds).toFixed(2)}s over the range\n`;
}

export const ALERT_HEADERS = ['ID', 'VM', 'KIND', 'RAISED', 'CLEARED', 'MESSAGE'];

export function alertRow(a: Alert): string[] {
  return [String(a.id), a.vm ?? '-', a.kind, formatTime(iso(a.raisedAt)), a.clearedAt === null ? 'active' : formatTime(iso(a.clearedAt)), a.message];
}

export function registerMonitorCommands(program: Command): void {
  withJson(
    program
      .command('top')
      .description('live CPU, memory, disk and network use of every VM and the host (keys: c m n d t s sort, q quits)')
      .option('--once', 'print one screen and exit (for pipes and scripts)')
      .addOption(new Option('--sort <key>', `sort by ${TOP_SORT_KEYS.join(', ')}`).default('cpu').argParser(parseSort))
      .option('--interval <duration>', 'time between refreshes, e.g. 2s (default: the daemon\'s sample interval)', parseDurationOption('--interval', { bare: 's', maxMs: 3600_000 })),
  ).action(async (o: { once?: boolean; json?: boolean; sort: TopSortKey; interval?: number }, cmd: Command) => {
    const client = clientFor(cmd);
    let sort = o.sort;
    const fetch = async (): Promise<MetricsSummary> => {
      const m = await client.get<MetricsSummary>('/1.0/metrics');
      return { ...m, vms: sortVms(m.vms, sort) };
    };
    if (o.once) {
      const m = await fetch();
      if (o.json) printJson(m);
      else out(renderTop(m, sort));
      return;
    }
    const tty = process.stdout.isTTY === true && !o.json;
    let stop = false;
    let wake: (() => void) | null = null;
    const restoreInput = (): void => {
      if (process.stdin.isTTY) { process.stdin.setRawMode(false); process.stdin.pause(); }
    };
    if (tty && process.stdin.isTTY) {
      process.stdin.setRawMode(true);
      process.stdin.resume();
      process.stdin.on('data', (d: Buffer) => {
        const k = d.toString();
        if (k === 'q' || k === '\u0003') { stop = true; wake?.(); return; }
        const next = SORT_BY_KEY[k.toLowerCase()];
        if (next) { sort = next; wake?.(); }
      });
    }
    process.once('SIGINT', () => { stop = true; wake?.(); });
    try {
      let first = true;
      while (!stop) {
        const m = await fetch();
        if (o.json) out(JSON.stringify(m) + '\n');
        else if (tty) out('\x1b[H\x1b[2J' + renderTop(m, sort));
        else out((first ? '' : '\n') + renderTop(m, sort));
        first = false;
        const waitMs = o.interval ?? m.sampleIntervalSeconds * 1000;
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, waitMs);
          wake = () => { clearTimeout(t); resolve(); };
        });
        wake = null;
      }
    } finally {
      restoreInput();
    }
  });

  withJson(
    program
      .command('stats')
      .description("a VM's CPU, memory, disk and network history")
      .argument('<vm>', 'VM name')
      .option('--since <when>', 'how far back: 30m, 1h, 7d (or ms since the epoch)', parseSinceOption, '1h')
      .option('--step <seconds>', 'seconds between points (widened to what the history holds)', (v: string) => {
        if (!/^\d{1,7}$/.test(v) || Number(v) < 1) throw new HangarError('INVALID_ARGUMENT', `--step must be a whole number of seconds, got "${v}"`);
        return v;
      })
      .option('--format <format>', 'table, json or csv', 'table'),
  ).action(async (name: string, o: { since: string; step?: string }, cmd: Command) => {
    checkVmName(name);
    const format = formatFor(cmd);
    const q = new URLSearchParams({ since: o.since, ...(o.step !== undefined ? { step: o.step } : {}) });
    const m = await clientFor(cmd).get<VmMetrics>(vmPath(name, `/metrics?${q.toString()}`));
    if (format === 'json') return printJson(m);
    out(renderRows(format, STATS_HEADERS, m.samples.map(statsRow)));
    if (format === 'table') note(statsSummary(m));
  });

  withJson(
    program
      .command('alerts')
      .description('active alerts, then recently cleared ones')
      .option('--active', 'only active alerts')
      .option('--format <format>', 'table, json or csv', 'table'),
  ).action(async (o: { active?: boolean }, cmd: Command) => {
    const format = formatFor(cmd);
    const all = await clientFor(cmd).get<Alert[]>('/1.0/alerts');
    const alerts = o.active ? all.filter((a) => a.clearedAt === null) : all;
    if (format === 'json') return printJson(alerts);
    out(renderRows(format, ALERT_HEADERS, alerts.map(alertRow)));
  });
}
