/**
 * POST /1.0/vms/{name}/exec: runs one command in a running VM through its
 * guest agent and answers with its exit status and output. Checks the
 * request (what the schema cannot: NUL bytes, decoded input size), then
 * hands it to the VM's handle; the engine's agent client does the rest.
 */
import { HangarError } from '../common/errors.js';
import type { VmHandle } from '../engines/engine.js';
import type { VmExecRequest, VmExecResult } from './api/schemas.js';

export const DEFAULT_EXEC_TIMEOUT_S = 60;
/** Largest stdin accepted (decoded). */
export const MAX_EXEC_INPUT = 512 * 1024;
/** Most bytes of stdout, and of stderr, returned; the rest is cut and marked truncated. */
export const MAX_EXEC_OUTPUT = 8 * 1024 * 1024;

function invalid(message: string, field: string): never {
  throw new HangarError('INVALID_ARGUMENT', message, { field });
}

/** Runs `req` through `handle` (the VM's, running). */
export async function execInGuest(name: string, handle: VmHandle, req: VmExecRequest): Promise<VmExecResult> {
  const encoding = req.encoding ?? 'utf8';
  req.command.forEach((a, i) => {
    // execve cannot pass a NUL inside an argument.
    if (a.includes('\0')) invalid(`command[${i}] contains a NUL byte`, 'command');
  });
  if (req.command[0] === '') invalid('command[0] must name a program', 'command');
  let input: Buffer | undefined;
  if (req.input !== undefined) {
    if (encoding === 'base64' && !/^[A-Za-z0-9+/]*={0,2}$/.test(req.input)) invalid('input is not base64', 'input');
    input = Buffer.from(req.input, encoding);
    if (input.length > MAX_EXEC_INPUT) invalid(`input is ${input.length} bytes; at most ${MAX_EXEC_INPUT} are accepted`, 'input');
  }
  if (!handle.exec) throw new HangarError('AGENT_UNAVAILABLE', `VM "${name}" runs on an engine without a guest agent channel`, { name });
  const r = await handle.exec({
    command: req.command,
    ...(input ? { input } : {}),
    timeoutMs: (req.timeout ?? DEFAULT_EXEC_TIMEOUT_S) * 1000,
    maxOutputBytes: MAX_EXEC_OUTPUT,
  }).catch((e: unknown) => {
    if (e instanceof HangarError && e.code === 'AGENT_UNAVAILABLE') {
      throw new HangarError('AGENT_UNAVAILABLE', `VM "${name}": ${e.message}`, { name });
    }
    throw e;
  });
  return {
    exitCode: r.exitCode,
    signal: r.signal,
    stdout: r.stdout.toString(encoding),
    stderr: r.stderr.toString(encoding),
    encoding,
    stdoutTruncated: r.stdoutTruncated,
    stderrTruncated: r.stderrTruncated,
  };
}
