/**
 * `hangar console NAME`: the VM's serial console over the API's WebSocket.
 *
 * Interactive (stdin is a terminal): the terminal goes to raw mode so every
 * key, Ctrl-C included, reaches the guest; Ctrl-] detaches (as in virsh) and
 * the terminal is restored however the session ends.
 *
 * Scripted (stdin is a pipe or file): stdin is sent as it arrives; once it
 * ends, output keeps being read until the console has been quiet for
 * `--settle` ms, or, with `--until REGEX`, until the output matches. So
 * `echo 'uname -a' | hangar console web1` prints the answer and exits.
 */
import type { Command } from 'commander';
import { StringDecoder } from 'node:string_decoder';
import type { WebSocket, RawData } from 'ws';
import { HangarError } from '../../common/errors.js';
import type { ApiClient } from '../client.js';
import { checkVmName, clientFor, note, parseIntOption, printJson, vmPath, withJson } from '../context.js';

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
      // 1011: the daemon could not attach to the VM's console (the reason says why).
      if (code === 1011 && !finished) {
        finished = true;
        clearTimeout(settleTimer);
        clearTimeout(limitTimer);
        reject(new HangarError('ENGINE_FAILED', `console closed by the daemon: ${reason.toString() || 'no reason given'}`));
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

    const onInput = (chunk: Buffer | string) => {
      if (ws.readyState === ws.OPEN) ws.send(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    };
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
function runInteractive(ws: WebSocket, name: string): Promise<'detached' | 'closed'> {
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
    ws.on('close', () => {
      restore();
      resolve('closed');
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
 * answers them, so they are only noise in what is printed or returned.
 */
const TERMINAL_QUERY = /\x1b\[[56]n/g;
export function stripTerminalQueries(text: string): string {
  return text.replace(TERMINAL_QUERY, '');
}

export function registerConsoleCommand(program: Command): void {
  withJson(
    program
      .command('console')
      .description('attach to a VM\'s serial console (interactive: Ctrl-] detaches; piped stdin: send it, print the answer, exit)')
      .argument('<name>', 'VM name')
      .option('--settle <ms>', 'piped stdin: after it ends, exit once the console has been quiet this long', parseIntOption('--settle', 0, 3_600_000), 1500)
      .option('--until <regex>', 'piped stdin: exit as soon as the output matches this regular expression')
      .option('--timeout <seconds>', 'piped stdin: give up after this many seconds once stdin has ended (default 60; with --until, exit code 6)', parseIntOption('--timeout', 0, 86_400), 60),
  ).action(async (name: string, o: { settle: number; until?: string; timeout: number; json?: boolean }, cmd: Command) => {
    const until = compileUntil(o.until);
    const interactive = Boolean(process.stdin.isTTY) && !o.json;
    const ws = await openConsole(clientFor(cmd), name);
    if (interactive) {
      const how = await runInteractive(ws, name);
      note(how === 'detached' ? `\r\nDetached from ${name}.` : `\r\nConsole of ${name} closed (the VM stopped).`);
      return;
    }
    const r = await runScripted(ws, process.stdin, {
      settleMs: o.settle,
      until,
      timeoutMs: o.timeout * 1000,
      write: o.json ? undefined : (b) => process.stdout.write(process.stdout.isTTY ? b : stripTerminalQueries(b.toString('latin1')), 'latin1'),
    });
    if (o.json) printJson({ vm: name, output: stripTerminalQueries(r.output), end: r.end, matched: until ? r.matched : undefined });
    // Stdin may be a pipe that never ends from our side; leave now rather than wait for it.
    process.stdin.destroy();
  });
}
