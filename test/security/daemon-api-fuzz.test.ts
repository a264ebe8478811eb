/**
 * Malformed requests against a real daemon, from a seeded generator: random
 * methods, paths (traversal, encodings, unicode, huge), query strings,
 * headers, and bodies (broken JSON, wrong types, huge values, oversize).
 * Every answer must be a 4xx in our error envelope (a GET of a real list may
 * answer 200), never a 5xx, never a hang; the daemon stays up; and what it
 * holds (VMs, images, operations, events, files in the image store) is
 * exactly what it was before.
 *
 * The suite runs a fixed seed and HANGAR_FUZZ_COUNT requests (default
 * 10 000) over the Unix socket with keep-alive; set HANGAR_FUZZ_SEED and a
 * larger HANGAR_FUZZ_COUNT for longer runs. A failure prints the seed and
 * the request that failed.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';

const SEED = Number(process.env.HANGAR_FUZZ_SEED ?? 0x5eed6);
const COUNT = Number(process.env.HANGAR_FUZZ_COUNT ?? 10_000);
/** One request that takes longer than this has hung. */
const HANG_MS = 15_000;

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface FuzzRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
}

class Gen {
  constructor(private readonly r: () => number) {}
  int(n: number): number { return Math.floor(this.r() * n); }
  pick<T>(xs: readonly T[]): T { return xs[this.int(xs.length)]!; }
  chance(p: number): boolean { return this.r() < p; }
  str(max: number, alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789-_.'): string {
    let s = '';
    const n = this.int(max + 1);
    for (let i = 0; i < n; i++) s += alphabet[this.int(alphabet.length)];
    return s;
  }
  unicode(max: number): string {
    const pool = ['é', 'ß', '名前', '🚀', '\u202e', '\u0000', '\uffff', '\ud800', 'Ａ', '\u200b', '%', '\\', '"', "'", '<', '>', '\n'];
    let s = '';
    const n = this.int(max + 1);
    for (let i = 0; i < n; i++) s += this.pick(pool);
    return s;
  }
}

/** Percent-encodes every byte of the UTF-8 form (lone surrogates become U+FFFD, as on the wire). */
function pct(s: string): string {
  return [...Buffer.from(s, 'utf8')].map((b) => `%${b.toString(16).padStart(2, '0').toUpperCase()}`).join('');
}

const ROUTES = [
  '/1.0', '/1.0/host', '/1.0/images', '/1.0/images/tiny', '/1.0/images/uploads', '/1.0/images/uploads/ID/kernel',
  '/1.0/vms', '/1.0/vms/NAME', '/1.0/vms/NAME/state', '/1.0/vms/NAME/logs', '/1.0/vms/NAME/console',
  '/1.0/operations', '/1.0/operations/ID', '/1.0/operations/ID/wait', '/1.0/events', '/openapi.json',
];
const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS', 'TRACE', 'PROPFIND', 'get'];

function segment(g: Gen): string {
  return g.pick([
    () => g.str(12), () => '..', () => '%2e%2e', () => '..%2f..%2fetc%2fpasswd', () => '%00', () => '%', () => '%zz', () => '%C0%AE',
    () => pct(g.unicode(6)), () => g.str(300), () => 'a'.repeat(5000 + g.int(70_000)), () => '', () => '~root', () => '*',
    () => 'Tiny', () => 'NAME', () => '-rf', () => '1.0', () => '.hidden', () => 'CON', () => '%252e%252e',
  ])();
}

function fuzzPath(g: Gen): string {
  const base = g.pick(ROUTES).replace('NAME', () => segment(g)).replace('ID', () => segment(g));
  let p = g.pick([
    () => base,
    () => `${base}/${segment(g)}`,
    () => `/1.0/${segment(g)}/${segment(g)}`,
    () => `/${segment(g)}`,
    () => base.replace(/\//g, g.pick(['//', '/./', '/../', '\\'])),
    () => `/1.0/vms/../../../../etc/shadow`,
    () => `/1.0/images/..%2F..%2F..%2Fetc%2Fshadow`,
    () => `${base}#frag`,
  ])();
  if (g.chance(0.5)) {
    const q = Array.from({ length: 1 + g.int(4) }, () => g.pick([
      () => `timeout=${g.pick(['-1', '1e9', '99999999999999999999', 'NaN', '', '0x10', '1.5', ' 1'])}`,
      () => `tail=${g.pick(['-5', 'abc', '1e3', '', '9'.repeat(30)])}`,
      () => `force=${g.pick(['yes', '2', 'TRUE', '', '[]'])}`,
      () => `since=${g.pick(['-1', 'x', '1.5', '9'.repeat(40)])}`,
      () => `vm=${pct(g.unicode(5))}`,
      () => `${g.str(8)}=${g.str(8)}`,
      () => `${'x'.repeat(g.int(9000))}`,
      () => `a[b][c]=1`, () => `__proto__=1`, () => `constructor[prototype][x]=1`, () => '%', () => '&&&',
    ])());
    p += `?${q.join('&')}`;
  }
  // Node's client sends no spaces or control characters in a path (the raw requests below do).
  return p.replace(/[^\u0021-\u007e]/g, (c) => pct(c));
}

const JSON_VALUES = (g: Gen): unknown => g.pick<() => unknown>([
  () => null, () => true, () => -1, () => 0, () => 1e308, () => -0, () => 2 ** 53 + 1, () => 1.5, () => '', () => g.unicode(20),
  () => 'x'.repeat(g.int(3000)), () => [], () => [1, 'a', null], () => ({}), () => ({ __proto__: { polluted: 1 } }),
  () => '128PiB', () => '../../etc/shadow', () => '/etc/shadow', () => 'tiny', () => { const o: Record<string, unknown> = {}; let c = o; for (let i = 0; i < 200; i++) { c.a = {}; c = c.a as Record<string, unknown>; } return o; },
])();

/** A JSON body that is wrong in some way for every route that takes one. */
function badBody(g: Gen): Buffer {
  const kind = g.int(10);
  switch (kind) {
    case 0: return Buffer.from(g.pick(['{', '{"name":', '[1,2', '{"a":1}}', 'nul', '"unterminated', '{name: "x"}', "{'a':1}", '\u0000', '{"a":1,}']));
    case 1: return Buffer.from(g.unicode(50));
    case 2: return Buffer.alloc(g.int(2000), g.int(256));
    case 3: return Buffer.from(JSON.stringify(JSON_VALUES(g)));
    case 4: {
      // The right field names with the wrong values (wrong types, huge, traversal), or one field too many.
      const o: Record<string, unknown> = {};
      for (const k of ['name', 'image', 'cpus', 'memory', 'engine', 'start', 'cmdline', 'kernel', 'initrd', 'action', 'force', 'timeout', 'kernelBytes', 'initrdBytes', 'description']) {
        if (g.chance(0.4)) o[k] = JSON_VALUES(g);
      }
      o[g.pick(['extra', '__proto__', 'constructor', 'évil', ''])] = 1;
      return Buffer.from(JSON.stringify(o));
    }
    case 5: return Buffer.from(JSON.stringify({ name: g.pick(['', 'A', '-x', '1a', 'x'.repeat(64), 'a/b', '..', 'a b']), image: 'tiny' }));
    case 6: return Buffer.from(JSON.stringify({ action: g.pick(['explode', '', 'START', 'start ', 1, null]), timeout: g.pick([-1, 'x', 1e12]) }));
    case 7: return Buffer.from(JSON.stringify({ name: 'fz', kernel: g.pick(['/etc/shadow', '../../etc/passwd', 'relative', '/proc/self/mem', '/dev/zero', '']), initrd: g.pick(['/etc/shadow', '/dev/urandom']) }));
    case 8: return Buffer.from(JSON.stringify({ name: 'fz', kernelBytes: g.pick([0, -1, 1.5, 2 ** 60, '100', null]) }));
    default: return Buffer.alloc(1024 * 1024 + 1 + g.int(4096), 0x20); // over the body limit
  }
}

function fuzzRequest(g: Gen): FuzzRequest {
  const method = g.chance(0.85) ? g.pick(['GET', 'POST', 'PUT', 'DELETE']) : g.pick(METHODS);
  const headers: Record<string, string> = {};
  let body: Buffer | undefined;
  if (method !== 'GET' && method !== 'HEAD' && g.chance(0.85)) {
    body = badBody(g);
    headers['content-type'] = g.pick([
      'application/json', 'application/json', 'application/json; charset=utf-16', 'text/plain', 'application/octet-stream',
      'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded', 'application/json; charset="\u00e9"', '', '*/*',
    ]);
    if (headers['content-type'] === '') delete headers['content-type'];
  }
  if (g.chance(0.3)) headers[g.pick(['accept', 'x-forwarded-for', 'authorization', 'cookie', 'x-' + g.str(10), 'range', 'expect', 'origin'])] =
    g.pick(['*/*', '127.0.0.1', 'Bearer ' + g.str(40), 'a=b', g.str(200, 'abc!#$%&*+-.^_`|~'), 'bytes=0-1', '100-continue', 'null']);
  if (g.chance(0.05)) headers['x-big'] = 'y'.repeat(8000 + g.int(8000));
  if (g.chance(0.1)) headers.upgrade = 'websocket';
  return { method, path: fuzzPath(g), headers, ...(body ? { body } : {}) };
}

/** Requests Node's client cannot send (broken request lines and headers) go out on a raw socket. */
function rawRequest(g: Gen): string {
  return g.pick([
    () => `GET /1.0 HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n`,
    () => `POST /1.0/vms HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n{}`,
    () => `POST /1.0/vms HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nzz\r\n`,
    () => `GET ${'/x'.repeat(40_000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
    () => `GET /1.0 HTTP/9.9\r\n\r\n`,
    () => `\u0000\u0001\u0002garbage\r\n\r\n`,
    () => `GET /1.0 HTTP/1.1\r\nBad Header\r\n\r\n`,
    () => `GET /1.0 HTTP/1.1\r\nHost: x\r\nX: ${'a'.repeat(20_000)}\r\n\r\n`,
    () => `GET /1.0/vms/\u00e9\u0000 HTTP/1.1\r\nHost: x\r\n\r\n`,
    () => `PUT /1.0/images/uploads/x/kernel HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffff\r\n`,
  ])();
}

let d: TestDaemon;
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

function send(r: FuzzRequest): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    let req: http.ClientRequest | null = null;
    const timer = setTimeout(() => { req?.destroy(new Error(`no answer within ${HANG_MS} ms`)); }, HANG_MS);
    req = http.request({ socketPath: d.socket, agent, method: r.method, path: r.path, headers: { ...r.headers, ...(r.body ? { 'content-length': String(r.body.length) } : {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => { clearTimeout(timer); resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), headers: res.headers }); });
      res.on('error', (e) => { clearTimeout(timer); reject(e); });
    });
    req.on('error', (e) => { clearTimeout(timer); reject(e); });
    req.end(r.body);
  });
}

function sendRaw(text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(d.socket);
    let got = '';
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`raw request: no answer or close within ${HANG_MS} ms`)); }, HANG_MS);
    s.on('data', (c: Buffer) => { got += c.toString('latin1'); });
    s.on('error', () => { /* a reset counts as closed */ });
    s.on('close', () => { clearTimeout(timer); resolve(got); });
    s.end(text, 'latin1');
  });
}

/** What the daemon holds: compared before and after. */
async function snapshot(): Promise<string> {
  const get = async (p: string): Promise<unknown> => JSON.parse((await send({ method: 'GET', path: p, headers: {} })).body).metadata;
  const files = (dir: string): string[] => { try { return fs.readdirSync(dir).sort(); } catch { return []; } };
  return JSON.stringify({
    vms: await get('/1.0/vms'),
    images: await get('/1.0/images'),
    operations: await get('/1.0/operations'),
    events: await get('/1.0/events'),
    localImages: files(path.join(d.dataDir, 'local-images')),
    vmDirs: files(path.join(d.dataDir, 'vms')),
  });
}

before(async () => {
  d = await startDaemon();
  // Something to leave alone: a VM that exists (not started) and its event.
  const r = await d.request('POST', '/1.0/vms', { name: 'keep', image: 'tiny', start: false });
  assert.equal(r.status, 202);
  await d.request('GET', `${String(r.headers.location)}/wait?timeout=60`);
});

after(async () => {
  agent.destroy();
  await d?.cleanup();
});

test(`daemon API fuzz: ${COUNT} malformed requests (seed ${SEED}) get 4xx, never 5xx or a hang; the daemon's state is unchanged`, { timeout: 30 * 60_000 }, async () => {
  const before = await snapshot();
  const g = new Gen(prng(SEED));
  const statuses = new Map<number, number>();
  const started = Date.now();
  for (let i = 0; i < COUNT; i++) {
    if (g.chance(0.03)) {
      const text = rawRequest(g);
      const answer = await sendRaw(text);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      // Node's parser answers 400/413/431 or just closes: either way, no 5xx.
      assert.ok(status === 0 || (status >= 400 && status < 500), `seed ${SEED} #${i}: raw ${JSON.stringify(text.slice(0, 200))} → ${answer.slice(0, 300)}`);
      continue;
    }
    const r = fuzzRequest(g);
    let res;
    try {
      res = await send(r);
    } catch (e) {
      // Oversize headers or URLs: Node answers 431/414 and may close; the agent reports the close.
      const tooBig = JSON.stringify(r.headers).length > 8000 || r.path.length > 8000 || (r.body?.length ?? 0) > 1024 * 1024;
      if (tooBig && /socket hang up|ECONNRESET|EPIPE/.test(String(e))) { statuses.set(-1, (statuses.get(-1) ?? 0) + 1); continue; }
      assert.fail(`seed ${SEED} #${i}: ${r.method} ${r.path.slice(0, 200)} ${JSON.stringify(r.headers).slice(0, 200)} body ${r.body?.length ?? 0} bytes failed: ${String(e)}`);
    }
    statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    const where = `seed ${SEED} #${i}: ${r.method} ${r.path.slice(0, 200)} ${JSON.stringify(r.headers).slice(0, 200)} body ${r.body?.subarray(0, 200).toString('utf8') ?? '-'} → ${res.status} ${res.body.slice(0, 300)}`;
    assert.ok(res.status < 500, where);
    const readOnly = r.method === 'GET' || r.method === 'HEAD' || r.method === 'get';
    if (res.status < 400) {
      // Only reads may succeed; a write with a malformed request must not.
      assert.ok(readOnly || r.method === 'OPTIONS', where);
      continue;
    }
    // 4xx answers from the API come in our envelope (HEAD has no body; Node's own 431/414 have none either).
    if (r.method !== 'HEAD' && res.status !== 431 && res.status !== 414 && res.body.length > 0) {
      const j = JSON.parse(res.body) as { type?: string; error?: { code?: string; message?: string } };
      assert.equal(j.type, 'error', where);
      assert.equal(typeof j.error?.code, 'string', where);
    }
  }
  const ms = Date.now() - started;
  // The daemon is still up and nothing it holds changed.
  assert.equal((await d.request('GET', '/1.0')).body.metadata.pid, d.pid);
  assert.equal(await snapshot(), before);
  const summary = [...statuses.entries()].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s === -1 ? 'closed' : s}:${n}`).join(' ');
  console.log(`# fuzz: ${COUNT} requests, seed ${SEED}, ${ms} ms (${Math.round(COUNT / (ms / 1000))}/s); statuses ${summary}`);
});
