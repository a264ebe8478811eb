/**
 * GET /metrics: the sampler's newest values in Prometheus' text format,
 * through prom-client with a Registry of this daemon's own (never the
 * process-wide default one, so two daemons in one process — tests — do not
 * mix). Values are read at scrape time from what the sampler last saw: a
 * scrape never samples, so it costs the same however often it comes.
 * Every series carries the `host` label; VM series also `vm` and `engine`.
 */
import os from 'node:os';
import { Counter, Gauge, Registry } from 'prom-client';
import type { AdmissionBudget } from '../api/schemas.js';
import type { Sampler } from './sampler.js';
import type { AlertManager } from './alerts.js';

export interface PrometheusDeps {
  sampler: Sampler;
  alerts: AlertManager;
  budget: () => AdmissionBudget;
  /** The `host` label (os.hostname() when absent). */
  hostName?: string;
}

type Labels = Record<string, string>;

export function createMetricsRegistry(d: PrometheusDeps): Registry {
  const registry = new Registry();
  const host = d.hostName ?? os.hostname();
  registry.setDefaultLabels({ host });

  /** A gauge whose values are set from `fill` at each scrape. */
  const gauge = (name: string, help: string, labelNames: string[], fill: (set: (labels: Labels, v: number) => void) => void): void => {
    new Gauge({
      name, help, labelNames, registers: [registry],
      collect() {
        this.reset();
        fill((labels, v) => { if (Number.isFinite(v)) this.set(labels, v); });
      },
    });
  };
  /** A counter whose cumulative value comes from the VM process (it restarts at 0 with the process). */
  const counter = (name: string, help: string, labelNames: string[], fill: (set: (labels: Labels, v: number) => void) => void): void => {
    new Counter({
      name, help, labelNames, registers: [registry],
      collect() {
        this.reset();
        fill((labels, v) => { if (Number.isFinite(v) && v >= 0) this.inc(labels, v); });
      },
    });
  };

  const VM = ['vm', 'engine'];
  const vms = () => d.sampler.vms();
  const running = () => vms().filter((v) => v.sample !== null);
  const vmLabels = (v: { name: string; engine: string }): Labels => ({ vm: v.name, engine: v.engine });

  gauge('hangar_vm_state', 'The VM is in this state (1); one series per VM', [...VM, 'state'], (set) => { for (const v of vms()) set({ ...vmLabels(v), state: v.state }, 1); });
  gauge('hangar_vm_vcpus', 'vCPUs the VM was given', VM, (set) => { for (const v of vms()) set(vmLabels(v), v.cpus); });
  gauge('hangar_vm_memory_configured_bytes', 'Memory the VM was given', VM, (set) => { for (const v of vms()) set(vmLabels(v), v.memoryBytes); });
  counter('hangar_vm_cpu_seconds_total', 'CPU time of the VM process (all its threads)', VM, (set) => { for (const v of running()) set(vmLabels(v), v.sample!.cpuSeconds); });
  counter('hangar_vm_vcpu_seconds_total', 'CPU time of the VM process\'s vCPU threads', VM, (set) => { for (const v of running()) if (v.vcpuSeconds !== null) set(vmLabels(v), v.vcpuSeconds); });
  gauge('hangar_vm_cpu_usage_percent', 'CPU use of the VM process over the last sample interval; one host CPU = 100', VM, (set) => { for (const v of running()) set(vmLabels(v), v.sample!.cpuPercent); });
  gauge('hangar_vm_memory_rss_bytes', 'Resident memory of the VM process', VM, (set) => { for (const v of running()) set(vmLabels(v), v.sample!.memoryBytes); });
  gauge('hangar_vm_memory_pss_bytes', 'Proportional set size of the VM process', VM, (set) => { for (const v of running()) if (v.sample!.pssBytes !== null) set(vmLabels(v), v.sample!.pssBytes); });
  gauge('hangar_vm_guest_memory_used_bytes', 'Memory in use as the guest reports it (VMs with a balloon only)', VM, (set) => { for (const v of running()) if (v.sample!.guestMemoryUsedBytes !== null) set(vmLabels(v), v.sample!.guestMemoryUsedBytes); });
  gauge('hangar_vm_guest_memory_total_bytes', 'Memory the guest sees (VMs with a balloon only)', VM, (set) => { for (const v of running()) if (v.sample!.guestMemoryTotalBytes !== null) set(vmLabels(v), v.sample!.guestMemoryTotalBytes); });
  counter('hangar_vm_disk_read_bytes_total', 'Bytes read from a disk by the guest', [...VM, 'disk'], (set) => { for (const v of running()) for (const x of v.disks) set({ ...vmLabels(v), disk: x.id }, x.readBytes); });
  counter('hangar_vm_disk_written_bytes_total', 'Bytes written to a disk by the guest', [...VM, 'disk'], (set) => { for (const v of running()) for (const x of v.disks) set({ ...vmLabels(v), disk: x.id }, x.writeBytes); });
  counter('hangar_vm_disk_reads_total', 'Read operations on a disk', [...VM, 'disk'], (set) => { for (const v of running()) for (const x of v.disks) set({ ...vmLabels(v), disk: x.id }, x.readOps); });
  counter('hangar_vm_disk_writes_total', 'Write operations on a disk', [...VM, 'disk'], (set) => { for (const v of running()) for (const x of v.disks) set({ ...vmLabels(v), disk: x.id }, x.writeOps); });
  counter('hangar_vm_network_receive_bytes_total', 'Bytes the guest received on a NIC', [...VM, 'nic'], (set) => { for (const v of running()) for (const n of v.nics) set({ ...vmLabels(v), nic: n.id }, n.rxBytes); });
  counter('hangar_vm_network_transmit_bytes_total', 'Bytes the guest sent on a NIC', [...VM, 'nic'], (set) => { for (const v of running()) for (const n of v.nics) set({ ...vmLabels(v), nic: n.id }, n.txBytes); });

  const h = () => d.sampler.hostNow();
  gauge('hangar_host_cpu_usage_percent', 'CPU use of the whole host over the last sample interval; all CPUs busy = 100', [], (set) => { const x = h(); if (x) set({}, x.cpuPercent); });
  gauge('hangar_host_memory_total_bytes', 'Host memory', [], (set) => { const x = h(); if (x) set({}, x.memoryTotalBytes); });
  gauge('hangar_host_memory_available_bytes', 'Host memory available (MemAvailable)', [], (set) => { const x = h(); if (x) set({}, x.memoryAvailableBytes); });
  gauge('hangar_host_load1', 'Host load average over one minute', [], (set) => { const x = h(); if (x) set({}, x.load1); });
  gauge('hangar_host_datadir_used_bytes', 'Used space on the data directory\'s file system', [], (set) => { const x = h(); if (x) set({}, x.dataDirUsedBytes); });
  gauge('hangar_host_datadir_size_bytes', 'Size of the data directory\'s file system', [], (set) => { const x = h(); if (x) set({}, x.dataDirTotalBytes); });
  gauge('hangar_host_vcpus_committed', 'vCPUs held by active VMs (admission budget)', [], (set) => set({}, d.budget().cpus.committed));
  gauge('hangar_host_vcpus_admitted', 'vCPUs admission lets VMs hold', [], (set) => set({}, d.budget().cpus.limit));
  gauge('hangar_host_memory_committed_bytes', 'Guest memory held by active VMs (admission budget)', [], (set) => set({}, d.budget().memoryBytes.committed));
  gauge('hangar_host_memory_admitted_bytes', 'Guest memory admission lets VMs hold', [], (set) => set({}, d.budget().memoryBytes.limit));
  gauge('hangar_alerts_active', 'Active alerts by kind', ['kind'], (set) => {
    const by = new Map<string, number>([['cpu', 0], ['guest-memory', 0], ['disk-space', 0], ['overcommit', 0]]);
    for (const a of d.alerts.activeAlerts()) by.set(a.kind, (by.get(a.kind) ?? 0) + 1);
    for (const [kind, n] of by) set({ kind }, n);
  });
  gauge('hangar_sampler_last_duration_seconds', 'How long the sampler\'s last tick took', [], (set) => set({}, d.sampler.lastTickMs / 1000));
  counter('hangar_sampler_ticks_total', 'Sampler ticks since the daemon started', [], (set) => set({}, d.sampler.ticks));
  return registry;
}
