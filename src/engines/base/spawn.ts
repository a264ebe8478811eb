/**
 * The one place a VM process is created, for every engine. Anything that
 * changes how VM processes run on the host (their user, capabilities,
 * cgroup) belongs here, so both engines get it at once.
 */
import fs from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import type { VmSandbox } from '../sandbox/index.js';

export interface VmProcessSpec {
  /** Program to run (absolute path or a name found on PATH). */
  command: string;
  args: string[];
  /** The process's stdout and stderr are appended to this file (its own warnings, start errors). */
  logFile: string;
  /** Environment; the daemon's own when absent. */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** The VM's confinement (own uid, no capabilities, own cgroup); null or absent: run unconfined. */
  sandbox?: VmSandbox | null;
  /** Descriptors the process inherits as fd 3, 4, … (e.g. /dev/kvm opened by the daemon). */
  inheritFds?: number[];
}

/**
 * Starts a VM process detached: its own session and process group, so
 * signals to the daemon's group (Ctrl-C, systemd stopping the daemon) do not
 * reach the VM and it outlives the daemon. stdin is /dev/null; stdout and
 * stderr go to `logFile`. The child stays referenced (its exit is delivered
 * to whoever watches it); callers unref it when they let go.
 *
 * A failure to exec shows up as the child's 'error' event (and no pid), as
 * with spawn itself; it never goes unhandled.
 */
export function spawnVmProcess(spec: VmProcessSpec): ChildProcess {
  const out = fs.openSync(spec.logFile, 'a', 0o600);
  try {
    // A confined VM starts through the sandbox's wrapper, which joins the cgroup
    // and drops privileges before it execs the VM binary.
    const run = spec.sandbox ? spec.sandbox.wrap(spec.command, spec.args) : { cmd: spec.command, args: spec.args, env: spec.env };
    let child: ChildProcess;
    try {
      child = spawn(run.cmd, run.args, {
        detached: true,
        stdio: ['ignore', out, out, ...(spec.inheritFds ?? [])],
        ...(run.env ? { env: run.env } : {}),
        ...(spec.cwd ? { cwd: spec.cwd } : {}),
      });
    } catch (e) {
      spec.sandbox?.cleanup();
      throw e;
    }
    // An exec failure is an 'error' event: without a listener it would end the daemon.
    // Callers see it as a missing pid or through a listener of their own.
    child.on('error', () => {});
    return child;
  } finally {
    // The child holds its own copy of the descriptor.
    fs.closeSync(out);
  }
}
