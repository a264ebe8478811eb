/**
 * Image uploads through the API (POST /1.0/images/uploads, then PUT of each
 * part) against the real routes, image store and operation manager, over a
 * real Unix socket: the happy path with progress on the operation, and every
 * way an upload can go wrong ending the import with nothing left behind.
 */
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import { pino } from 'pino';
import type { FastifyInstance } from 'fastify';
import { Store } from '../../src/host/store.js';
import { OperationManager } from '../../src/host/operations.js';
import { EventBus } from '../../src/host/events.js';
import { registryOf } from '../helpers/engines.js';
import { HostChecker } from '../../src/host/hostcheck.js';
import { VmManager } from '../../src/host/vms.js';
import { buildServer } from '../../src/host/server.js';
import { deleteImage, ensureImage, importImage, listImages, ImageUploads, imageUploads, localImageEntry } from '../../src/host/images/index.js';
import { localImageRoot } from '../../src/host/images/local.js';
import { configureImportPolicy } from '../../src/host/images/policy.js';

let dir: string;
let socket: string;
let app: FastifyInstance;
let store: Store;
let operations: OperationManager;
let vms: VmManager;
const savedDataDir = process.env.HANGAR_DATA_DIR;

function elf(size: number): Buffer {
  const b = Buffer.alloc(size, 0x90);
  b.writeUInt32BE(0x7f454c46, 0);
  b[4] = 2; b[5] = 1; b[6] = 1;
  b.writeUInt16LE(2, 16);
  b.writeUInt16LE(62, 18);
  return b;
}
const GZ = (size: number): Buffer => Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), Buffer.alloc(size - 4, 7)]);

interface Res { status: number; headers: http.IncomingHttpHeaders; body: any }

/** One request; `chunks` are written with pauses between them (a streamed body), without content-length unless given. */
function request(method: string, url: string, o: { json?: unknown; chunks?: Buffer[]; headers?: Record<string, string | number> } = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { ...(o.headers ?? {}) };
    let payload: Buffer | undefined;
    if (o.json !== undefined) { payload = Buffer.from(JSON.stringify(o.json)); headers['content-type'] = 'application/json'; headers['content-length'] = payload.length; }
    if (o.chunks) headers['content-type'] ??= 'application/octet-stream';
    let answered = false;
    const req = http.request({ socketPath: socket, method, path: url, headers, agent: false }, (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try { body = JSON.parse(text); } catch { /* text */ }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      });
    });
    // A daemon that cuts an upload off may reset the connection while we still write.
    // The answer may still be on its way then: it wins when it comes.
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE' && e.code !== 'ECONNRESET') { reject(e); return; }
      setTimeout(() => { if (!answered) resolve({ status: 0, headers: {}, body: e.code }); }, 200);
    });
    if (payload) { req.end(payload); return; }
    if (!o.chunks) { req.end(); return; }
    if (o.chunks.length === 1) { req.end(o.chunks[0]); return; }
    const parts = [...o.chunks];
    const next = (): void => {
      const c = parts.shift();
      if (!c) { req.end(); return; }
      if (req.destroyed) return;
      req.write(c);
      setTimeout(next, 5);
    };
    next();
  });
}

async function op(id: string): Promise<any> {
  return (await request('GET', `/1.0/operations/${id}/wait?timeout=10`)).body.metadata;
}

function storeEntries(): string[] {
  try { return fs.readdirSync(localImageRoot()).sort(); } catch { return []; }
}

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-upl-'));
  process.env.HANGAR_DATA_DIR = path.join(dir, 'data');
  fs.mkdirSync(process.env.HANGAR_DATA_DIR, { recursive: true });
  configureImportPolicy({ importDirs: [], quotaBytes: 1_000_000 });
  const log = pino({ level: 'silent' });
  store = new Store(process.env.HANGAR_DATA_DIR);
  operations = new OperationManager(store, log);
  const events = new EventBus(store);
  const images = { ensureImage, listImages, importImage, deleteImage };
  const registry = registryOf({});
  vms = new VmManager({ dataDir: process.env.HANGAR_DATA_DIR, store, events, operations, engines: registry, images, log });
  const host = new HostChecker({ engines: registry, budget: () => vms.budget() });
  app = await buildServer({ version: 'test', dataDir: process.env.HANGAR_DATA_DIR, vms, operations, events, host, images, engines: registry, log });
  socket = path.join(dir, 'api.sock');
  await app.listen({ path: socket });
});

afterEach(async () => {
  // As the daemon does at shutdown: uploads in progress end and give their reservations back.
  imageUploads(operations).abortAll('test over');
  await operations.drain(2000);
  await app.close();
  vms.shutdown();
  store.close();
  configureImportPolicy({});
  if (savedDataDir === undefined) delete process.env.HANGAR_DATA_DIR; else process.env.HANGAR_DATA_DIR = savedDataDir;
  fs.rmSync(dir, { recursive: true, force: true });
});

async function begin(body: Record<string, unknown>): Promise<Res> {
  return request('POST', '/1.0/images/uploads', { json: body });
}

test('upload: sizes first, then the parts; the operation shows progress and ends with the image (0600 files)', async () => {
  const kernel = elf(200_000);
  const initrd = GZ(50_000);
  const r = await begin({ name: 'up', kernelBytes: kernel.length, initrdBytes: initrd.length, cmdline: 'console=ttyS0', description: 'sent' });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const id = r.body.metadata.id as string;
  assert.equal(r.body.metadata.status, 'running');
  // Progress seen while the kernel is half sent.
  const half = await request('PUT', `/1.0/images/uploads/${id}/kernel`, { chunks: [kernel.subarray(0, 100_000)], headers: { 'transfer-encoding': 'chunked' } }).catch(() => null);
  assert.equal(half?.status, 400, 'a part that ends early is refused');
  // ...and that ended the whole import.
  assert.equal((await op(id)).status, 'failure');
  assert.deepEqual(storeEntries(), []);

  const r2 = await begin({ name: 'up', kernelBytes: kernel.length, initrdBytes: initrd.length, cmdline: 'console=ttyS0', description: 'sent' });
  const id2 = r2.body.metadata.id as string;
  const seen: number[] = [];
  const poll = setInterval(() => { void request('GET', `/1.0/operations/${id2}`).then((x) => { const p = x.body.metadata?.progress?.percent; if (typeof p === 'number') seen.push(p); }); }, 2);
  const k = await request('PUT', `/1.0/images/uploads/${id2}/kernel`, { chunks: Array.from({ length: 20 }, (_, i) => kernel.subarray(i * 10_000, (i + 1) * 10_000)), headers: { 'content-length': kernel.length } });
  clearInterval(poll);
  assert.equal(k.status, 200, JSON.stringify(k.body));
  assert.deepEqual(k.body.metadata, { part: 'kernel', bytes: kernel.length });
  assert.ok(seen.some((p) => p > 0 && p < 80), `progress seen: ${seen.join(',')}`);
  assert.equal((await request('GET', `/1.0/operations/${id2}`)).body.metadata.status, 'running', 'not done before the initrd');
  const i = await request('PUT', `/1.0/images/uploads/${id2}/initrd`, { chunks: [initrd] });
  assert.equal(i.status, 200, JSON.stringify(i.body));
  assert.equal(i.body.metadata.image.name, 'up');
  const done = await op(id2);
  assert.equal(done.status, 'success');
  assert.equal(done.result.name, 'up');
  assert.equal(done.result.sizeBytes, kernel.length + initrd.length);
  assert.deepEqual(fs.readFileSync(done.result.kernel), kernel);
  assert.deepEqual(fs.readFileSync(done.result.initrd), initrd);
  assert.equal(fs.statSync(done.result.kernel).mode & 0o777, 0o600);
  assert.equal(fs.statSync(done.result.initrd).mode & 0o777, 0o600);
  assert.equal((await request('GET', '/1.0/images/up')).body.metadata.cmdline, 'console=ttyS0');
  assert.deepEqual(storeEntries(), ['up']);
  // A part sent twice is refused; the upload is gone once finished.
  assert.equal((await request('PUT', `/1.0/images/uploads/${id2}/kernel`, { chunks: [kernel] })).status, 404);
});

test('quota: an upload that would exceed it is RESOURCE_EXHAUSTED before a byte is sent; reservations count', async () => {
  const over = await begin({ name: 'big', kernelBytes: 1_000_001 });
  assert.equal(over.status, 422);
  assert.equal(over.body.error.code, 'RESOURCE_EXHAUSTED');
  assert.match(over.body.error.message, /quota exceeded/);
  const a = await begin({ name: 'a', kernelBytes: 600_000 });
  assert.equal(a.status, 202);
  // The first upload's space is reserved: a second that fits only without it is refused.
  const b = await begin({ name: 'b', kernelBytes: 600_000 });
  assert.equal(b.body.error?.code, 'RESOURCE_EXHAUSTED');
  assert.equal((await request('DELETE', `/1.0/images/uploads/${a.body.metadata.id}`)).status, 200);
  assert.equal((await op(a.body.metadata.id)).error.message, 'the upload was cancelled');
  assert.equal((await begin({ name: 'b', kernelBytes: 600_000 })).status, 202);
  assert.deepEqual(storeEntries().filter((n) => !n.startsWith('.import-b-')), [], 'the cancelled upload left nothing');
});

test('a part longer than declared is cut off at the first byte too many; nothing partial is left', async () => {
  const kernel = elf(300_000);
  const r = await begin({ name: 'long', kernelBytes: 100_000 });
  const id = r.body.metadata.id as string;
  // Chunked, no content-length: the daemon finds out while reading.
  const put = await request('PUT', `/1.0/images/uploads/${id}/kernel`, { chunks: Array.from({ length: 30 }, (_, i) => kernel.subarray(i * 10_000, (i + 1) * 10_000)) });
  if (put.status !== 0) {
    assert.equal(put.status, 400);
    assert.match(put.body.error.message, /longer than the 100000 bytes declared: upload cut off/);
    assert.equal(put.headers.connection, 'close');
  }
  const o = await op(id);
  assert.equal(o.status, 'failure');
  assert.equal(o.error.code, 'INVALID_ARGUMENT');
  assert.match(o.error.message, /longer than the 100000 bytes declared/);
  assert.deepEqual(storeEntries(), []);
  // A declared length that disagrees with the request's content-length is refused before reading.
  const r2 = await begin({ name: 'long', kernelBytes: 100_000 });
  const put2 = await request('PUT', `/1.0/images/uploads/${r2.body.metadata.id}/kernel`, { chunks: [kernel.subarray(0, 100_001)], headers: { 'content-length': 100_001 } });
  assert.equal(put2.status, 400);
  assert.match(put2.body.error.message, /declared as 100000 bytes but the request carries 100001/);
  assert.deepEqual(storeEntries(), []);
});

test('a kernel or initrd of the wrong format is refused from its first bytes', async () => {
  const shadow = Buffer.concat([Buffer.from('root:$6$salt$hash:19000:0:99999:7:::\n'), Buffer.alloc(100_000, 0x41)]);
  const r = await begin({ name: 'bad', kernelBytes: shadow.length });
  const put = await request('PUT', `/1.0/images/uploads/${r.body.metadata.id}/kernel`, { chunks: Array.from({ length: 10 }, (_, i) => shadow.subarray(i * 10_004, (i + 1) * 10_004)) });
  if (put.status !== 0) assert.equal(put.status, 400);
  const o = await op(r.body.metadata.id);
  assert.match(o.error.message, /neither an x86-64 ELF64 executable nor a Linux bzImage/);
  const kernel = elf(5000);
  const r2 = await begin({ name: 'bad', kernelBytes: kernel.length, initrdBytes: shadow.length });
  assert.equal((await request('PUT', `/1.0/images/uploads/${r2.body.metadata.id}/kernel`, { chunks: [kernel] })).status, 200);
  const i = await request('PUT', `/1.0/images/uploads/${r2.body.metadata.id}/initrd`, { chunks: [shadow] });
  if (i.status !== 0) assert.equal(i.status, 400);
  assert.match((await op(r2.body.metadata.id)).error.message, /initrd upload is neither a cpio archive/);
  assert.deepEqual(storeEntries(), []);
});

test('requests that do not fit: unknown upload, undeclared part, wrong content type, bad sizes, taken name', async () => {
  assert.equal((await request('PUT', '/1.0/images/uploads/nope/kernel', { chunks: [elf(100)] })).status, 404);
  const r = await begin({ name: 'k', kernelBytes: 100 });
  const id = r.body.metadata.id as string;
  const wrongType = await request('PUT', `/1.0/images/uploads/${id}/kernel`, { json: { a: 1 } });
  assert.equal(wrongType.status, 400);
  assert.equal((await request('PUT', `/1.0/images/uploads/${id}/rootfs`, { chunks: [elf(100)] })).status, 400);
  assert.equal((await begin({ name: 'k', kernelBytes: 100 })).body.error.code, 'ALREADY_EXISTS', 'the name is taken while its upload runs');
  const undeclared = await request('PUT', `/1.0/images/uploads/${id}/initrd`, { chunks: [GZ(100)] });
  assert.equal(undeclared.status, 400);
  assert.match(undeclared.body.error.message, /declared no initrd/);
  for (const body of [{ name: 'x', kernelBytes: 0 }, { name: 'x', kernelBytes: -1 }, { name: 'x', kernelBytes: 1.5 }, { name: 'x', kernelBytes: '100' }, { name: 'x' }, { name: 'tiny', kernelBytes: 1 }, { name: 'x', kernelBytes: 1, initrdBytes: 3 * 2 ** 30 }, { name: 'x', kernelBytes: 1, extra: true }]) {
    const b = await begin(body);
    assert.equal(b.status, b.body.error?.code === 'RESOURCE_EXHAUSTED' ? 422 : 400, JSON.stringify(body) + JSON.stringify(b.body));
  }
  assert.deepEqual(storeEntries().filter((n) => !n.startsWith('.import-k-')), []);
});

test('an upload that receives nothing for the idle time fails with TIMEOUT and frees its name and space', async () => {
  const uploads = new ImageUploads(operations, { reservedNames: () => ['tiny'], present: localImageEntry, idleMs: 100 });
  const o = uploads.begin({ name: 'slow', kernelBytes: 900_000 });
  assert.equal(uploads.size, 1);
  const final = await operations.wait(o.id, 5000);
  assert.equal(final.status, 'failure');
  assert.equal(final.error?.code, 'TIMEOUT');
  assert.equal(uploads.size, 0);
  assert.deepEqual(storeEntries(), []);
  // Name and reserved bytes are free again.
  const again = uploads.begin({ name: 'slow', kernelBytes: 900_000 });
  uploads.cancel(again.id);
});
