/**
 * Reading a VM's console log for GET /1.0/vms/{name}/logs: the last lines
 * of the files the engine writes every console byte to (rotated by the
 * VM's log writer, so never larger than its limit).
 */
import { readConsoleLogTail } from '../common/console-log/limits.js';

/** Read at most this much from the end of the log: enough for any sensible tail. */
const MAX_READ = 4 * 1024 * 1024;

/** The last `tail` lines of `file` (all of its last 4 MiB when tail is absent); '' when there is no log yet. */
export function readConsoleTail(file: string, tail?: number): string {
  // Across the rotated files (console.log.1 before console.log): what the guest wrote last.
  const text = readConsoleLogTail(file, MAX_READ).toString('utf8');
  if (tail === undefined) return text;
  const lines = text.split('\n');
  const endsWithNl = lines.length > 0 && lines[lines.length - 1] === '';
  if (endsWithNl) lines.pop();
  const out = lines.slice(Math.max(0, lines.length - tail)).join('\n');
  return endsWithNl && out.length > 0 ? `${out}\n` : out;
}
