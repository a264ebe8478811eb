/**
 * The UI's only way to the daemon: its public REST API with the token in the
 * Authorization header, and WebSockets opened with a single-use ticket
 * (docs/ui.md). The token lives in sessionStorage: gone with the tab,
 * never in a URL, never in a cookie (so no CSRF).
 */
import type { Operation } from './types';

const TOKEN_KEY = 'hangar.token';

export class ApiError extends Error {
  constructor(readonly code: string, message: string, readonly status: number) {
    super(message);
  }
}

let onUnauthorized: () => void = () => {};
export function setUnauthorizedHandler(f: () => void): void { onUnauthorized = f; }

export function getToken(): string | null { return sessionStorage.getItem(TOKEN_KEY); }
export function setToken(t: string): void { sessionStorage.setItem(TOKEN_KEY, t); }
export function clearToken(): void { sessionStorage.removeItem(TOKEN_KEY); }

interface Envelope { type: 'sync' | 'async' | 'error'; metadata?: unknown; error?: { code: string; message: string } }

async function request(method: string, path: string, body?: unknown, token = getToken()): Promise<Envelope> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(path, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}), cache: 'no-store', credentials: 'omit' });
  } catch (e) {
    throw new ApiError('UNAVAILABLE', `the daemon did not answer: ${(e as Error).message}`, 0);
  }
  const text = await res.text();
  let env: Envelope;
  try {
    env = JSON.parse(text) as Envelope;
  } catch {
    throw new ApiError(res.ok ? 'INTERNAL' : `HTTP_${res.status}`, text.slice(0, 300) || `HTTP ${res.status}`, res.status);
  }
  if (env.type === 'error' || !res.ok) {
    const err = env.error ?? { code: `HTTP_${res.status}`, message: `HTTP ${res.status}` };
    if (res.status === 401 && token) onUnauthorized();
    throw new ApiError(err.code, err.message, res.status);
  }
  return env;
}

/** A text answer (the console log); an error envelope still becomes an ApiError. */
export async function getText(path: string): Promise<string> {
  const token = getToken();
  const res = await fetch(path, { headers: token ? { authorization: `Bearer ${token}` } : {}, cache: 'no-store', credentials: 'omit' });
  const text = await res.text();
  if (!res.ok) {
    let err = { code: `HTTP_${res.status}`, message: text.slice(0, 300) };
    try { err = (JSON.parse(text) as { error: typeof err }).error; } catch { /* not JSON */ }
    throw new ApiError(err.code, err.message, res.status);
  }
  return text;
}

export async function get<T>(path: string): Promise<T> {
  return (await request('GET', path)).metadata as T;
}

/** GET that answers null when the route does not exist (yet): for optional features such as metrics. */
export async function getOptional<T>(path: string): Promise<T | null> {
  try {
    return await get<T>(path);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404 && e.code === 'NOT_FOUND' && /^no route /.test(e.message)) return null;
    throw e;
  }
}

/** A request that changes something: the sync answer's metadata, or the operation of an async one. */
export async function send<T = unknown>(method: string, path: string, body?: unknown): Promise<{ sync?: T; operation?: Operation }> {
  const env = await request(method, path, body);
  return env.type === 'async' ? { operation: env.metadata as Operation } : { sync: env.metadata as T };
}

/** Waits for an operation to end (long requests, not polling); calls onProgress with each state seen. Throws its error. */
export async function waitOperation(op: Operation, onProgress?: (op: Operation) => void): Promise<Operation> {
  let cur = op;
  onProgress?.(cur);
  while (cur.status === 'running' || cur.status === 'pending') {
    cur = await get<Operation>(`/1.0/operations/${encodeURIComponent(cur.id)}/wait?timeout=30`);
    onProgress?.(cur);
  }
  if (cur.status !== 'success') throw new ApiError(cur.error?.code ?? 'FAILED', cur.error?.message ?? `operation ${cur.status}`, 0);
  return cur;
}

/** Runs a change and waits for its operation when it is async. */
export async function act<T = unknown>(method: string, path: string, body?: unknown, onProgress?: (op: Operation) => void): Promise<T | Operation | undefined> {
  const r = await send<T>(method, path, body);
  if (r.operation) return waitOperation(r.operation, onProgress);
  return r.sync;
}

/** Exchanges a one-time login code for the token (POST /1.0/ui/login, no token needed). */
export async function exchangeLoginCode(code: string): Promise<string> {
  const env = await request('POST', '/1.0/ui/login', { code }, null);
  return (env.metadata as { token: string }).token;
}

/** Checks a token by reading GET /1.0 with it. */
export async function checkToken(token: string): Promise<void> {
  await request('GET', '/1.0', undefined, token);
}

/** Opens an authenticated WebSocket: a ticket first (token in the header), then the ticket as a subprotocol. */
export async function openSocket(path: string): Promise<WebSocket> {
  return new WebSocket(socketUrl(path), await socketProtocols());
}

export function socketUrl(path: string): string {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path}`;
}

/** A fresh ticket's subprotocols (for noVNC, which opens its own socket). */
export async function socketProtocols(): Promise<string[]> {
  const r = await send<{ protocols: string[] }>('POST', '/1.0/ui/ws-tickets');
  return r.sync!.protocols;
}

/**
 * PUTs a file's bytes as application/octet-stream, streamed by the browser,
 * reporting how many bytes went out (XMLHttpRequest: fetch cannot tell upload
 * progress). `signal` aborts it. An error answer becomes an ApiError.
 */
export function putFile<T>(path: string, file: Blob, onSent?: (bytes: number) => void, signal?: AbortSignal): Promise<T> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', path);
    const token = getToken();
    if (token) xhr.setRequestHeader('authorization', `Bearer ${token}`);
    xhr.setRequestHeader('content-type', 'application/octet-stream');
    xhr.withCredentials = false;
    xhr.upload.onprogress = (e) => onSent?.(e.loaded);
    xhr.onload = () => {
      let env: Envelope | null = null;
      try { env = JSON.parse(xhr.responseText) as Envelope; } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300 && env && env.type !== 'error') { resolve(env.metadata as T); return; }
      const err = env?.error ?? { code: `HTTP_${xhr.status}`, message: xhr.responseText.slice(0, 300) || `HTTP ${xhr.status}` };
      if (xhr.status === 401 && token) onUnauthorized();
      reject(new ApiError(err.code, err.message, xhr.status));
    };
    xhr.onerror = () => reject(new ApiError('UNAVAILABLE', 'the upload was cut off (the daemon closed the connection)', 0));
    xhr.onabort = () => reject(new ApiError('CANCELLED', 'upload cancelled', 0));
    signal?.addEventListener('abort', () => xhr.abort(), { once: true });
    xhr.send(file);
  });
}
