/**
 * Monitoring settings: how often the sampler looks, how long history is
 * kept, and the alert thresholds. Defaults here, then the "monitoring"
 * object of <dataDir>/hangard.json, then hangard's flags
 * (docs/monitoring.md, "Configuration").
 */
import fs from 'node:fs';
import path from 'node:path';
import { HangarError } from '../../common/errors.js';
import { CONFIG_FILE } from '../admission.js';

export interface AlertSettings {
  /** A VM's CPU use, in % of its vCPUs, above which it counts as busy. */
  cpuPercent: number;
  /** How long it must stay busy before the alert is raised (and quiet before it clears), seconds. */
  cpuForSeconds: number;
  /** Guest-reported memory use (% of what the guest sees) counted as pressure, where the guest reports it. */
  guestMemoryPercent: number;
  guestMemoryForSeconds: number;
  /** Data-directory file system use (%) that raises an alert. */
  diskPercent: number;
  /**
   * Committed vCPUs per host CPU above which the host counts as overcommitted
   * (committed memory above the host's memory less the reserve always counts).
   */
  vcpusPerCpu: number;
}

export interface MonitorSettings {
  /** Seconds between samples. */
  sampleIntervalSeconds: number;
  /** How long raw samples are kept, seconds. */
  rawRetentionSeconds: number;
  /** Width of the averaged buckets raw samples are folded into, seconds. */
  rollupSeconds: number;
  /** How long the averaged buckets are kept, seconds. */
  rollupRetentionSeconds: number;
  alerts: AlertSettings;
}

export const DEFAULT_MONITOR_SETTINGS: MonitorSettings = {
  sampleIntervalSeconds: 10,
  rawRetentionSeconds: 24 * 3600,
  rollupSeconds: 300,
  rollupRetentionSeconds: 30 * 24 * 3600,
  alerts: {
    cpuPercent: 90,
    cpuForSeconds: 300,
    guestMemoryPercent: 95,
    guestMemoryForSeconds: 120,
    diskPercent: 90,
    vcpusPerCpu: 4,
  },
};

type Limits = Record<string, [min: number, max: number]>;
const TOP_LIMITS: Limits = {
  sampleIntervalSeconds: [1, 3600],
  rawRetentionSeconds: [60, 366 * 86400],
  rollupSeconds: [10, 86400],
  rollupRetentionSeconds: [3600, 10 * 366 * 86400],
};
const ALERT_LIMITS: Limits = {
  cpuPercent: [1, 100],
  cpuForSeconds: [0, 86400],
  guestMemoryPercent: [1, 100],
  guestMemoryForSeconds: [0, 86400],
  diskPercent: [1, 100],
  vcpusPerCpu: [0.1, 1000],
};

function checked(source: string, key: string, v: unknown, [min, max]: [number, number]): number {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d+(\.\d+)?$/.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isFinite(n) || n < min || n > max) {
    throw new HangarError('INVALID_ARGUMENT', `${source}: ${key} must be a number from ${min} to ${max}, got ${JSON.stringify(v)}`);
  }
  return n;
}

function applyKnown<T extends object>(base: T, input: Record<string, unknown>, limits: Limits, source: string, prefix: string, skip: string[] = []): T {
  const out = { ...base } as Record<string, unknown>;
  for (const [k, v] of Object.entries(input)) {
    if (skip.includes(k)) continue;
    const lim = limits[k];
    if (!lim) throw new HangarError('INVALID_ARGUMENT', `${source}: unknown setting "${prefix}${k}" (known: ${[...Object.keys(limits), ...skip].map((x) => prefix + x).join(', ')})`);
    out[k] = checked(source, prefix + k, v, lim);
  }
  return out as T;
}

/** Applies a "monitoring" object over `base`; throws INVALID_ARGUMENT naming `source` and the field. */
export function applyMonitorSettings(base: MonitorSettings, input: unknown, source: string): MonitorSettings {
  if (input === undefined) return base;
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw new HangarError('INVALID_ARGUMENT', `${source}: "monitoring" must be an object`);
  const obj = input as Record<string, unknown>;
  const out = applyKnown(base, obj, TOP_LIMITS, source, 'monitoring.', ['alerts']);
  if (obj.alerts !== undefined) {
    if (typeof obj.alerts !== 'object' || obj.alerts === null || Array.isArray(obj.alerts)) throw new HangarError('INVALID_ARGUMENT', `${source}: monitoring.alerts must be an object`);
    out.alerts = applyKnown(base.alerts, obj.alerts as Record<string, unknown>, ALERT_LIMITS, source, 'monitoring.alerts.');
  }
  if (out.rollupSeconds < out.sampleIntervalSeconds) throw new HangarError('INVALID_ARGUMENT', `${source}: monitoring.rollupSeconds must be at least the sample interval`);
  return out;
}

/** The "monitoring" object of <dataDir>/hangard.json (undefined without one). */
function readMonitoringSection(dataDir: string): unknown {
  const file = path.join(dataDir, CONFIG_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new HangarError('INVALID_ARGUMENT', `${file}: ${(e as Error).message}`);
  }
  try {
    const doc = JSON.parse(text) as Record<string, unknown> | null;
    return doc && typeof doc === 'object' ? doc.monitoring : undefined;
  } catch (e) {
    throw new HangarError('INVALID_ARGUMENT', `${file} is not valid JSON: ${(e as Error).message}`);
  }
}

export interface MonitorFlags {
  sampleInterval?: string;
}

/** The settings hangard runs with: defaults, then the config file, then the flags. */
export function loadMonitorSettings(dataDir: string, flags: MonitorFlags = {}): MonitorSettings {
  const file = path.join(dataDir, CONFIG_FILE);
  const fromFile = applyMonitorSettings(DEFAULT_MONITOR_SETTINGS, readMonitoringSection(dataDir), file);
  return applyMonitorSettings(fromFile, flags.sampleInterval !== undefined ? { sampleIntervalSeconds: flags.sampleInterval } : undefined, '--sample-interval');
}
