/**
 * What every command needs: the API client built from the global options,
 * the chosen output format, and the shared way of following an operation.
 */
import type { Command } from 'commander';
import { HangarError } from '../common/errors.js';
import { isVmName, VM_NAME_RULE } from '../api/names.js';
import type { Operation } from '../host/api/schemas.js';
import { ApiClient, resolveEndpoint } from './client.js';
import { resolveFormat, toJson, type Format } from './output.js';
import { ProgressReporter } from './progress.js';

export interface GlobalOptions {
  socket?: string;
  remote?: string;
}

export function clientFor(cmd: Command): ApiClient {
  const g = cmd.optsWithGlobals<GlobalOptions>();
  return new ApiClient(resolveEndpoint(g));
}

export function formatFor(cmd: Command): Format {
  return resolveFormat(cmd.opts<{ json?: boolean; format?: string }>());
}

export function out(s: string): void {
  process.stdout.write(s);
}

export function note(s: string): void {
  process.stderr.write(s.endsWith('\n') ? s : s + '\n');
}

export function printJson(v: unknown): void {
  out(toJson(v));
}

/** Adds the `--json` flag every command carries. */
export function withJson(cmd: Command): Command {
  return cmd.option('--json', 'print machine-readable JSON on stdout');
}

/** The API's own VmName rule (src/api/names.ts), checked here so a typo fails before any request. */
export function checkVmName(name: string): string {
  if (!isVmName(name)) {
    throw new HangarError('INVALID_ARGUMENT', `"${name}" is not a valid VM name (${VM_NAME_RULE})`);
  }
  return name;
}

export function vmPath(name: string, suffix = ''): string {
  return `/1.0/vms/${encodeURIComponent(name)}${suffix}`;
}

/** Parses a whole number option, e.g. `--cpus 2`; `min` guards against 0 and negatives. */
export function parseIntOption(what: string, min: number, max = Number.MAX_SAFE_INTEGER): (v: string) => number {
  return (v: string) => {
    if (!/^\d+$/.test(v.trim())) throw new HangarError('INVALID_ARGUMENT', `${what} must be a whole number, got "${v}"`);
    const n = Number(v);
    if (n < min || n > max) throw new HangarError('INVALID_ARGUMENT', `${what} must be between ${min} and ${max}, got ${n}`);
    return n;
  };
}

export interface FollowOptions {
  /** Shown while waiting, e.g. "Launching web1". */
  label: string;
  /** Printed to stderr on success (not in JSON mode). */
  done?: string;
  /** Quiet: no progress display (JSON mode keeps stderr quiet too, except errors). */
  quiet?: boolean;
}

/** Waits for an operation while showing its progress on stderr; throws the operation's error on failure. */
export async function followOperation(client: ApiClient, op: Operation, o: FollowOptions): Promise<Operation> {
  if (op.status !== 'running') {
    if (op.status === 'failure') return client.waitOperation(op.id); // throws with the right code
    return op;
  }
  const progress = o.quiet ? undefined : new ProgressReporter(o.label);
  // Ctrl-C stops the waiting, not the operation: say so, and how to pick it up again.
  const onInterrupt = () => {
    progress?.stop();
    note(`Interrupted; the operation continues in the daemon. Follow it with: hangar operation wait ${op.id}`);
    process.exit(130);
  };
  process.once('SIGINT', onInterrupt);
  progress?.start();
  try {
    // The final state's progress ("done 100%") says nothing the closing message does not.
    const final = await client.waitOperation(op.id, (u) => {
      if (u.status === 'running') progress?.update(u);
    });
    progress?.stop(o.done);
    return final;
  } catch (e) {
    progress?.stop();
    throw e;
  } finally {
    process.removeListener('SIGINT', onInterrupt);
  }
}
