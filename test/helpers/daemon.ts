/**
 * Starts a real `hangard` (compiled, from dist/) on a private data directory
 * for end-to-end tests, and cleans up after it: the daemon and every VM
 * process it started (found by pid in its store and confirmed by command line).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import { spawn, type ChildProcess } from 'node:child_process';
import Database from 'better-sqlite3';
import { WebSocket } from 'ws';
import { projectRoot } from '../../src/common/paths.js';
import { cleanupStaleSandbox } from '../../src/engines/sandbox/index.js';

export interface TestResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any;
}

export interface TestDaemon {
  dataDir: string;
  socket: string;
  /** pid of the current daemon process (changes after restart()). */
  pid: number;
  /** HANGAR_DATA_DIR, HANGAR_SOCKET, HANGAR_IMAGE_DIR=<projectRoot>/.cache/images, for spawning the CLI. */
  env: NodeJS.ProcessEnv;
  /** One HTTP request on the Unix socket; JSON bodies are parsed, others are returned as text. */
  request(method: string, path: string, body?: unknown): Promise<TestResponse>;
  /** SIGKILL the daemon (VMs keep running) and wait until it is gone. */
  kill9(): Promise<void>;
  /** SIGTERM the daemon and wait until it has exited. */
  stop(): Promise<void>;
  /** Stops the daemon if it runs, then starts it again on the same data directory. */
  restart(): Promise<void>;
  /** Stops the daemon, kills every VM process it started, removes the data directory. */
  cleanup(): Promise<void>;
}

export interface StartDaemonOptions {
  dataDir?: string;
  /** How long to wait for the daemon to answer (default 30 s; the KVM lab, Node under nested TCG, needs more). */
  startTimeoutMs?: number;
  /** Extra command-line arguments for hangard, e.g. ['--listen', '127.0.0.1:0']. */
  args?: string[];
  /** Extra environment for the daemon. */
  env?: NodeJS.ProcessEnv;
  /**
   * Run the daemon (and so its VMs, bridges, dnsmasqs) in this network namespace, made by the
   * test with `ip netns add`. nsenter switches only the network namespace (not `ip netns exec`,
   * whose fresh /sys has no cgroup hierarchy for the VMs' confinement).
   */
  netns?: string;
}

/** Sends one request over a Unix socket. Exported for tests that need raw bodies. */
export function requestUnix(socket: string, method: string, urlPath: string, body?: unknown, rawBody?: string, headers: Record<string, string> = {}): Promise<TestResponse> {
  return new Promise((resolve, reject) => {
    const payload = rawBody ?? (body === undefined ? undefined : JSON.stringify(body));
    const req = http.request(
      {
        socketPath: socket,
        method,
        path: urlPath,
        headers: {
          ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
          ...headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          if (String(res.headers['content-type'] ?? '').includes('json') && text.length > 0) {
            try { parsed = JSON.parse(text); } catch { parsed = text; }
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return !alive(pid);
}

/** True when /proc/<pid>/cmdline mentions the data directory: guards against pid reuse. */
function belongsTo(pid: number, dataDir: string): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dataDir);
  } catch {
    return false;
  }
}

/** pids the store knows, both current and those the helper saw earlier. */
function storePids(dataDir: string): number[] {
  const file = path.join(dataDir, 'hangar.db');
  if (!fs.existsSync(file)) return [];
  try {
    const db = new Database(file, { readonly: true, fileMustExist: true });
    try {
      const rows = db.prepare('SELECT pid FROM vms WHERE pid IS NOT NULL').all() as Array<{ pid: number }>;
      return rows.map((r) => r.pid);
    } finally {
      db.close();
    }
  } catch {
    return [];
  }
}

export async function startDaemon(opts: StartDaemonOptions = {}): Promise<TestDaemon> {
  const root = projectRoot();
  const dataDir = opts.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-test-'));
  fs.mkdirSync(dataDir, { recursive: true });
  const socket = path.join(dataDir, 'hangard.sock');
  const env: NodeJS.ProcessEnv = {
    HANGAR_DATA_DIR: dataDir,
    HANGAR_SOCKET: socket,
    HANGAR_IMAGE_DIR: process.env.HANGAR_IMAGE_DIR ?? path.join(root, '.cache', 'images'),
  };
  const main = path.join(root, 'dist', 'src', 'host', 'main.js');
  let child: ChildProcess | null = null;
  const seenPids = new Set<number>();

  const launch = async (): Promise<void> => {
    const errFile = path.join(dataDir, 'hangard.stderr');
    const errFd = fs.openSync(errFile, 'a');
    // Outside a namespace of the test's own, cloud images get no default network: no test daemon may
    // make a bridge, a DHCP server or nft rules in the host's namespace (last, so no args override it).
    const argv = [main, '--data-dir', dataDir, '--socket', socket, ...(opts.args ?? []), ...(opts.netns ? [] : ['--default-network', 'none'])];
    // nsenter execs node in place: the pid the test holds is the daemon's.
    const [cmd, args] = opts.netns ? ['nsenter', [`--net=/run/netns/${opts.netns}`, process.execPath, ...argv]] : [process.execPath, argv];
    const c = spawn(cmd, args, {
      cwd: root,
      env: { ...process.env, ...env, ...opts.env },
      stdio: ['ignore', errFd, errFd],
      // Its own process group: signals aimed at the test runner's group do not reach it.
      detached: true,
    });
    fs.closeSync(errFd);
    // The test process must not wait for the daemon to end before it can exit.
    c.unref();
    child = c;
    let exited = false;
    c.once('exit', () => { exited = true; });
    const deadline = Date.now() + (opts.startTimeoutMs ?? 30_000);
    while (Date.now() < deadline) {
      if (exited) throw new Error(`hangard exited during start-up: ${fs.readFileSync(errFile, 'utf8').slice(-4000)}`);
      try {
        const r = await requestUnix(socket, 'GET', '/1.0');
        // Another daemon may answer on the same socket: only ours counts.
        if (r.status === 200 && r.body?.metadata?.pid === c.pid) { d.pid = c.pid!; return; }
      } catch { /* not listening yet */ }
      await new Promise((r) => setTimeout(r, 50));
    }
    c.kill('SIGKILL');
    throw new Error(`hangard did not answer on ${socket} within ${(opts.startTimeoutMs ?? 30_000) / 1000} s: ${fs.readFileSync(errFile, 'utf8').slice(-4000)}`);
  };

  const signalAndWait = async (sig: NodeJS.Signals, ms: number): Promise<boolean> => {
    const c = child;
    if (!c || c.pid === undefined) return true;
    for (const p of storePids(dataDir)) seenPids.add(p);
    if (c.exitCode !== null || c.signalCode !== null) { child = null; return true; }
    const done = new Promise<void>((r) => c.once('exit', () => r()));
    try { c.kill(sig); } catch { /* gone */ }
    let timer: NodeJS.Timeout | undefined;
    const ok = await Promise.race([done.then(() => true), new Promise<boolean>((r) => { timer = setTimeout(() => r(false), ms); })]);
    clearTimeout(timer);
    if (ok) child = null;
    return ok;
  };

  const d: TestDaemon = {
    dataDir,
    socket,
    pid: 0,
    env,
    request: (method, p, body) => requestUnix(socket, method, p, body),
    async kill9() {
      await signalAndWait('SIGKILL', 10_000);
    },
    async stop() {
      if (!(await signalAndWait('SIGTERM', 15_000))) await signalAndWait('SIGKILL', 10_000);
    },
    async restart() {
      await d.stop();
      await launch();
    },
    async cleanup() {
      await d.stop();
      for (const p of storePids(dataDir)) seenPids.add(p);
      const vmPids = [...seenPids].filter((p) => alive(p) && belongsTo(p, dataDir));
      for (const p of vmPids) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
      for (const p of vmPids) await waitGone(p, 5_000);
      // VMs killed here never reach a daemon again: give back their cgroups and uids as it would.
      let runDirs: string[] = [];
      try { runDirs = fs.readdirSync(path.join(dataDir, 'vms')).map((n) => path.join(dataDir, 'vms', n)); } catch { /* no VMs */ }
      for (const r of runDirs) { try { cleanupStaleSandbox(r); } catch { /* best effort */ } }
      if (!opts.dataDir || opts.dataDir.startsWith(os.tmpdir())) fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
  await launch();
  return d;
}

/** Waits for the operation behind a 202 answer and returns its final state (throws if the request was not 202). */
export async function waitOperation(d: TestDaemon, res: TestResponse, timeoutS = 300): Promise<any> {
  if (res.status !== 202) throw new Error(`expected 202, got ${res.status}: ${JSON.stringify(res.body)}`);
  const loc = String(res.headers.location);
  for (;;) {
    const w = await d.request('GET', `${loc}/wait?timeout=${timeoutS}`);
    if (w.status !== 200) throw new Error(`wait failed: ${w.status} ${JSON.stringify(w.body)}`);
    if (w.body.metadata.status !== 'running') return w.body.metadata;
  }
}

/** A client of a VM's console WebSocket that keeps everything it received. */
export class ConsoleSession {
  output = '';
  private readonly waiters = new Set<() => void>();
  closed: { code: number; reason: string } | null = null;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (m: Buffer) => {
      this.output += m.toString('utf8');
      for (const w of [...this.waiters]) w();
    });
    ws.on('close', (code: number, reason: Buffer) => {
      this.closed = { code, reason: reason.toString() };
      for (const w of [...this.waiters]) w();
    });
  }

  static open(d: TestDaemon, vm: string): Promise<ConsoleSession> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws+unix://${d.socket}:/1.0/vms/${vm}/console`);
      const s = new ConsoleSession(ws);
      ws.once('open', () => resolve(s));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`console upgrade refused: HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
  }

  send(text: string): void {
    this.ws.send(Buffer.from(text, 'utf8'));
  }

  /** Resolves when the output after `from` matches; rejects after timeoutMs or when the socket closes. */
  waitFor(pattern: string | RegExp, timeoutMs = 60_000, from = 0): Promise<string> {
    const test = (): boolean => {
      const tail = this.output.slice(from);
      return typeof pattern === 'string' ? tail.includes(pattern) : pattern.test(tail);
    };
    return new Promise((resolve, reject) => {
      if (test()) { resolve(this.output); return; }
      const timer = setTimeout(() => { this.waiters.delete(check); reject(new Error(`console: no ${String(pattern)} within ${timeoutMs} ms; got: ${JSON.stringify(this.output.slice(-500))}`)); }, timeoutMs);
      const check = (): void => {
        if (test()) { clearTimeout(timer); this.waiters.delete(check); resolve(this.output); }
        else if (this.closed) { clearTimeout(timer); this.waiters.delete(check); reject(new Error(`console closed (${this.closed.code} ${this.closed.reason}) before ${String(pattern)}`)); }
      };
      this.waiters.add(check);
    });
  }

  /** Pokes the shell with Enter until its prompt shows (it may have been printed before we joined). */
  async waitForPrompt(prompt: string, timeoutMs = 120_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      const from = this.output.length;
      this.send('\n');
      try { await this.waitFor(prompt, 2000, Math.max(0, from - prompt.length)); return; } catch (e) { if (this.closed) throw e; }
    }
    throw new Error(`console: no prompt ${JSON.stringify(prompt)} within ${timeoutMs} ms; got: ${JSON.stringify(this.output.slice(-500))}`);
  }

  /** Runs a shell command and resolves with the output that follows it, up to the next marker. */
  async run(command: string, timeoutMs = 30_000): Promise<string> {
    const marker = `__done_${Math.random().toString(36).slice(2, 8)}`;
    const from = this.output.length;
    // The marker is assembled by the shell, so the echoed command line does not match it.
    this.send(`${command}; echo ${marker.slice(0, 4)}""${marker.slice(4)}\n`);
    await this.waitFor(`${marker}\r\n`, timeoutMs, from);
    const out = this.output.slice(from);
    return out.slice(0, out.lastIndexOf(marker));
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((r) => { this.ws.once('close', () => r()); this.ws.close(); });
  }
}
