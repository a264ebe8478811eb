/**
 * Diagnostics for the KVM-lab benchmarks (bench/lab-guest-io-bench.ts,
 * bench/lab-net-bench.ts), run inside L1: where a network run's time went.
 * hangar-vmm's counters come from its `GET /metrics`; every engine's threads
 * (hangar-vmm's and QEMU's alike) from /proc, as CPU and guest jiffies — L1
 * has one CPU, so every jiffy one thread spends is a jiffy the others lack.
 * Logged, never tabled.
 */
import fs from 'node:fs';
import http from 'node:http';
import { execFileSync } from 'node:child_process';

/** GET on hangar-vmm's control socket; null when it does not answer. */
export function vmmGet(sock: string, urlPath: string): Promise<unknown> {
  return new Promise((resolve) => {
    const req = http.request({ socketPath: sock, path: urlPath }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => { body += c.toString(); });
      res.on('end', () => { try { resolve(JSON.parse(body)); } catch { resolve(null); } });
    });
    req.on('error', () => resolve(null));
    req.end();
  });
}

export interface CpuSample { all: number; idle: number; threads: Record<string, { cpu: number; guest: number }> }

/** L1's CPU jiffies (all, idle) and each thread of `pid`: name, user+system and guest jiffies. */
export function cpuSample(pid: number | undefined): CpuSample {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const threads: Record<string, { cpu: number; guest: number }> = {};
  if (pid !== undefined) {
    let tids: string[] = [];
    try { tids = fs.readdirSync(`/proc/${pid}/task`); } catch { /* the process ended */ }
    for (const t of tids) {
      try {
        const st = fs.readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
        const name = /\((.*)\)/.exec(st)?.[1] ?? '?';
        const rest = st.slice(st.lastIndexOf(')') + 2).split(' ').map(Number);
        // Fields after the name start at 3 (state): utime 14, stime 15, guest_time 43.
        threads[`${t}:${name}`] = { cpu: rest[14 - 3]! + rest[15 - 3]!, guest: rest[43 - 3]! };
      } catch { /* the thread ended */ }
    }
  }
  return { all: f.reduce((a, b) => a + b, 0), idle: f[3]! + (f[4] ?? 0), threads };
}

interface VmmMetrics {
  process?: { device_thread_busy_ms?: number };
  vm?: { vcpus: Array<Record<string, number>>; devices: Record<string, Record<string, number>>; pioBus?: Record<string, number> };
}

/** Counters that changed between two records, as b − a. */
function delta(a: Record<string, number> | undefined, b: Record<string, number> | undefined): Record<string, number> {
  return Object.fromEntries(Object.entries(b ?? {}).filter(([, v]) => typeof v === 'number')
    .map(([k, v]) => [k, v - (a?.[k] ?? 0)] as [string, number]).filter(([, v]) => v !== 0));
}

export interface ObserveTarget {
  /** The engine's process (its threads are sampled). */
  pid: number | undefined;
  /** hangar-vmm's control socket; absent for other engines. */
  apiSock?: string;
  /** The TAP in L1 whose counters to log. */
  tap?: string;
  /** Devices whose counters are left out (disks no run touches). */
  skipDevices?: (name: string) => boolean;
}

/**
 * What an engine and L1 did while `work` ran: L1's idle share and each of the engine's threads'
 * CPU (jiffies), and for hangar-vmm the vCPU exits and device counters; each as a `diag` line.
 */
export async function observe<T>(label: string, target: ObserveTarget, say: (s: string) => void, work: () => Promise<T>): Promise<T> {
  const m0 = target.apiSock ? await vmmGet(target.apiSock, '/metrics') as VmmMetrics | null : null;
  const c0 = cpuSample(target.pid);
  const out = await work();
  const m1 = target.apiSock ? await vmmGet(target.apiSock, '/metrics') as VmmMetrics | null : null;
  const c1 = cpuSample(target.pid);
  const all = c1.all - c0.all;
  say(`diag ${label}: L1 idle ${(100 * (c1.idle - c0.idle) / all).toFixed(0)}% of ${all} jiffies; engine threads (cpu/guest jiffies): ${JSON.stringify(Object.fromEntries(
    Object.entries(c1.threads).map(([k, v]) => [k, `${v.cpu - (c0.threads[k]?.cpu ?? 0)}/${v.guest - (c0.threads[k]?.guest ?? 0)}`]).filter(([, v]) => v !== '0/0')))}`);
  if (target.apiSock) {
    say(`diag ${label}: vCPU 0 ${JSON.stringify(delta(m0?.vm?.vcpus[0], m1?.vm?.vcpus[0]))}; pio bus ${JSON.stringify(delta(m0?.vm?.pioBus, m1?.vm?.pioBus))}; device thread busy ${(m1?.process?.device_thread_busy_ms ?? 0) - (m0?.process?.device_thread_busy_ms ?? 0)} ms`);
    for (const [dev, v] of Object.entries(m1?.vm?.devices ?? {})) {
      if (target.skipDevices?.(dev)) continue;
      const d = delta(m0?.vm?.devices[dev], v);
      if (Object.keys(d).length > 0) say(`diag ${label}: ${dev} ${JSON.stringify(d)}`);
    }
  }
  if (target.tap) {
    try { say(`diag ${label}: L1 ${execFileSync('ip', ['-s', 'link', 'show', target.tap], { encoding: 'utf8' }).replace(/\s+/g, ' ')}`); } catch { /* no TAP */ }
  }
  return out;
}

/**
 * The heaviest functions of V8 CPU profiles (`node --cpu-prof`) in `dir`, one block per profile
 * (one per thread): self time summed by function, then the top `n`. Lines for a log.
 */
export function summarizeCpuProfiles(dir: string, n = 25): string[] {
  const out: string[] = [];
  let files: string[] = [];
  try { files = fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).sort(); } catch { return [`no profiles in ${dir}`]; }
  for (const f of files) {
    try {
      const p = JSON.parse(fs.readFileSync(`${dir}/${f}`, 'utf8')) as {
        nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number } }>;
        samples: number[]; timeDeltas: number[]; startTime: number; endTime: number;
      };
      const byNode = new Map<number, number>();
      p.samples.forEach((id, i) => byNode.set(id, (byNode.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
      const self = new Map<string, number>();
      for (const node of p.nodes) {
        const cf = node.callFrame;
        const key = `${cf.functionName || '(anonymous)'} ${cf.url.split('/').slice(-2).join('/')}:${cf.lineNumber + 1}`;
        self.set(key, (self.get(key) ?? 0) + (byNode.get(node.id) ?? 0));
      }
      const total = [...self.values()].reduce((a, b) => a + b, 0);
      out.push(`profile ${f}: ${(total / 1000).toFixed(0)} ms sampled over ${((p.endTime - p.startTime) / 1000).toFixed(0)} ms`);
      for (const [k, v] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, n)) {
        out.push(`  ${(v / 1000).toFixed(1).padStart(9)} ms ${(100 * v / total).toFixed(1).padStart(5)}%  ${k}`);
      }
    } catch (e) {
      out.push(`profile ${f}: unreadable (${(e as Error).message})`);
    }
  }
  return out;
}

/** What a lab bench's job inside L1 reports: what went wrong, besides its figures. */
export interface LabJobReport { errors: string[] }

/**
 * Runs `job` for each engine in turn inside one L1. An engine that fails is recorded in
 * `report.errors` and said, and the next engine still runs: one run gives every figure it can.
 */
export async function eachEngine<E extends string>(engines: readonly E[], report: LabJobReport, say: (s: string) => void, job: (engine: E) => Promise<void>): Promise<void> {
  for (const e of engines) {
    try {
      await job(e);
    } catch (err) {
      report.errors.push(`${e}: ${(err as Error).message}`);
      say(`${e} failed: ${(err as Error).message}`);
    }
  }
}

/** The end of a lab bench's job: the report as one `TAG {json}` line on stdout (the host side parses it), exit 1 if anything failed. */
export function endLabJob(tag: string, report: LabJobReport): never {
  process.stdout.write(`${tag} ${JSON.stringify(report)}\n`);
  process.exit(report.errors.length ? 1 : 0);
}
