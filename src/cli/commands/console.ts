/**
 * `hangar console NAME`: the VM's serial console over the API's WebSocket.
 *
 * Interactive (stdin is a terminal): the terminal goes to raw mode so every
 * key, Ctrl-C included, reaches the guest; Ctrl-] detaches (as in virsh) and
 * the terminal is restored however the session ends.
 *
 * Scripted (stdin is a pipe or file): stdin is sent as it arrives; once it
 * ends, output keeps being read until the console has been quiet for
 * `--settle` (a duration: 500ms, 2s), or, with `--until REGEX`, until the output matches. So
 * `echo 'uname -a' | hangar console web1` prints the answer and exits.
 */
import type { Command } from 'commander';
import { StringDecoder } from 'node:string_decoder';
import type { WebSocket, RawData } from 'ws';
import { HangarError } from '../../common/errors.js';
import type { ApiClient } from '../client.js';
import { checkVmName, clientFor, note, printJson, vmPath, withJson } from '../context.js';
import { parseDurationOption } from '../duration.js';
import { CONSOLE_CLOSE, CONSOLE_MAX_INPUT_FRAME } from '../../api/console.js';

/** Ctrl-] — the byte a terminal sends for it. */
export const DETACH_BYTE = 0x1d;

export interface ScriptedOptions {
  settleMs: number;
  until?: RegExp;
  /** Overall limit in ms once stdin has ended (0 = none). */
  timeoutMs: number;
  /** Where guest output goes (stdout, or nowhere in JSON mode). */
  write?: (b: Buffer) => void;
}

export interface ScriptedResult {
  output: string;
  matched: boolean;
  /** Why the session ended. */
  end: 'settled' | 'matched' | 'closed' | 'timeout';
}

function toBuffer(d: RawData): Buffer {
  if (Buffer.isBuffer(d)) return d;
  if (Array.isArray(d)) return Buffer.concat(d);
  return Buffer.from(d);
}

/** The error a close code from the daemon stands for (CONSOLE_CLOSE); null for a normal end. */
export function closeError(code: number, reason: Buffer): HangarError | null {
  const why = reason.toString() || 'no reason given';
  switch (code) {
    case CONSOLE_CLOSE.ATTACH_FAILED: return new HangarError('ENGINE_FAILED', `console closed by the daemon: ${why}`);
    case CONSOLE_CLOSE.TOO_MANY_CLIENTS: return new HangarError('RESOURCE_EXHAUSTED', `console refused by the daemon: ${why}`);
    case CONSOLE_CLOSE.TOO_SLOW: return new HangarError('UNAVAILABLE', `console ${why}`);
    case CONSOLE_CLOSE.FRAME_TOO_BIG: return new HangarError('INVALID_ARGUMENT', `console closed by the daemon: input frame larger than ${CONSOLE_MAX_INPUT_FRAME} bytes`);
    default: return null;
  }
}

/** Unsent input beyond which the CLI stops reading its own input until the daemon takes more. */
const INPUT_BACKLOG_MAX = 256 * 1024;

/** Sends input in frames the daemon accepts, pausing `source` while the daemon is not keeping up. */
function sendInput(ws: WebSocket, data: Buffer, source: NodeJS.ReadableStream): void {
  if (ws.readyState !== ws.OPEN) return;
  for (let at = 0; at < data.length; at += CONSOLE_MAX_INPUT_FRAME) {
    ws.send(data.subarray(at, at + CONSOLE_MAX_INPUT_FRAME), () => {
      if (ws.bufferedAmount < INPUT_BACKLOG_MAX && source.isPaused()) source.resume();
    });
  }
  if (ws.bufferedAmount >= INPUT_BACKLOG_MAX) source.pause();
}

/**
 * Runs a non-interactive console session over an open WebSocket: pipes
 * `input` to the guest, collects output, and resolves when the session is
 * over (see ScriptedResult.end). Exported for unit tests.
 */
export function runScripted(ws: WebSocket, input: NodeJS.ReadableStream, o: ScriptedOptions): Promise<ScriptedResult> {
  return new Promise((resolve, reject) => {
    const decoder = new StringDecoder('utf8');
    let output = '';
    let inputEnded = false;
    let settleTimer: NodeJS.Timeout | undefined;
    let limitTimer: NodeJS.Timeout | undefined;
    let finished = false;

    const finish = (end: ScriptedResult['end']) => {
      if (finished) return;
      finished = true;
      clearTimeout(settleTimer);
      clearTimeout(limitTimer);
      input.removeListener('data', onInput);
      input.removeListener('end', onInputEnd);
      input.removeListener('error', onInputError);
      input.pause?.();
      output += decoder.end();
      ws.removeAllListeners('message');
      ws.removeAllListeners('close');
      ws.on('error', () => {});
      ws.close();
      if (end === 'timeout' && o.until) {
        reject(new HangarError('TIMEOUT', `console output did not match /${o.until.source}/ within ${o.timeoutMs} ms`, { output: output.slice(-2000) }));
        return;
      }
      resolve({ output, matched: end === 'matched', end });
    };

    const armSettle = () => {
      if (o.until || !inputEnded) return; // --until waits for its match, not for quiet
      clearTimeout(settleTimer);
      settleTimer = setTimeout(() => finish('settled'), o.settleMs);
    };

    ws.on('message', (data: RawData) => {
      const b = toBuffer(data);
      o.write?.(b);
      output += decoder.write(b);
      if (o.until && o.until.test(output)) return finish('matched');
      armSettle();
    });
    ws.on('close', (code: number, reason: Buffer) => {
      const err = closeError(code, reason);
      if (err && !finished) {
        finished = true;
        clearTimeout(settleTimer);
        clearTimeout(limitTimer);
        reject(err);
        return;
      }
      finish('closed');
    });
    ws.on('error', (e) => {
      if (!finished) {
        finished = true;
        reject(new HangarError('UNAVAILABLE', `console connection failed: ${e.message}`));
      }
    });

    const onInput = (chunk: Buffer | string) => sendInput(ws, typeof chunk === 'string' ? Buffer.from(chunk) : chunk, input);
    const onInputEnd = () => {
      inputEnded = true;
      if (o.timeoutMs > 0) limitTimer = setTimeout(() => finish('timeout'), o.timeoutMs);
      armSettle();
    };
    const onInputError = (e: Error) => {
      finished = true;
      reject(new HangarError('INTERNAL', `reading stdin failed: ${e.message}`));
    };
    input.on('data', onInput);
    input.on('end', onInputEnd);
    input.on('error', onInputError);
    ws.resume(); // openConsole hands the socket over paused, so no early output is lost
  });
}

/** The interactive session: raw terminal, Ctrl-] to leave. Resolves with how it ended. */
export function runInteractive(ws: WebSocket, name: string): Promise<'detached' | 'closed'> {
  const stdin = process.stdin;
  return new Promise((resolve, reject) => {
    const wasRaw = stdin.isRaw;
    let restored = false;
    const restore = () => {
      if (restored) return;
      restored = true;
      stdin.removeListener('data', onKey);
      if (stdin.isTTY) stdin.setRawMode(wasRaw);
      stdin.pause();
      process.removeListener('exit', restore);
      for (const s of SIGNALS) process.removeListener(s, onSignal);
    };
    const SIGNALS = ['SIGTERM', 'SIGHUP'] as const;
    const onSignal = () => {
      restore();
      ws.close();
      resolve('detached');
    };
    const onKey = (chunk: Buffer) => {
      const i = chunk.indexOf(DETACH_BYTE);
      if (i >= 0) {
        if (i > 0) ws.send(chunk.subarray(0, i));
        restore();
        ws.close();
        resolve('detached');
        return;
      }
      ws.send(chunk);
    };
    // The terminal must come back even if something throws on the way out.
    process.on('exit', restore);
    for (const s of SIGNALS) process.on(s, onSignal);
    stdin.setRawMode(true);
    // Announced only now: keys typed from here on go to the guest as they are.
    note(`Connected to ${name}'s serial console (detach with Ctrl-]).`);
    stdin.resume();
    stdin.on('data', onKey);
    ws.on('message', (d: RawData) => process.stdout.write(toBuffer(d)));
    ws.on('close', (code: number, reason: Buffer) => {
      restore();
      const err = closeError(code, reason);
      if (err) reject(err); else resolve('closed');
    });
    ws.on('error', (e) => {
      restore();
      reject(new HangarError('UNAVAILABLE', `console connection to ${name} failed: ${e.message}`));
    });
    ws.resume();
  });
}

/** Opens the console WebSocket, paused (see ApiClient.websocket). */
export async function openConsole(client: ApiClient, name: string): Promise<WebSocket> {
  checkVmName(name);
  return client.websocket(vmPath(name, '/console'));
}

export function compileUntil(src: string | undefined): RegExp | undefined {
  if (src === undefined) return undefined;
  try {
    return new RegExp(src, 'm');
  } catch (e) {
    throw new HangarError('INVALID_ARGUMENT', `--until "${src}" is not a valid regular expression: ${(e as Error).message}`);
  }
}

/**
 * Device-status queries (ESC[5n, ESC[6n) that a guest shell sends with its
 * prompt to ask a terminal where the cursor is. In scripted use no terminal
 * answers them, so they are only noise in what is printed or returned (and
 * a terminal on stdout would answer them into the user's next command line).
 */
const TERMINAL_QUERY = /\x1b\[[56]n/g;
/** What a query can look like when the output so far ends in the middle of one. */
const QUERY_PREFIX = /\x1b(\[[56]?)?$/;

export function stripTerminalQueries(text: string): string {
  return text.replace(TERMINAL_QUERY, '');
}

/**
 * Streaming form of stripTerminalQueries: output arrives in arbitrary pieces
 * (a UART sends a byte at a time), so a query split across pieces is held
 * back until the next piece shows whether it is one. Bytes pass through
 * unchanged otherwise (latin1 keeps every byte as it is).
 */
export class TerminalQueryFilter {
  private held = '';

  push(chunk: Buffer): Buffer {
    const text = stripTerminalQueries(this.held + chunk.toString('latin1'));
    const partial = QUERY_PREFIX.exec(text);
    this.held = partial ? partial[0] : '';
    return Buffer.from(partial ? text.slice(0, partial.index) : text, 'latin1');
  }

  /** The output ended: a held piece that never became a query is real output. */
  end(): Buffer {
    const rest = Buffer.from(this.held, 'latin1');
    this.held = '';
    return rest;
  }
}

export function registerConsoleCommand(program: Command): void {
  withJson(
    program
      .command('console')
      .description('attach to a VM\'s serial console (interactive: Ctrl-] detaches; piped stdin: send it, print the answer, exit)')
      .argument('<name>', 'VM name')
      .option('--settle <duration>', 'piped stdin: after it ends, exit once the console has been quiet this long, with a unit: 500ms, 2s (default 1.5s)', parseDurationOption('--settle', { maxMs: 3_600_000 }), 1500)
      .option('--until <regex>', 'piped stdin: exit as soon as the output matches this regular expression')
      .option('--timeout <duration>', 'piped stdin: give up this long after stdin has ended, e.g. 90s or 2m; a bare number is seconds; 0: never (default 60s; with --until, exit code 6)', parseDurationOption('--timeout', { bare: 's', maxMs: 86_400_000 }), 60_000),
  ).action(async (name: string, o: { settle: number; until?: string; timeout: number; json?: boolean }, cmd: Command) => {
    const until = compileUntil(o.until);
    const interactive = Boolean(process.stdin.isTTY) && !o.json;
    const ws = await openConsole(clientFor(cmd), name);
    if (interactive) {
      const how = await runInteractive(ws, name);
      note(how === 'detached' ? `\r\nDetached from ${name}.` : `\r\nConsole of ${name} closed (the VM stopped).`);
      return;
    }
    // Scripted output never carries the guest's terminal queries, whether stdout is a pipe or a terminal.
    const filter = new TerminalQueryFilter();
    const r = await runScripted(ws, process.stdin, {
      settleMs: o.settle,
      until,
      timeoutMs: o.timeout,
      write: o.json ? undefined : (b) => process.stdout.write(filter.push(b)),
    });
    if (!o.json) process.stdout.write(filter.end());
    if (o.json) printJson({ vm: name, output: stripTerminalQueries(r.output), end: r.end, matched: until ? r.matched : undefined });
    // Stdin may be a pipe that never ends from our side; leave now rather than wait for it.
    process.stdin.destroy();
  });
}
