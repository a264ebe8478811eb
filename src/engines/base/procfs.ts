/**
 * What /proc says about a VM process we may not be the parent of (after a
 * daemon restart a VM process belongs to init, so waitpid() is no help).
 * Shared by every engine.
 */
import fs from 'node:fs';

/** Linux reports utime/stime in USER_HZ ticks, which is 100 on every architecture Hangar runs on. */
const USER_HZ = 100;

function readProc(pid: number, file: string): string | null {
  if (!Number.isSafeInteger(pid) || pid <= 0) return null;
  try {
    return fs.readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    return null;
  }
}

/** Fields of /proc/<pid>/stat after the command name, which is in parentheses and may itself hold spaces or ')'. */
function statFields(pid: number): string[] | null {
  const stat = readProc(pid, 'stat');
  if (stat === null) return null;
  const end = stat.lastIndexOf(')');
  if (end < 0) return null;
  return stat.slice(end + 2).trim().split(/\s+/);
}

/** True while the process exists and is not a zombie (a zombie has ended, only its parent has not reaped it yet). */
export function processAlive(pid: number): boolean {
  const f = statFields(pid);
  if (f === null) return false;
  const state = f[0];
  return state !== 'Z' && state !== 'X';
}

/** The process's arguments, or null when it is gone. */
export function processArgs(pid: number): string[] | null {
  const raw = readProc(pid, 'cmdline');
  if (raw === null || raw === '') return null;
  return raw.split('\0').filter((a, i, all) => !(a === '' && i === all.length - 1));
}

/** Resident set size in bytes (VmRSS), 0 when unknown. */
export function processRssBytes(pid: number): number {
  const status = readProc(pid, 'status');
  const m = status ? /^VmRSS:\s+(\d+)\s+kB/m.exec(status) : null;
  return m ? Number(m[1]) * 1024 : 0;
}

/** CPU time (user + system) the process has used, in seconds; 0 when unknown. */
export function processCpuSeconds(pid: number): number {
  const f = statFields(pid);
  // After the command name: state is field 3 of the full line, utime 14, stime 15 → indices 11 and 12 here.
  if (f === null || f.length < 13) return 0;
  const ticks = Number(f[11]) + Number(f[12]);
  return Number.isFinite(ticks) ? ticks / USER_HZ : 0;
}

/**
 * The pid written in a pid file (QEMU's -pidfile, the micro engine's vmm.pid),
 * or null when the file is missing or holds anything but one positive integer.
 * The file lies in a folder only the daemon writes, but it is still checked:
 * the caller confirms the pid through /proc before trusting it.
 */
export function readPidFile(file: string): number | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const m = /^\s*(\d{1,10})\s*$/.exec(text);
  if (!m) return null;
  const pid = Number(m[1]);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
}
