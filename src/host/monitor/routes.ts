/**
 * The monitoring routes (docs/monitoring.md, docs/api.md "Monitoring"):
 * history of a VM and of the host, alerts, the newest values of everything,
 * and /metrics for Prometheus. They sit behind the same listeners and token
 * as the rest of the API.
 */
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { HangarError } from '../../common/errors.js';
import { ErrorBody, VmName, syncOf } from '../api/schemas.js';
import type { Store } from '../store.js';
import type { Monitor } from './index.js';
import { Alert, HostMetrics, MetricsQuery, MetricsSummary, VmMetrics } from './schemas.js';

const DEFAULT_SINCE_MS = 3600_000;
const UNIT_MS = { s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 } as const;

/** `since` as ms since the epoch: a timestamp, or a duration back from now. */
export function parseSince(since: string | undefined, now: number): number {
  if (since === undefined) return now - DEFAULT_SINCE_MS;
  const m = /^(\d+)(s|m|h|d)$/.exec(since);
  if (m) return now - Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
  const t = Number(since);
  if (!Number.isSafeInteger(t)) throw new HangarError('INVALID_ARGUMENT', `since must be ms since the epoch or a duration such as 1h, got "${since}"`);
  return t;
}

function parseStep(step: string | undefined): number | undefined {
  if (step === undefined) return undefined;
  const n = Number(step);
  if (!Number.isSafeInteger(n) || n < 1) throw new HangarError('INVALID_ARGUMENT', `step must be a whole number of seconds of at least 1, got "${step}"`);
  return n;
}

const budgetOf = (m: Monitor) => {
  const b = m.budget();
  return { vcpus: { committed: b.cpus.committed, available: b.cpus.limit }, memoryBytes: { committed: b.memoryBytes.committed, available: b.memoryBytes.limit } };
};

const stripVm = <T extends { pssBytes?: unknown; guestMemoryTotalBytes?: unknown }>(s: T) => {
  const { pssBytes: _p, guestMemoryTotalBytes: _g, ...rest } = s;
  return rest;
};

export async function registerMonitorRoutes(app: FastifyInstance, monitor: Monitor, store: Store): Promise<void> {
  const NameParams = Type.Object({ name: VmName });
  const errors = { 400: ErrorBody, 404: ErrorBody };

  app.get('/1.0/vms/:name/metrics', {
    schema: { summary: "A VM's metric history", params: NameParams, querystring: MetricsQuery, response: { 200: syncOf(VmMetrics), ...errors } },
  }, async (req) => {
    const { name } = req.params as { name: string };
    const q = req.query as MetricsQuery;
    const rec = store.requireVm(name);
    const now = Date.now();
    const r = monitor.history.vmSamples(rec.id, { sinceMs: parseSince(q.since, now), stepSeconds: parseStep(q.step), nowMs: now, sampleIntervalSeconds: monitor.settings.sampleIntervalSeconds });
    return { type: 'sync' as const, metadata: { vm: name, step: r.stepSeconds, samples: r.samples.map(stripVm) } };
  });

  app.get('/1.0/host/metrics', {
    schema: { summary: 'Metric history of the host, and the admission budget', querystring: MetricsQuery, response: { 200: syncOf(HostMetrics), ...errors } },
  }, async (req) => {
    const q = req.query as MetricsQuery;
    const now = Date.now();
    const r = monitor.history.hostSamples({ sinceMs: parseSince(q.since, now), stepSeconds: parseStep(q.step), nowMs: now, sampleIntervalSeconds: monitor.settings.sampleIntervalSeconds });
    return { type: 'sync' as const, metadata: { step: r.stepSeconds, samples: r.samples, budget: budgetOf(monitor) } };
  });

  app.get('/1.0/alerts', { schema: { summary: 'Active alerts, then recent cleared ones', response: { 200: syncOf(Type.Array(Alert)) } } }, async () =>
    ({ type: 'sync' as const, metadata: monitor.alerts.list() }));

  app.get('/1.0/metrics', { schema: { summary: 'The newest sample of the host and of every VM, with active alerts', response: { 200: syncOf(MetricsSummary) } } }, async () => {
    const host = monitor.sampler.hostNow();
    return {
      type: 'sync' as const,
      metadata: {
        sampleIntervalSeconds: monitor.settings.sampleIntervalSeconds,
        host: host ? { t: host.t, cpuPercent: host.cpuPercent, memoryUsedBytes: host.memoryUsedBytes, memoryTotalBytes: host.memoryTotalBytes, load1: host.load1, dataDirUsedBytes: host.dataDirUsedBytes, dataDirTotalBytes: host.dataDirTotalBytes } : null,
        budget: budgetOf(monitor),
        vms: monitor.sampler.vms().map((v) => ({ vm: v.name, engine: v.engine, state: v.state, cpus: v.cpus, memoryBytes: v.memoryBytes, sample: v.sample ? stripVm(v.sample) : null })),
        alerts: monitor.alerts.activeAlerts(),
      },
    };
  });

  app.get('/metrics', { schema: { summary: 'Prometheus metrics (text exposition format)', produces: ['text/plain'] } }, async (_req, reply) => {
    const text = await monitor.registry.metrics();
    return reply.type(monitor.registry.contentType).send(text);
  });
}
