/**
 * What the kernel says about VM processes, the host and TAP devices, read
 * from /proc and /sys. Every reader takes the root the files hang from
 * ("/" in the daemon, a folder of fake files in unit tests) and returns
 * null for what it cannot read: a VM that just exited is not an error.
 */
import fs from 'node:fs';
import path from 'node:path';

/** Linux reports CPU times in USER_HZ ticks, 100 on every architecture Hangar runs on. */
export const USER_HZ = 100;

function read(root: string, ...parts: string[]): string | null {
  try {
    return fs.readFileSync(path.join(root, ...parts), 'utf8');
  } catch {
    return null;
  }
}

/** utime + stime in ticks from the text of a /proc/<pid>/stat (or task/<tid>/stat) file. */
export function statTicks(text: string): number | null {
  // The command name is in parentheses and may itself hold spaces or ')'.
  const end = text.lastIndexOf(')');
  if (end < 0) return null;
  const f = text.slice(end + 2).trim().split(/\s+/);
  // After the name: state is field 3 of the full line, utime 14, stime 15 → indices 11 and 12 here.
  if (f.length < 13) return null;
  const ticks = Number(f[11]) + Number(f[12]);
  return Number.isFinite(ticks) ? ticks : null;
}

export interface ProcessCpu {
  /** CPU time of the whole process (every thread), seconds. */
  cpuSeconds: number;
  /** CPU time of the threads that run guest vCPUs (QEMU names them "CPU n/KVM" or "CPU n/TCG"), seconds. */
  vcpuSeconds: number;
  threads: number;
}

/** vCPU threads as QEMU names them; hangar-vmm names its own "vcpu<n>". */
const VCPU_THREAD = /^(CPU \d+\/(KVM|TCG)|vcpu\d+)$/;

/** CPU time of process `pid`, and of its vCPU threads (task/<tid>); null when the process is gone. */
export function readProcessCpu(root: string, pid: number): ProcessCpu | null {
  const stat = read(root, 'proc', String(pid), 'stat');
  const total = stat === null ? null : statTicks(stat);
  if (total === null) return null;
  let vcpu = 0;
  let threads = 0;
  let tids: string[] = [];
  try {
    tids = fs.readdirSync(path.join(root, 'proc', String(pid), 'task'));
  } catch { /* gone between the two reads: counts only the total */ }
  for (const tid of tids) {
    threads++;
    const comm = read(root, 'proc', String(pid), 'task', tid, 'comm')?.trim() ?? '';
    if (!VCPU_THREAD.test(comm)) continue;
    const t = read(root, 'proc', String(pid), 'task', tid, 'stat');
    const ticks = t === null ? null : statTicks(t);
    if (ticks !== null) vcpu += ticks;
  }
  return { cpuSeconds: total / USER_HZ, vcpuSeconds: vcpu / USER_HZ, threads };
}

export interface ProcessMemory {
  rssBytes: number;
  /** Proportional set size: shared pages divided among the processes sharing them. */
  pssBytes: number | null;
}

function kbField(text: string, name: string): number | null {
  const m = new RegExp(`^${name}:\\s+(\\d+)\\s+kB`, 'm').exec(text);
  return m ? Number(m[1]) * 1024 : null;
}

/** RSS and PSS from /proc/<pid>/smaps_rollup (RSS from status when rollup is unreadable); null when gone. */
export function readProcessMemory(root: string, pid: number): ProcessMemory | null {
  const rollup = read(root, 'proc', String(pid), 'smaps_rollup');
  if (rollup !== null) {
    const rss = kbField(rollup, 'Rss');
    if (rss !== null) return { rssBytes: rss, pssBytes: kbField(rollup, 'Pss') };
  }
  const status = read(root, 'proc', String(pid), 'status');
  const rss = status === null ? null : kbField(status, 'VmRSS');
  return rss === null ? null : { rssBytes: rss, pssBytes: null };
}

export interface CpuTicks {
  busy: number;
  total: number;
}

/** The "cpu" line of /proc/stat: busy and total ticks over all CPUs since boot. */
export function readHostCpu(root: string): CpuTicks | null {
  const text = read(root, 'proc', 'stat');
  const line = text?.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) return null;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  if (v.length < 4 || v.some((n) => !Number.isFinite(n))) return null;
  // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = v;
  const idleAll = idle + iowait;
  const total = user + nice + system + idle + iowait + irq + softirq + steal;
  return { busy: total - idleAll, total };
}

export interface HostMemory {
  totalBytes: number;
  availableBytes: number;
}

export function readHostMemory(root: string): HostMemory | null {
  const text = read(root, 'proc', 'meminfo');
  if (text === null) return null;
  const total = kbField(text, 'MemTotal');
  const avail = kbField(text, 'MemAvailable') ?? kbField(text, 'MemFree');
  return total === null || avail === null ? null : { totalBytes: total, availableBytes: avail };
}

export function readLoad1(root: string): number | null {
  const text = read(root, 'proc', 'loadavg');
  const n = text === null ? NaN : Number(text.trim().split(/\s+/)[0]);
  return Number.isFinite(n) ? n : null;
}

export interface NicCounters {
  /** Bytes the guest received: what the host sent into the TAP (its tx). */
  rxBytes: number;
  /** Bytes the guest sent: what the host read from the TAP (its rx). */
  txBytes: number;
}

/** A TAP's counters turned round to the guest's view; null when the TAP does not exist. */
export function readTapCounters(root: string, tap: string): NicCounters | null {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(tap)) return null;
  const rx = read(root, 'sys', 'class', 'net', tap, 'statistics', 'rx_bytes');
  const tx = read(root, 'sys', 'class', 'net', tap, 'statistics', 'tx_bytes');
  if (rx === null || tx === null) return null;
  const hostRx = Number(rx.trim());
  const hostTx = Number(tx.trim());
  if (!Number.isFinite(hostRx) || !Number.isFinite(hostTx)) return null;
  return { rxBytes: hostTx, txBytes: hostRx };
}

export interface DiskSpace {
  usedBytes: number;
  totalBytes: number;
  /** Used share as df shows it: used / (used + available to unprivileged users), 0–100. */
  usedPercent: number;
}

/** Space on the file system holding `dir` (statfs). */
export function readDiskSpace(dir: string): DiskSpace | null {
  try {
    const s = fs.statfsSync(dir);
    const total = s.blocks * s.bsize;
    const used = (s.blocks - s.bfree) * s.bsize;
    const avail = s.bavail * s.bsize;
    return { usedBytes: used, totalBytes: total, usedPercent: used + avail > 0 ? (used / (used + avail)) * 100 : 0 };
  } catch {
    return null;
  }
}
