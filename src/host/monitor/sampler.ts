/**
 * The sampler: every few seconds (10 by default) it reads what each running
 * VM uses and what the host has left, appends it to the history, feeds the
 * alert rules and keeps the newest values for /metrics and `hangar top`.
 *
 * It only reads: /proc and /sys files, and the VM's own counters through
 * its engine (QMP query-blockstats), each with a short timeout. A tick that
 * is still running when the next is due makes that one skip; an error on
 * one VM costs that VM's sample, never the others' or any VM operation.
 */
import os from 'node:os';
import type { Logger } from '../../common/log.js';
import type { DeviceCounters, DiskCounters, VmHandle } from '../../engines/engine.js';
import type { AdmissionBudget } from '../api/schemas.js';
import type { Store, VmRecord } from '../store.js';
import { tapNameFor } from '../network/addressing.js';
import type { MonitorSettings } from './config.js';
import type { HostSampleRow, MetricsHistory, VmSampleRow } from './history.js';
import type { AlertManager, Observation } from './alerts.js';
import { readDiskSpace, readHostCpu, readHostMemory, readLoad1, readProcessCpu, readProcessMemory, readTapCounters, type CpuTicks, type NicCounters } from './procfs.js';

/** How long the engine may take to report a VM's device counters before the sample goes without them. */
export const DEVICE_COUNTERS_TIMEOUT_MS = 2000;

export interface SamplerDeps {
  store: Store;
  /** The running VM's engine handle (null when the daemon holds none). */
  liveHandle: (name: string) => VmHandle | null;
  budget: () => AdmissionBudget;
  dataDir: string;
  history: MetricsHistory;
  alerts: AlertManager;
  settings: MonitorSettings;
  log: Logger;
  /** Where /proc and /sys hang from: "/" (unit tests point it at fake files). */
  root?: string;
  now?: () => number;
  /** Host CPUs, for the overcommit rule (os.cpus() when absent). */
  hostCpus?: number;
}

export interface NicSample extends NicCounters {
  id: string;
  tap: string;
}

/** The newest look at one VM (what /metrics and GET /1.0/metrics show). */
export interface VmCurrent {
  id: string;
  name: string;
  engine: string;
  state: string;
  cpus: number;
  memoryBytes: number;
  sample: VmSampleRow | null;
  vcpuSeconds: number | null;
  disks: DiskCounters[];
  nics: NicSample[];
}

export interface HostCurrent extends HostSampleRow {
  memoryAvailableBytes: number;
  dataDirUsedPercent: number;
}

interface PrevCpu { pid: number; t: number; cpuSeconds: number }

const RUNNING = new Set(['running', 'paused']);

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<null>((resolve) => { timer = setTimeout(() => resolve(null), ms); timer.unref(); });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

export class Sampler {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = true;
  private readonly prevCpu = new Map<string, PrevCpu>();
  private prevHostCpu: CpuTicks | null = null;
  private readonly knownIds = new Set<string>();
  /** Deleted VMs whose history is still being removed, a batch per tick. */
  private readonly forgetting = new Set<string>();
  private current = new Map<string, VmCurrent>();
  private host: HostCurrent | null = null;
  /** How long the last tick took (ms), and how many ticks have run: for /metrics. */
  lastTickMs = 0;
  ticks = 0;
  private readonly root: string;
  private readonly now: () => number;

  constructor(private readonly d: SamplerDeps) {
    this.root = d.root ?? '/';
    this.now = d.now ?? Date.now;
  }

  get intervalMs(): number {
    return this.d.settings.sampleIntervalSeconds * 1000;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    // The first tick only sets the baselines for rates; it comes soon so data shows up early.
    this.schedule(Math.min(1000, this.intervalMs));
  }

  /** Stops the timer and waits for a tick under way. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      const began = Date.now();
      this.running = this.tick().catch((e: unknown) => {
        this.d.log.error({ err: e instanceof Error ? e.message : String(e) }, 'monitoring sample failed');
      }).finally(() => {
        this.running = null;
        // Keep the rhythm; a slow tick makes the next one come at once rather than pile up.
        this.schedule(Math.max(0, this.intervalMs - (Date.now() - began)));
      });
    }, ms);
    this.timer.unref();
  }

  /** One sample of everything (the timer calls it; tests and the benchmark call it directly). */
  async tick(): Promise<void> {
    const began = performance.now();
    const now = this.now();
    const records = this.d.store.listVms();
    const vms = await Promise.all(records.map((r) => this.sampleVm(r, now).catch((e: unknown) => {
      this.d.log.warn({ vm: r.name, err: e instanceof Error ? e.message : String(e) }, 'could not sample a VM');
      return this.idle(r);
    })));
    const host = this.sampleHost(now);
    this.d.history.record(vms.filter((v) => v.sample).map((v) => ({ vmId: v.id, row: v.sample! })), host);
    this.current = new Map(vms.map((v) => [v.name, v]));
    if (host) this.host = host;
    this.d.history.maintain(now);
    this.forgetDeleted(records);
    this.d.alerts.observe(now, this.observations(vms, host));
    if (this.ticks % 100 === 0) this.d.alerts.prune();
    this.ticks++;
    this.lastTickMs = performance.now() - began;
  }

  private idle(r: VmRecord): VmCurrent {
    return { id: r.id, name: r.name, engine: r.spec.engine, state: r.state, cpus: r.spec.cpus, memoryBytes: r.spec.memoryBytes, sample: null, vcpuSeconds: null, disks: [], nics: [] };
  }

  private async sampleVm(r: VmRecord, now: number): Promise<VmCurrent> {
    const base = this.idle(r);
    if (!RUNNING.has(r.state) || r.pid === null) {
      this.prevCpu.delete(r.id);
      return base;
    }
    const cpu = readProcessCpu(this.root, r.pid);
    const mem = readProcessMemory(this.root, r.pid);
    if (!cpu || !mem) {
      this.prevCpu.delete(r.id);
      return base;
    }
    const handle = this.d.liveHandle(r.name);
    let counters: DeviceCounters | null = null;
    if (handle?.deviceCounters) {
      try {
        counters = await withTimeout(handle.deviceCounters(), DEVICE_COUNTERS_TIMEOUT_MS);
      } catch (e) {
        this.d.log.debug({ vm: r.name, err: e instanceof Error ? e.message : String(e) }, 'no device counters this time');
      }
    }
    const nics: NicSample[] = [];
    for (const n of r.spec.nics ?? []) {
      const tap = tapNameFor(r.id, n.name);
      const c = readTapCounters(this.root, tap);
      if (c) nics.push({ id: n.name, tap, ...c });
    }
    const prev = this.prevCpu.get(r.id);
    let cpuPercent = 0;
    if (prev && prev.pid === r.pid && now > prev.t) cpuPercent = Math.max(0, ((cpu.cpuSeconds - prev.cpuSeconds) / ((now - prev.t) / 1000)) * 100);
    this.prevCpu.set(r.id, { pid: r.pid, t: now, cpuSeconds: cpu.cpuSeconds });
    const disks = counters?.disks ?? [];
    const sum = <T>(xs: T[], f: (x: T) => number): number => xs.reduce((a, x) => a + f(x), 0);
    const sample: VmSampleRow = {
      t: now,
      cpuPercent: Math.round(cpuPercent * 100) / 100,
      cpuSeconds: cpu.cpuSeconds,
      memoryBytes: mem.rssBytes,
      pssBytes: mem.pssBytes,
      guestMemoryUsedBytes: counters?.guestMemory?.usedBytes ?? null,
      guestMemoryTotalBytes: counters?.guestMemory?.totalBytes ?? null,
      diskReadBytes: sum(disks, (x) => x.readBytes),
      diskWriteBytes: sum(disks, (x) => x.writeBytes),
      netRxBytes: sum(nics, (x) => x.rxBytes),
      netTxBytes: sum(nics, (x) => x.txBytes),
    };
    return { ...base, sample, vcpuSeconds: cpu.vcpuSeconds, disks, nics };
  }

  private sampleHost(now: number): HostCurrent | null {
    const cpu = readHostCpu(this.root);
    const mem = readHostMemory(this.root);
    const disk = readDiskSpace(this.d.dataDir);
    if (!cpu || !mem) return null;
    const prev = this.prevHostCpu;
    this.prevHostCpu = cpu;
    const dt = prev ? cpu.total - prev.total : 0;
    const cpuPercent = prev && dt > 0 ? ((cpu.busy - prev.busy) / dt) * 100 : 0;
    return {
      t: now,
      cpuPercent: Math.round(cpuPercent * 100) / 100,
      memoryUsedBytes: mem.totalBytes - mem.availableBytes,
      memoryTotalBytes: mem.totalBytes,
      memoryAvailableBytes: mem.availableBytes,
      load1: readLoad1(this.root) ?? 0,
      dataDirUsedBytes: disk?.usedBytes ?? 0,
      dataDirTotalBytes: disk?.totalBytes ?? 0,
      dataDirUsedPercent: disk?.usedPercent ?? 0,
    };
  }

  private forgetDeleted(records: VmRecord[]): void {
    const ids = new Set(records.map((r) => r.id));
    for (const id of this.knownIds) if (!ids.has(id)) { this.forgetting.add(id); this.knownIds.delete(id); this.prevCpu.delete(id); }
    for (const id of ids) this.knownIds.add(id);
    for (const id of [...this.forgetting]) if (this.d.history.forgetVm(id)) this.forgetting.delete(id);
  }

  private observations(vms: VmCurrent[], host: HostCurrent | null): Observation[] {
    const a = this.d.settings.alerts;
    const out: Observation[] = [];
    const mins = (s: number): string => (s >= 60 ? `${Math.round(s / 6) / 10} min` : `${s} s`);
    for (const v of vms) {
      if (!v.sample) continue;
      const share = v.sample.cpuPercent / Math.max(1, v.cpus);
      out.push({
        vm: v.name, kind: 'cpu', firing: share > a.cpuPercent, forSeconds: a.cpuForSeconds,
        message: `VM ${v.name} uses ${Math.round(share)}% of its ${v.cpus} vCPU${v.cpus === 1 ? '' : 's'} (above ${a.cpuPercent}% for ${mins(a.cpuForSeconds)})`,
      });
      const used = v.sample.guestMemoryUsedBytes;
      const total = v.sample.guestMemoryTotalBytes;
      if (used !== null && total !== null && total > 0) {
        const pct = (used / total) * 100;
        out.push({
          vm: v.name, kind: 'guest-memory', firing: pct > a.guestMemoryPercent, forSeconds: a.guestMemoryForSeconds,
          message: `the guest of VM ${v.name} uses ${Math.round(pct)}% of its memory (above ${a.guestMemoryPercent}%)`,
        });
      }
    }
    if (host && host.dataDirTotalBytes > 0) {
      out.push({
        vm: null, kind: 'disk-space', firing: host.dataDirUsedPercent > a.diskPercent, forSeconds: 0,
        message: `the data directory's file system is ${Math.round(host.dataDirUsedPercent)}% full (above ${a.diskPercent}%)`,
      });
    }
    if (host) {
      const b = this.d.budget();
      const hostCpus = this.d.hostCpus ?? os.cpus().length;
      const memForVms = host.memoryTotalBytes - b.settings.memoryReserveBytes;
      const reasons: string[] = [];
      if (b.cpus.committed > hostCpus * a.vcpusPerCpu) reasons.push(`${b.cpus.committed} vCPUs committed on ${hostCpus} host CPUs (more than ${a.vcpusPerCpu} per CPU)`);
      if (b.memoryBytes.committed > memForVms) reasons.push(`${Math.round(b.memoryBytes.committed / 2 ** 20)} MiB of guest memory committed, more than the ${Math.round(memForVms / 2 ** 20)} MiB the host has for VMs`);
      if (b.cpus.committed > b.cpus.limit || b.memoryBytes.committed > b.memoryBytes.limit) reasons.push('VMs hold more than the admission budget allows');
      out.push({ vm: null, kind: 'overcommit', firing: reasons.length > 0, forSeconds: 0, message: `the host is overcommitted: ${reasons.join('; ') || 'no longer'}` });
    }
    return out;
  }

  /** The newest look at every VM, in store order. */
  vms(): VmCurrent[] {
    return [...this.current.values()];
  }

  vm(name: string): VmCurrent | null {
    return this.current.get(name) ?? null;
  }

  hostNow(): HostCurrent | null {
    return this.host;
  }
}
