/**
 * Test helpers for the CLI's unit tests: a fake daemon (HTTP + WebSocket on a
 * temporary Unix socket, answering whatever each test scripts). The runner
 * that executes the real `hangar` entry point is in test/helpers/cli.ts.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';

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
    try {
      // An upgraded socket is no longer the server's to close: do not let one keep the folder alive.
      await Promise.race([new Promise<void>((r) => this.server.close(() => r())), new Promise<void>((r) => setTimeout(r, 2000).unref())]);
    } finally {
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
  }

  /** Environment for a CLI child that should talk to this fake. */
  env(): NodeJS.ProcessEnv {
    return { HANGAR_SOCKET: this.socket, HANGAR_DATA_DIR: this.dir };
  }
}

// The CLI runner lives in test/helpers/cli.ts (end-to-end tests use it too); re-exported for the unit tests.
export { expectOk, hangarArgv, HangarProcess, runHangar, type CliResult } from '../helpers/cli.js';
