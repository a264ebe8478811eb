/**
 * `hangar logs NAME`: the console log the daemon keeps for each VM.
 * `--follow` polls the log and prints what was appended, until Ctrl-C.
 */
import type { Command } from 'commander';
import type { ApiClient } from '../client.js';
import { checkVmName, clientFor, out, parseIntOption, printJson, vmPath, withJson } from '../context.js';

/** The last `n` lines of a text, keeping a trailing partial line as a line. */
export function lastLines(text: string, n: number): string {
  if (n <= 0) return '';
  const lines = text.split('\n');
  const trailingNewline = text.endsWith('\n');
  if (trailingNewline) lines.pop();
  return lines.slice(-n).join('\n') + (trailingNewline ? '\n' : '');
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function follow(client: ApiClient, name: string, tail: number | undefined, intervalMs: number): Promise<never> {
  let text = await client.text(vmPath(name, '/logs'));
  out(tail === undefined ? text : lastLines(text, tail));
  let printed = text.length;
  for (;;) {
    await sleep(intervalMs);
    text = await client.text(vmPath(name, '/logs'));
    // A log that got shorter was rotated or recreated (VM re-launched): start over from its beginning.
    if (text.length < printed) printed = 0;
    if (text.length > printed) out(text.slice(printed));
    printed = text.length;
  }
}

export function registerLogsCommand(program: Command): void {
  withJson(
    program
      .command('logs')
      .description("print a VM's persisted serial console log")
      .argument('<name>', 'VM name')
      .option('-n, --tail <lines>', 'only the last N lines', parseIntOption('--tail', 0))
      .option('-f, --follow', 'keep printing new output until interrupted'),
  ).action(async (name: string, o: { tail?: number; follow?: boolean; json?: boolean }, cmd: Command) => {
    checkVmName(name);
    const client = clientFor(cmd);
    if (o.follow && !o.json) await follow(client, name, o.tail, 500);
    const q = o.tail !== undefined ? `?tail=${o.tail}` : '';
    let text = await client.text(vmPath(name, `/logs${q}`));
    // The daemon trims already; trimming again keeps the promise if it ignores ?tail.
    if (o.tail !== undefined) text = lastLines(text, o.tail);
    if (o.json) printJson({ vm: name, log: text });
    else out(text);
  });
}
