/**
 * Reading a VM's console log for GET /1.0/vms/{name}/logs: the last lines
 * of the file the engine appends every console byte to.
 */
import fs from 'node:fs';

/** Read at most this much from the end of the log: enough for any sensible tail. */
const MAX_READ = 4 * 1024 * 1024;

/** The last `tail` lines of `file` (all of its last 4 MiB when tail is absent); '' when there is no log yet. */
export function readConsoleTail(file: string, tail?: number): string {
  let fd: number;
  try { fd = fs.openSync(file, 'r'); } catch { return ''; }
  try {
    const size = fs.fstatSync(fd).size;
    const len = Math.min(size, MAX_READ);
    const buf = Buffer.alloc(len);
    fs.readSync(fd, buf, 0, len, size - len);
    const text = buf.toString('utf8');
    if (tail === undefined) return text;
    const lines = text.split('\n');
    const endsWithNl = lines.length > 0 && lines[lines.length - 1] === '';
    if (endsWithNl) lines.pop();
    const out = lines.slice(Math.max(0, lines.length - tail)).join('\n');
    return endsWithNl && out.length > 0 ? `${out}\n` : out;
  } finally {
    fs.closeSync(fd);
  }
}
