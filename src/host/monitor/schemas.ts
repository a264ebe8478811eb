/**
 * The monitoring API's resources (docs/monitoring.md): one TypeBox schema
 * each, re-exported by src/host/api/schemas.ts, so they give types and the
 * OpenAPI document like every other resource. Times are ms since the epoch;
 * byte counters are cumulative since the VM process started.
 */
import { Type, type Static } from 'typebox';

const Ms = Type.Integer({ description: 'Milliseconds since the epoch' });
const Bytes = Type.Integer({ minimum: 0 });

/** ?since=<ms or a duration back from now: 90s, 15m, 1h, 7d>&step=<seconds> */
export const MetricsQuery = Type.Object({
  since: Type.Optional(Type.String({ pattern: '^([0-9]{1,15}|[0-9]{1,6}(s|m|h|d))$', description: 'Start: ms since the epoch, or a duration back from now (90s, 15m, 1h, 7d); default 1h' })),
  step: Type.Optional(Type.String({ pattern: '^[0-9]{1,7}$', description: 'Seconds between points (widened to the finest the history holds and to at most 1000 points)' })),
}, { additionalProperties: false });
export type MetricsQuery = Static<typeof MetricsQuery>;

export const VmMetricsSample = Type.Object({
  t: Ms,
  cpuPercent: Type.Number({ description: 'CPU use of the VM process; one host CPU = 100' }),
  cpuSeconds: Type.Number({ description: 'CPU time of the VM process since it started' }),
  memoryBytes: Type.Integer({ description: 'Resident memory of the VM process (RSS)' }),
  guestMemoryUsedBytes: Type.Union([Type.Integer(), Type.Null()], { description: 'Memory in use as the guest reports it (balloon statistics); null when unknown' }),
  diskReadBytes: Bytes,
  diskWriteBytes: Bytes,
  netRxBytes: Type.Integer({ minimum: 0, description: 'Bytes the guest received, all NICs' }),
  netTxBytes: Type.Integer({ minimum: 0, description: 'Bytes the guest sent, all NICs' }),
});
export type VmMetricsSample = Static<typeof VmMetricsSample>;

/** GET /1.0/vms/{name}/metrics */
export const VmMetrics = Type.Object({
  vm: Type.String(),
  step: Type.Number({ description: 'Seconds between points' }),
  samples: Type.Array(VmMetricsSample),
});
export type VmMetrics = Static<typeof VmMetrics>;

export const HostMetricsSample = Type.Object({
  t: Ms,
  cpuPercent: Type.Number({ description: 'CPU use of the whole host; all CPUs busy = 100' }),
  memoryUsedBytes: Bytes,
  memoryTotalBytes: Bytes,
  load1: Type.Number(),
  dataDirUsedBytes: Bytes,
  dataDirTotalBytes: Bytes,
});
export type HostMetricsSample = Static<typeof HostMetricsSample>;

const BudgetPair = Type.Object({ committed: Type.Number(), available: Type.Number({ description: 'What admission lets VMs hold' }) });

/** GET /1.0/host/metrics */
export const HostMetrics = Type.Object({
  step: Type.Number(),
  samples: Type.Array(HostMetricsSample),
  budget: Type.Object({ vcpus: BudgetPair, memoryBytes: BudgetPair }),
});
export type HostMetrics = Static<typeof HostMetrics>;

export const AlertKind = Type.Union([
  Type.Literal('cpu'), Type.Literal('guest-memory'), Type.Literal('disk-space'), Type.Literal('overcommit'),
], { description: 'cpu: a VM busy above the threshold for the window; guest-memory: guest memory pressure; disk-space: the data directory file system; overcommit: the host' });
export type AlertKind = Static<typeof AlertKind>;

/** GET /1.0/alerts */
export const Alert = Type.Object({
  id: Type.Integer(),
  vm: Type.Union([Type.String(), Type.Null()], { description: 'The VM, or null for a host alert' }),
  kind: AlertKind,
  message: Type.String(),
  raisedAt: Ms,
  clearedAt: Type.Union([Ms, Type.Null()]),
});
export type Alert = Static<typeof Alert>;

/** The newest sample of every VM and of the host, in one answer (GET /1.0/metrics; `hangar top`). */
export const VmCurrent = Type.Object({
  vm: Type.String(),
  engine: Type.String(),
  state: Type.String(),
  cpus: Type.Integer(),
  memoryBytes: Type.Integer({ description: 'Memory the VM was given' }),
  sample: Type.Union([VmMetricsSample, Type.Null()], { description: 'Newest sample; null for a VM that does not run' }),
});
export const MetricsSummary = Type.Object({
  sampleIntervalSeconds: Type.Number(),
  host: Type.Union([HostMetricsSample, Type.Null()]),
  budget: Type.Object({ vcpus: BudgetPair, memoryBytes: BudgetPair }),
  vms: Type.Array(VmCurrent),
  alerts: Type.Array(Alert, { description: 'Active alerts' }),
});
export type MetricsSummary = Static<typeof MetricsSummary>;
