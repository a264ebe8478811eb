/**
 * Hangar's built-in monitoring (docs/monitoring.md): the sampler, its
 * history, the alert rules and the Prometheus registry, assembled once per
 * daemon. The daemon starts it after the VMs have been re-adopted and stops
 * it first on shutdown; the API reads it through registerMonitorRoutes().
 */
import type { Logger } from '../../common/log.js';
import type { VmHandle } from '../../engines/engine.js';
import type { AdmissionBudget } from '../api/schemas.js';
import type { Store } from '../store.js';
import type { EventBus } from '../events.js';
import type { MonitorSettings } from './config.js';
import { MetricsHistory } from './history.js';
import { AlertManager } from './alerts.js';
import { Sampler } from './sampler.js';
import { createMetricsRegistry } from './prometheus.js';
import type { Registry } from 'prom-client';

export { loadMonitorSettings, DEFAULT_MONITOR_SETTINGS, type MonitorSettings } from './config.js';
export { registerMonitorRoutes } from './routes.js';

export interface MonitorDeps {
  store: Store;
  events: EventBus;
  vms: { liveHandle(name: string): VmHandle | null; budget(): AdmissionBudget };
  dataDir: string;
  settings: MonitorSettings;
  log: Logger;
}

export interface Monitor {
  readonly settings: MonitorSettings;
  readonly sampler: Sampler;
  readonly history: MetricsHistory;
  readonly alerts: AlertManager;
  readonly registry: Registry;
  budget(): AdmissionBudget;
  start(): void;
  stop(): Promise<void>;
}

export function createMonitor(d: MonitorDeps): Monitor {
  const history = new MetricsHistory(d.store, d.settings);
  const alerts = new AlertManager(d.store, d.events);
  const budget = (): AdmissionBudget => d.vms.budget();
  const sampler = new Sampler({
    store: d.store, liveHandle: (n) => d.vms.liveHandle(n), budget, dataDir: d.dataDir,
    history, alerts, settings: d.settings, log: d.log,
  });
  const registry = createMetricsRegistry({ sampler, alerts, budget });
  return {
    settings: d.settings, sampler, history, alerts, registry, budget,
    start: () => sampler.start(),
    stop: () => sampler.stop(),
  };
}
