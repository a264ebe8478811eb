/**
 * Runs the host tools an image build needs (mmdebstrap, mke2fs, sfdisk,
 * mtools, qemu-img...) with a fixed environment, and turns a failure into a
 * HangarError that quotes the tool's last words.
 */
import { spawn } from 'node:child_process';
import { HangarError } from '../../../common/errors.js';

export interface RunOptions {
  /** Extra environment variables (LC_ALL=C and PATH are always set). */
  env?: Record<string, string>;
  /** Written to the tool's stdin. */
  input?: string;
  /** Kill the tool after this long (default 20 min: mmdebstrap on a slow mirror). */
  timeoutMs?: number;
  /** Each line the tool prints (stdout and stderr), for progress. */
  onLine?: (line: string) => void;
}

const SBIN_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Runs `cmd args...`; resolves with its stdout, rejects with ENGINE_FAILED and the end of its output. */
export function runTool(cmd: string, args: string[], o: RunOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: { ...process.env, PATH: `${process.env.PATH ?? ''}:${SBIN_PATH}`, LC_ALL: 'C', ...o.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let tail = '';
    let partial = '';
    const keep = (s: string): void => {
      tail = (tail + s).slice(-4000);
      if (!o.onLine) return;
      const lines = (partial + s).split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) o.onLine(l);
    };
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); keep(d.toString()); });
    child.stderr.on('data', (d: Buffer) => keep(d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 20 * 60_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new HangarError('ENGINE_FAILED', `${cmd}: ${e.message}`, { command: cmd }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) return resolve(stdout);
      const why = tail.trim().split('\n').slice(-6).join(' | ');
      reject(new HangarError('ENGINE_FAILED', `${cmd} failed (${signal ?? `exit ${code}`}): ${why}`, { command: cmd }));
    });
    child.stdin.on('error', () => { /* the tool may exit without reading its input */ });
    child.stdin.end(o.input ?? '');
  });
}
