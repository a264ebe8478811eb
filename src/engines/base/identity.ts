/**
 * How an engine recognises its own VM process: a pid file the process (or
 * the engine, right after the spawn) writes into the VM's runDir, and a test
 * of /proc/<pid>/cmdline that only this VM's process passes. Every place
 * that trusts a pid (finding a VM after a daemon restart, adopting it,
 * killing it) asks the same `isOurs`, so they can never disagree about
 * which process is this VM's.
 */
import { processAlive, processArgs, readPidFile } from './procfs.js';

export interface VmProcessIdentity {
  /** The pid file in the VM's runDir. */
  readonly pidFile: string;
  /** True when these arguments are this VM's process (exactly as the engine built them). */
  matches(argv: readonly string[]): boolean;
}

/** True while pid is alive (not a zombie) and its command line is this VM's: never a recycled pid. */
export function isOurs(pid: number, id: VmProcessIdentity): boolean {
  if (!processAlive(pid)) return false;
  const argv = processArgs(pid);
  return argv !== null && id.matches(argv);
}

/**
 * This VM's process after a daemon restart: `hint` (the recorded pid) if it
 * still is ours, else the pid in the pid file if that one is.
 */
export function findOurProcess(id: VmProcessIdentity, hint?: number): number | null {
  if (hint !== undefined && isOurs(hint, id)) return hint;
  const fromFile = readPidFile(id.pidFile);
  return fromFile !== null && isOurs(fromFile, id) ? fromFile : null;
}

/**
 * SIGKILLs pid if it is still this VM's process (checked right before the
 * signal, so a pid reused meanwhile is never touched), then waits for it to
 * be gone. True once gone (or when it was not ours to begin with), false
 * when it still lives after `timeoutMs`.
 */
export async function killOurProcess(pid: number, id: VmProcessIdentity, timeoutMs = 10_000): Promise<boolean> {
  if (!isOurs(pid, id)) return true;
  try {
    process.kill(pid, 'SIGKILL');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return true;
    throw e;
  }
  // Not our child after a daemon restart: init reaps it, and a zombie counts as gone.
  const end = Date.now() + timeoutMs;
  while (processAlive(pid)) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
  return true;
}
