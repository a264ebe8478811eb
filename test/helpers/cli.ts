/**
 * Runs the real `hangar` entry point as a child process, for unit tests
 * (against a fake daemon) and end-to-end tests (against a real one) alike:
 * the compiled CLI when the tests run compiled, the TypeScript source
 * through tsx when they run under tsx.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { projectRoot } from '../../src/common/paths.js';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Asserts that a CLI run exited 0, naming what failed and its stderr otherwise. */
export function expectOk(r: CliResult, what: string): CliResult {
  assert.equal(r.code, 0, `${what} failed (exit ${r.code}): ${r.stderr}`);
  return r;
}

/** The argv that runs the CLI: compiled JS, or the TypeScript source through tsx when tests run under tsx. */
export function hangarArgv(args: string[]): string[] {
  const root = projectRoot();
  const underTsx = fileURLToPath(import.meta.url).endsWith('.ts');
  return underTsx ? ['--import', 'tsx', path.join(root, 'src/cli/main.ts'), ...args] : [path.join(root, 'dist/src/cli/main.js'), ...args];
}

/** A long-running `hangar` (e.g. --follow) whose output the test reads while it runs. */
export class HangarProcess {
  stdout = '';
  stderr = '';
  readonly child: ChildProcess;
  private readonly waiters = new Set<() => void>();
  readonly closed: Promise<number | null>;

  constructor(args: string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, hangarArgv(args), { cwd: projectRoot(), env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const poke = () => { for (const w of [...this.waiters]) w(); };
    this.child.stdout!.on('data', (c: Buffer) => { this.stdout += c.toString(); poke(); });
    this.child.stderr!.on('data', (c: Buffer) => { this.stderr += c.toString(); poke(); });
    this.closed = new Promise((r) => this.child.on('close', (code) => { poke(); r(code); }));
  }

  /** Resolves once stdout (or stderr) matches; rejects after limitMs or if the process ends first. */
  waitFor(re: RegExp, stream: 'stdout' | 'stderr' = 'stdout', limitMs = 30_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (re.test(this[stream])) { done(); resolve(); }
        else if (this.child.exitCode !== null || this.child.signalCode !== null) { done(); reject(new Error(`hangar exited before ${re} showed; stdout ${JSON.stringify(this.stdout)} stderr ${JSON.stringify(this.stderr)}`)); }
      };
      const timer = setTimeout(() => { done(); reject(new Error(`no ${re} within ${limitMs} ms; stdout ${JSON.stringify(this.stdout)}`)); }, limitMs);
      const done = () => { clearTimeout(timer); this.waiters.delete(check); };
      this.waiters.add(check);
      check();
    });
  }

  /** Ends it (SIGTERM, which a follower takes as Ctrl-C) and waits until it is gone. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.closed;
  }
}

/**
 * Runs `hangar ARGS` as a child process: the compiled entry when the tests
 * run compiled, the TypeScript source through tsx when they run under tsx.
 */
export function runHangar(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, hangarArgv(args), {
      cwd: projectRoot(),
      env: { ...process.env, HANGAR_LOG_LEVEL: 'warn', ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin.on('error', () => {}); // the CLI may exit before reading all of it
    child.stdin.end(opts.input ?? '');
  });
}
