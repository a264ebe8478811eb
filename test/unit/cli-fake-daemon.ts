/**
 * Test helpers for the CLI: a fake daemon (HTTP + WebSocket on a temporary
 * Unix socket, answering whatever each test scripts) and a runner that
 * executes the real `hangar` entry point as a child process.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { WebSocketServer, type WebSocket } from 'ws';
import { projectRoot } from '../../src/common/paths.js';

export interface RecordedRequest {
  method: string;
  url: string;
  body: unknown;
}

export interface FakeAnswer {
  status?: number;
  /** JSON body (default) or, with `text`, a plain-text body. */
  json?: unknown;
  text?: string;
  /** Wait this long before answering (simulates the blocking wait route). */
  delayMs?: number;
}

export type Handler = (req: RecordedRequest) => FakeAnswer | Promise<FakeAnswer>;

export const sync = (metadata: unknown): FakeAnswer => ({ status: 200, json: { type: 'sync', metadata } });
export const asyncOp = (op: unknown): FakeAnswer => ({ status: 202, json: { type: 'async', operation: `/1.0/operations/${(op as { id: string }).id}`, metadata: op } });
export const errorEnv = (status: number, code: string, message: string): FakeAnswer => ({ status, json: { type: 'error', error: { code, message } } });

export function operation(id: string, status: 'running' | 'success' | 'failure', extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { id, description: 'test operation', status, resources: { vms: [] }, createdAt: '2026-11-26T09:00:00.000Z', updatedAt: '2026-11-26T09:00:01.000Z', ...extra };
}

export class FakeDaemon {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-cli-fake-'));
  readonly socket = path.join(this.dir, 'hangard.sock');
  readonly requests: RecordedRequest[] = [];
  private readonly routes = new Map<string, Handler>();
  private readonly wsRoutes = new Map<string, (ws: WebSocket) => void>();
  private readonly server: http.Server;
  private readonly wss = new WebSocketServer({ noServer: true });

  constructor() {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', async () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const rec: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', body: raw ? JSON.parse(raw) : undefined };
        this.requests.push(rec);
        const h = this.routes.get(`${rec.method} ${rec.url}`) ?? this.routes.get(`${rec.method} ${rec.url.split('?')[0]}`);
        const a: FakeAnswer = h ? await h(rec) : errorEnv(404, 'NOT_FOUND', `no route ${rec.method} ${rec.url}`);
        if (a.delayMs) await new Promise((r) => setTimeout(r, a.delayMs));
        if (a.text !== undefined) {
          res.writeHead(a.status ?? 200, { 'content-type': 'text/plain' });
          res.end(a.text);
        } else {
          res.writeHead(a.status ?? 200, { 'content-type': 'application/json' });
          res.end(JSON.stringify(a.json ?? null));
        }
      });
    });
    this.server.on('upgrade', (req, socket, head) => {
      const h = this.wsRoutes.get((req.url ?? '').split('?')[0]!);
      this.requests.push({ method: 'WS', url: req.url ?? '', body: undefined });
      if (!h) {
        socket.end('HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n\r\n' + JSON.stringify({ type: 'error', error: { code: 'NOT_FOUND', message: 'VM "nope" not found' } }));
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => h(ws));
    });
  }

  on(method: string, url: string, h: Handler | FakeAnswer): this {
    this.routes.set(`${method} ${url}`, typeof h === 'function' ? h : () => h);
    return this;
  }

  onWebSocket(url: string, h: (ws: WebSocket) => void): this {
    this.wsRoutes.set(url, h);
    return this;
  }

  listen(): Promise<this> {
    return new Promise((resolve) => this.server.listen(this.socket, () => resolve(this)));
  }

  async close(): Promise<void> {
    for (const c of this.wss.clients) c.terminate();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** Environment for a CLI child that should talk to this fake. */
  env(): NodeJS.ProcessEnv {
    return { HANGAR_SOCKET: this.socket, HANGAR_DATA_DIR: this.dir };
  }
}

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
