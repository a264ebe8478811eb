/**
 * The CLI's only way into Hangar: the public REST + WebSocket API, over the
 * daemon's Unix socket by default or over TCP (`--remote`) with a bearer
 * token. Envelopes are unwrapped here, so commands see plain values, and an
 * error envelope becomes a HangarError carrying the daemon's code.
 *
 * An https remote is trusted by its pinned certificate fingerprint
 * (remotes.ts): every connection checks it before the request, and the
 * token in it, is sent. Plain http is accepted for loopback addresses only.
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import { WebSocket } from 'ws';
import { connectPinned, isLoopbackHost, trustRemote } from './remotes.js';
import { HangarError, ERROR_STATUS, type ErrorCode } from '../common/errors.js';
import { socketPath } from '../common/paths.js';
import type { Operation } from '../host/api/schemas.js';

export interface Endpoint {
  /** Unix socket path, used unless `remote` is set. */
  socket: string;
  /** Base URL such as https://host:8443 for a daemon listening on TCP. */
  remote?: string;
  token?: string;
  /** Fingerprint to accept for an https remote not pinned yet (HANGAR_REMOTE_FINGERPRINT). */
  acceptFingerprint?: string;
}

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** Resolves the endpoint from the global options and the environment. */
export function resolveEndpoint(opts: { socket?: string; remote?: string }): Endpoint {
  const remote = opts.remote ?? process.env.HANGAR_REMOTE;
  const token = process.env.HANGAR_API_TOKEN;
  const ep: Endpoint = { socket: opts.socket ?? socketPath() };
  if (remote) {
    let u: URL;
    try {
      u = new URL(remote);
    } catch {
      throw new HangarError('INVALID_ARGUMENT', `--remote "${remote}" is not a URL (example: https://host:8443)`);
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') {
      throw new HangarError('INVALID_ARGUMENT', `--remote must be an http:// or https:// URL, got "${remote}"`);
    }
    if (u.protocol === 'http:' && !isLoopbackHost(u.hostname)) {
      throw new HangarError('INVALID_ARGUMENT', `--remote ${remote}: plain http would send the token in clear text; use https:// (http:// is accepted for loopback addresses only)`);
    }
    ep.remote = u.origin;
  }
  if (token) ep.token = token;
  if (process.env.HANGAR_REMOTE_FINGERPRINT) ep.acceptFingerprint = process.env.HANGAR_REMOTE_FINGERPRINT;
  return ep;
}

function isErrorCode(c: unknown): c is ErrorCode {
  return typeof c === 'string' && Object.hasOwn(ERROR_STATUS, c);
}

/** Turns an HTTP status without a usable body into the nearest error code. */
function codeForStatus(status: number): ErrorCode {
  if (status === 400) return 'INVALID_ARGUMENT';
  if (status === 401 || status === 403) return 'UNAUTHORIZED';
  if (status === 404) return 'NOT_FOUND';
  if (status === 409) return 'INVALID_STATE';
  if (status === 422) return 'UNSUPPORTED';
  if (status === 503) return 'UNAVAILABLE';
  if (status === 504) return 'TIMEOUT';
  return 'INTERNAL';
}

/** Decodes an error envelope (or anything else a failing request returned) into a HangarError. */
export function errorFromResponse(res: RawResponse): HangarError {
  const text = res.body.toString('utf8');
  try {
    const j = JSON.parse(text) as { type?: string; error?: { code?: unknown; message?: unknown; details?: unknown }; message?: unknown; code?: unknown };
    if (j && j.type === 'error' && j.error && typeof j.error.message === 'string') {
      const code = isErrorCode(j.error.code) ? j.error.code : codeForStatus(res.status);
      const details = j.error.details && typeof j.error.details === 'object' ? (j.error.details as Record<string, unknown>) : undefined;
      return new HangarError(code, j.error.message, details);
    }
    // A framework-level error that escaped the envelope (e.g. fastify's own 404 body).
    if (j && typeof j.message === 'string') return new HangarError(isErrorCode(j.code) ? j.code : codeForStatus(res.status), j.message);
  } catch {
    /* not JSON: fall through */
  }
  const snippet = text.trim().slice(0, 200);
  return new HangarError(codeForStatus(res.status), `the daemon answered HTTP ${res.status}${snippet ? `: ${snippet}` : ''}`);
}

export interface AsyncResult {
  operation: Operation;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class ApiClient {
  private trusted: Promise<string> | null = null;

  constructor(readonly endpoint: Endpoint) {}

  /** For an https remote: the pinned fingerprint, pinning it first if the user accepts it. */
  private pinned(): Promise<string> | null {
    const remote = this.endpoint.remote;
    if (!remote || !remote.startsWith('https:')) return null;
    this.trusted ??= trustRemote(remote, this.endpoint.acceptFingerprint);
    return this.trusted;
  }

  /** Connection options for a request to the remote: TLS checked against the pin, before anything is sent. */
  private async connectOptions(): Promise<{ createConnection?: (o: unknown, cb: (err: Error | null, s?: Socket) => void) => undefined }> {
    const pin = this.pinned();
    if (!pin) return {};
    const fp = await pin;
    const origin = this.endpoint.remote!;
    return { createConnection: (_o, cb) => { connectPinned(origin, fp, cb); return undefined; } };
  }

  /** Where the daemon is, in words, for messages. */
  describe(): string {
    return this.endpoint.remote ?? `unix:${this.endpoint.socket}`;
  }

  /** One HTTP exchange; resolves with whatever came back, rejects only when the daemon cannot be reached. */
  async raw(method: string, path: string, body?: unknown, timeoutMs = 0): Promise<RawResponse> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string | number> = { accept: 'application/json' };
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = payload.length;
    }
    return this.exchange(method, path, headers, timeoutMs, (req) => req.end(payload));
  }

  /**
   * Sends a file as an application/octet-stream body (image uploads);
   * `onBytes` hears how many bytes have gone out so far.
   */
  async upload(method: string, path: string, file: string, size: number, onBytes?: (sent: number) => void): Promise<RawResponse> {
    const headers = { accept: 'application/json', 'content-type': 'application/octet-stream', 'content-length': size };
    return this.exchange(method, path, headers, 0, (req) => {
      const input = fs.createReadStream(file, { start: 0, end: Math.max(0, size - 1) });
      let sent = 0;
      input.on('data', (c) => { sent += c.length; onBytes?.(sent); });
      input.on('error', (e) => req.destroy(new HangarError('INVALID_ARGUMENT', `cannot read ${file}: ${e.message}`)));
      input.pipe(req);
    });
  }

  /**
   * Streams a GET answer into `file` (volume export): written under a hidden
   * name beside it and renamed when complete, so a cut-off download leaves no
   * file behind. `onBytes` hears received and total (Content-Length) bytes.
   */
  async download(path: string, file: string, onBytes?: (received: number, total: number) => void): Promise<{ bytes: number; headers: http.IncomingHttpHeaders }> {
    const headers: Record<string, string> = { accept: 'application/octet-stream' };
    if (this.endpoint.token) headers.authorization = `Bearer ${this.endpoint.token}`;
    const ep = this.endpoint;
    const conn = await this.connectOptions();
    const part = `${file}.part-${process.pid}`;
    return new Promise((resolve, reject) => {
      const onRes = (res: http.IncomingMessage) => {
        if ((res.statusCode ?? 0) >= 400) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => reject(errorFromResponse({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) })));
          return;
        }
        const total = Number(res.headers['content-length'] ?? 0);
        let received = 0;
        const output = fs.createWriteStream(part, { flags: 'wx', mode: 0o600 });
        const fail = (e: Error) => { output.destroy(); fs.rmSync(part, { force: true }); reject(e instanceof HangarError ? e : new HangarError('UNAVAILABLE', `download of ${path} failed: ${e.message}`)); };
        res.on('data', (c: Buffer) => { received += c.length; onBytes?.(received, total); });
        res.on('aborted', () => fail(new Error('the daemon ended the download early')));
        res.on('error', fail);
        output.on('error', (e) => { res.destroy(); fail(new HangarError('INVALID_ARGUMENT', `cannot write ${file}: ${e.message}`)); });
        output.on('finish', () => {
          if (total > 0 && received !== total) { fail(new Error(`got ${received} of ${total} bytes`)); return; }
          fs.renameSync(part, file);
          resolve({ bytes: received, headers: res.headers });
        });
        res.pipe(output);
      };
      const req = ep.remote
        ? (new URL(path, ep.remote).protocol === 'https:' ? https : http).request(new URL(path, ep.remote), { method: 'GET', headers, ...(conn as object) }, onRes)
        : http.request({ socketPath: ep.socket, path, method: 'GET', headers }, onRes);
      req.on('error', (e: NodeJS.ErrnoException) => reject(e instanceof HangarError ? e : this.unreachable(e)));
      req.end();
    });
  }

  private async exchange(method: string, path: string, headers: Record<string, string | number>, timeoutMs: number, send: (req: http.ClientRequest) => void): Promise<RawResponse> {
    if (this.endpoint.token) headers.authorization = `Bearer ${this.endpoint.token}`;
    const ep = this.endpoint;
    const conn = await this.connectOptions();
    return new Promise((resolve, reject) => {
      let req: http.ClientRequest;
      const onRes = (res: http.IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      };
      if (ep.remote) {
        const u = new URL(path, ep.remote);
        const mod = u.protocol === 'https:' ? https : http;
        req = mod.request(u, { method, headers, ...(conn as object) }, onRes);
      } else {
        req = http.request({ socketPath: ep.socket, path, method, headers }, onRes);
      }
      if (timeoutMs > 0) req.setTimeout(timeoutMs, () => req.destroy(new HangarError('TIMEOUT', `no answer from the daemon within ${timeoutMs} ms`)));
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (e instanceof HangarError) return reject(e);
        reject(this.unreachable(e));
      });
      send(req);
    });
  }

  private unreachable(e: NodeJS.ErrnoException): HangarError {
    const where = this.describe();
    const hint = this.endpoint.remote ? '' : ' (start it with `hangar daemon start`)';
    if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
      return new HangarError('UNAVAILABLE', `the Hangar daemon is not running at ${where}${hint}`, { cause: e.code });
    }
    if (e.code === 'EACCES') return new HangarError('UNAVAILABLE', `permission denied on ${where} (run as the daemon's user or root)`, { cause: e.code });
    return new HangarError('UNAVAILABLE', `cannot reach the Hangar daemon at ${where}: ${e.message}`, e.code ? { cause: e.code } : undefined);
  }

  /** Sends a request and unwraps the envelope: sync → metadata, async → the operation. */
  async call<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.raw(method, path, body);
    if (res.status >= 400) throw errorFromResponse(res);
    let j: { type?: string; metadata?: unknown };
    try {
      j = JSON.parse(res.body.toString('utf8')) as typeof j;
    } catch {
      throw new HangarError('INTERNAL', `the daemon answered ${method} ${path} with something that is not JSON`);
    }
    if (j.type === 'error') throw errorFromResponse(res);
    if (j.type === 'sync' || j.type === 'async') return j.metadata as T;
    // Routes such as /openapi.json answer without an envelope.
    return j as T;
  }

  get<T = unknown>(path: string): Promise<T> {
    return this.call<T>('GET', path);
  }

  /** Plain-text routes (console logs). */
  async text(path: string): Promise<string> {
    const res = await this.raw('GET', path);
    if (res.status >= 400) throw errorFromResponse(res);
    return res.body.toString('utf8');
  }

  /** True when the daemon answers GET /1.0 at all. */
  async ping(timeoutMs = 2000): Promise<boolean> {
    try {
      const res = await this.raw('GET', '/1.0', undefined, timeoutMs);
      return res.status < 500;
    } catch {
      return false;
    }
  }

  /**
   * Waits for an operation to finish, calling `onUpdate` with each state seen
   * so callers can show progress. Uses the blocking wait route in short
   * slices, so progress is refreshed about once a second without busy polling.
   * A failed operation is thrown as a HangarError with the operation's code.
   */
  async waitOperation(id: string, onUpdate?: (op: Operation) => void, timeoutS = 0): Promise<Operation> {
    const deadline = timeoutS > 0 ? Date.now() + timeoutS * 1000 : Infinity;
    const path = `/1.0/operations/${encodeURIComponent(id)}/wait?timeout=1`;
    for (;;) {
      const op = await this.get<Operation>(path);
      onUpdate?.(op);
      if (op.status === 'success') return op;
      if (op.status === 'failure') {
        const code = isErrorCode(op.error?.code) ? op.error.code : 'INTERNAL';
        throw new HangarError(code, op.error?.message ?? `operation ${op.id} failed`, { operation: op.id });
      }
      if (Date.now() > deadline) throw new HangarError('TIMEOUT', `operation ${id} is still running after ${timeoutS} s`, { operation: id });
      // The wait route returns after its timeout; a daemon that answers at once anyway must not be hammered.
      await sleep(200);
    }
  }

  /**
   * Opens a WebSocket to an API path, over the Unix socket or the remote URL.
   * It comes back paused: attach the 'message' listener, then call resume().
   */
  async websocket(path: string): Promise<WebSocket> {
    const ep = this.endpoint;
    const headers: Record<string, string> = {};
    if (ep.token) headers.authorization = `Bearer ${ep.token}`;
    const url = ep.remote ? new URL(path, ep.remote.replace(/^http/, 'ws')).toString() : `ws+unix://${ep.socket}:${path}`;
    const conn = await this.connectOptions();
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers, ...(conn as object) });
      const fail = (e: HangarError) => {
        ws.removeAllListeners();
        ws.on('error', () => {});
        ws.terminate();
        reject(e);
      };
      ws.once('open', () => {
        ws.removeAllListeners('unexpected-response');
        // Paused until the caller has its listeners in place: frames that arrive right
        // behind the upgrade answer would otherwise be emitted to nobody and lost.
        ws.pause();
        resolve(ws);
      });
      ws.once('unexpected-response', (_req, res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => fail(errorFromResponse({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) })));
        res.on('error', () => fail(new HangarError('UNAVAILABLE', `WebSocket ${path} refused with HTTP ${res.statusCode}`)));
      });
      ws.once('error', (e: NodeJS.ErrnoException) => fail(this.unreachable(e)));
    });
  }
}
