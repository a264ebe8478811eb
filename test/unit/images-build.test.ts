/**
 * Building a built-in image on request: POST /1.0/images/{name}/build as an
 * operation with progress, `hangar image build` showing that progress, a
 * rebuild from a package list, and a build that fails halfway leaving
 * nothing (first build) or the old image untouched (rebuild). Uses a cheap
 * recipe registered for the test; the catalogue's build machinery (lock,
 * temporary folder, rename) is the one debian-12 uses.
 */
import { test, before, after } from 'node:test';
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
import { runHangar } from '../helpers/cli.js';
import { isHangarError } from '../../src/common/errors.js';
import { buildImage, deleteImage, ensureImage, importImage, isBuiltIn, listImages, registerTestRecipe } from '../../src/host/images/index.js';

let dir: string;
let socket: string;
let app: FastifyInstance;
let store: Store;
let operations: OperationManager;
let vms: VmManager;
const saved = { data: process.env.HANGAR_DATA_DIR, images: process.env.HANGAR_IMAGE_DIR, socket: process.env.HANGAR_SOCKET };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What the next build of the test recipe does: fail after writing half its files, and how slowly. */
const behaviour = { fail: false, stepMs: 20, seen: [] as Array<{ packages?: string[] }> };

registerTestRecipe('build-test', {
  description: 'test recipe',
  cmdline: 'console=ttyS0',
  build: async (_work, out, progress, opts) => {
    behaviour.seen.push({ ...(opts.packages ? { packages: opts.packages } : {}) });
    fs.mkdirSync(out, { recursive: true });
    progress('fetching', 10);
    await sleep(behaviour.stepMs);
    fs.writeFileSync(path.join(out, 'vmlinuz'), 'kernel');
    progress('assembling', 50);
    await sleep(behaviour.stepMs);
    if (behaviour.fail || opts.failAfter === 'half') throw new Error('injected failure halfway');
    fs.writeFileSync(path.join(out, 'initrd.img'), 'initrd');
    fs.writeFileSync(path.join(out, 'disk.qcow2'), 'disk');
    progress('converting', 90);
    await sleep(behaviour.stepMs);
    return { disk: 'disk.qcow2', boot: ['kernel', 'uefi'], cloudInit: true, marker: Date.now(), packages: opts.packages?.length ?? 0 };
  },
});

function request(method: string, url: string, json?: unknown): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const payload = json === undefined ? undefined : Buffer.from(JSON.stringify(json));
    const headers: Record<string, string | number> = payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {};
    const req = http.request({ socketPath: socket, method, path: url, headers, agent: false }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** The image cache holds exactly these entries (no .build-* folder, no lock). */
function cacheEntries(): string[] {
  try { return fs.readdirSync(process.env.HANGAR_IMAGE_DIR!).filter((n) => n.includes('build-test')).sort(); } catch { return []; }
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-imgbuild-'));
  process.env.HANGAR_DATA_DIR = path.join(dir, 'data');
  process.env.HANGAR_IMAGE_DIR = path.join(dir, 'images');
  fs.mkdirSync(process.env.HANGAR_DATA_DIR, { recursive: true });
  const log = pino({ level: 'silent' });
  store = new Store(process.env.HANGAR_DATA_DIR);
  operations = new OperationManager(store, log);
  const events = new EventBus(store);
  const images = { ensureImage, listImages, importImage, deleteImage, buildImage, isBuiltIn };
  const registry = registryOf({});
  vms = new VmManager({ dataDir: process.env.HANGAR_DATA_DIR, store, events, operations, engines: registry, images, log });
  const host = new HostChecker({ engines: registry, budget: () => vms.budget() });
  app = await buildServer({ version: 'test', dataDir: process.env.HANGAR_DATA_DIR, vms, operations, events, host, images, engines: registry, log });
  socket = path.join(dir, 'api.sock');
  process.env.HANGAR_SOCKET = socket;
  await app.listen({ path: socket });
});

after(async () => {
  await operations.drain(5000);
  await app.close();
  vms.shutdown();
  store.close();
  for (const [k, v] of [['HANGAR_DATA_DIR', saved.data], ['HANGAR_IMAGE_DIR', saved.images], ['HANGAR_SOCKET', saved.socket]] as const) {
    if (v === undefined) delete process.env[k]; else process.env[k] = v;
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a first build that fails halfway leaves no image, no build folder and no lock', async () => {
  behaviour.fail = true;
  try {
    await assert.rejects(buildImage('build-test'), /injected failure halfway/);
  } finally {
    behaviour.fail = false;
  }
  assert.deepEqual(cacheEntries(), []);
  assert.equal(listImages().find((i) => i.name === 'build-test')?.status, 'missing');
});

test('POST /1.0/images/{name}/build runs as an operation that reports its stages, then lists the image with its disk', async () => {
  behaviour.stepMs = 300;
  const r = await request('POST', '/1.0/images/build-test/build', {});
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const id = r.body.metadata.id as string;
  // One build at a time: a second request while this one runs is refused, not queued.
  const second = await request('POST', '/1.0/images/build-test/build', {});
  assert.equal(second.status, 409, JSON.stringify(second.body));
  assert.equal(second.body.error.code, 'INVALID_STATE');
  const stages = new Set<string>();
  for (;;) {
    const o = (await request('GET', `/1.0/operations/${id}`)).body.metadata;
    if (o.progress?.stage) stages.add(`${o.progress.stage} ${o.progress.percent}`);
    if (o.status !== 'running') {
      assert.equal(o.status, 'success', JSON.stringify(o));
      assert.equal(o.result.name, 'build-test');
      assert.equal(o.result.status, 'ready');
      assert.equal(o.result.disk, path.join(process.env.HANGAR_IMAGE_DIR!, 'build-test', 'disk.qcow2'));
      assert.deepEqual(o.result.boot, ['kernel', 'uefi']);
      assert.equal(o.result.cloudInit, true);
      break;
    }
    await sleep(50);
  }
  behaviour.stepMs = 20;
  assert.ok(stages.has('fetching 10') && stages.has('assembling 50'), `stages seen: ${[...stages].join(', ')}`);
  assert.deepEqual(cacheEntries(), ['build-test']);
  const got = (await request('GET', '/1.0/images/build-test')).body.metadata;
  assert.equal(got.disk, path.join(process.env.HANGAR_IMAGE_DIR!, 'build-test', 'disk.qcow2'));
});

test('a rebuild that fails halfway keeps the old image whole', async () => {
  const meta = path.join(process.env.HANGAR_IMAGE_DIR!, 'build-test', 'image.json');
  if (!fs.existsSync(meta)) await buildImage('build-test');
  const before = fs.readFileSync(meta, 'utf8');
  await assert.rejects(buildImage('build-test', { failAfter: 'half' }), /injected failure halfway/);
  assert.equal(fs.readFileSync(meta, 'utf8'), before);
  assert.equal(fs.readFileSync(path.join(path.dirname(meta), 'initrd.img'), 'utf8'), 'initrd');
  assert.deepEqual(cacheEntries(), ['build-test']);
  // A successful rebuild replaces it.
  await buildImage('build-test');
  assert.notEqual(fs.readFileSync(meta, 'utf8'), before);
  assert.deepEqual(cacheEntries(), ['build-test']);
});

test('bad build requests: unknown image, imported-only names, bad package lines', async () => {
  assert.equal((await request('POST', '/1.0/images/no-such/build', {})).status, 404);
  const bad = await request('POST', '/1.0/images/build-test/build', { packages: ['not a package'] });
  assert.equal(bad.status, 400, JSON.stringify(bad.body));
  const extra = await request('POST', '/1.0/images/build-test/build', { nope: 1 });
  assert.equal(extra.status, 400);
  await assert.rejects(buildImage('no-such'), (e: unknown) => isHangarError(e) && e.code === 'NOT_FOUND');
});

test('hangar image build shows progress and passes a package list', async () => {
  behaviour.stepMs = 1200;
  const list = path.join(dir, 'packages.txt');
  fs.writeFileSync(list, '# recorded\nbase-files=12.4+deb12u9\nlibc6:amd64=2.36-9+deb12u10\n\n');
  const r = await runHangar(['image', 'build', 'build-test', '--packages', list]);
  behaviour.stepMs = 20;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /Building image build-test/);
  assert.match(r.stderr, /fetching 10%/);
  assert.match(r.stderr, /assembling 50%/);
  assert.match(r.stdout, /^Built image build-test/);
  assert.deepEqual(behaviour.seen.at(-1), { packages: ['base-files=12.4+deb12u9', 'libc6:amd64=2.36-9+deb12u10'] });

  fs.writeFileSync(list, 'base-files 12.4\n');
  const bad = await runHangar(['image', 'build', 'build-test', '--packages', list]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /line 1: "base-files 12.4" is not name=version/);

  const json = await runHangar(['image', 'build', 'build-test', '--json']);
  assert.equal(json.code, 0, json.stderr);
  assert.equal(JSON.parse(json.stdout).disk, path.join(process.env.HANGAR_IMAGE_DIR!, 'build-test', 'disk.qcow2'));
});
