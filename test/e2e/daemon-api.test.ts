/**
 * The API's edges against a real daemon: bad requests get a clear 4xx in our
 * error envelope and change nothing; /openapi.json documents the routes; the
 * socket is private; the TCP listener wants the bearer token.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { WebSocket } from 'ws';
import { startDaemon, requestUnix, waitOperation, type TestDaemon, type TestResponse } from '../helpers/daemon.js';

let d: TestDaemon;
const TOKEN = 'test-token-0123456789abcdef0123456789abcdef';

before(async () => {
  // Plain HTTP on loopback (--insecure-http) keeps these requests simple; TLS is tested in cli-remote.
  d = await startDaemon({ args: ['--listen', '127.0.0.1:0', '--insecure-http'], env: { HANGAR_API_TOKEN: TOKEN } });
});
after(async () => { await d?.cleanup(); });

function tcp(method: string, urlPath: string, headers: Record<string, string> = {}, body?: string): Promise<TestResponse> {
  const [host, port] = fs.readFileSync(path.join(d.dataDir, 'hangard.listen'), 'utf8').trim().split(':');
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port: Number(port), method, path: urlPath, headers: { ...headers, ...(body ? { 'content-type': 'application/json' } : {}) } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => { text += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text ? JSON.parse(text) : undefined }));
    });
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

function assertError(r: TestResponse, status: number, code: string): void {
  assert.equal(r.status, status, JSON.stringify(r.body));
  assert.equal(r.body.type, 'error');
  assert.equal(r.body.error.code, code);
  assert.equal(typeof r.body.error.message, 'string');
  assert.ok(r.body.error.message.length > 0);
}

test('bad requests are refused with a code and leave the store unchanged', { timeout: 120_000 }, async () => {
  // One real VM, created but not started, so "duplicate name" has something to hit.
  const op = await waitOperation(d, await d.request('POST', '/1.0/vms', { name: 'one', image: 'tiny', memory: '128M', start: false }));
  assert.equal(op.status, 'success', JSON.stringify(op));
  const before = (await d.request('GET', '/1.0/vms')).body;
  const eventsBefore = (await d.request('GET', '/1.0/events')).body;
  assert.equal(before.metadata.length, 1);
  assert.equal(before.metadata[0].state, 'stopped');

  assertError(await d.request('GET', '/1.0/vms/nosuch'), 404, 'NOT_FOUND');
  assertError(await d.request('PUT', '/1.0/vms/nosuch/state', { action: 'start' }), 404, 'NOT_FOUND');
  assertError(await d.request('DELETE', '/1.0/vms/nosuch'), 404, 'NOT_FOUND');
  assertError(await d.request('GET', '/1.0/vms/nosuch/logs'), 404, 'NOT_FOUND');
  assertError(await d.request('GET', '/1.0/operations/nosuch'), 404, 'NOT_FOUND');
  assertError(await d.request('GET', '/no/such/route'), 404, 'NOT_FOUND');
  assertError(await d.request('POST', '/1.0/vms', { name: 'one', image: 'tiny' }), 409, 'ALREADY_EXISTS');
  const mem = await d.request('POST', '/1.0/vms', { name: 'two', image: 'tiny', memory: '12XB' });
  assertError(mem, 400, 'INVALID_ARGUMENT');
  assert.match(mem.body.error.message, /12XB/);
  assertError(await d.request('POST', '/1.0/vms', { name: 'two', image: 'tiny', memory: '1M' }), 400, 'INVALID_ARGUMENT');
  assertError(await d.request('POST', '/1.0/vms', { name: 'two', image: 'tiny', memory: '100T' }), 400, 'INVALID_ARGUMENT');
  assertError(await d.request('POST', '/1.0/vms', { name: 'two', image: 'tiny', cpus: 0 }), 400, 'INVALID_ARGUMENT');
  assertError(await d.request('POST', '/1.0/vms', { name: 'two', image: 'tiny', cpus: 10000 }), 400, 'INVALID_ARGUMENT');
  assertError(await d.request('POST', '/1.0/vms', { name: 'two', image: 'tiny', cpus: '2' }), 400, 'INVALID_ARGUMENT');
  assertError(await d.request('POST', '/1.0/vms', { name: 'two', image: 'no-such-image' }), 404, 'NOT_FOUND');
  assertError(await d.request('POST', '/1.0/vms', { name: 'Bad Name', image: 'tiny' }), 400, 'INVALID_ARGUMENT');
  assertError(await d.request('POST', '/1.0/vms', { image: 'tiny' }), 400, 'INVALID_ARGUMENT');
  const unknown = await d.request('POST', '/1.0/vms', { name: 'two', image: 'tiny', colour: 'red' });
  assertError(unknown, 400, 'INVALID_ARGUMENT');
  assert.match(unknown.body.error.message, /colour/);
  assertError(await requestUnix(d.socket, 'POST', '/1.0/vms', undefined, '{"name": "two", '), 400, 'INVALID_JSON');
  assertError(await requestUnix(d.socket, 'PUT', '/1.0/vms/one/state', undefined, 'not json'), 400, 'INVALID_JSON');
  assertError(await d.request('PUT', '/1.0/vms/one/state', { action: 'explode' }), 400, 'INVALID_ARGUMENT');
  assertError(await d.request('PUT', '/1.0/vms/one/state', { action: 'stop', extra: 1 }), 400, 'INVALID_ARGUMENT');
  assertError(await d.request('PUT', '/1.0/vms/one/state', { action: 'pause' }), 409, 'INVALID_STATE');
  assertError(await d.request('PUT', '/1.0/vms/one/state', { action: 'stop' }), 409, 'INVALID_STATE');
  assertError(await d.request('GET', '/1.0/vms/one/logs?tail=abc'), 400, 'INVALID_ARGUMENT');

  assert.deepEqual((await d.request('GET', '/1.0/vms')).body, before);
  assert.deepEqual((await d.request('GET', '/1.0/events')).body, eventsBefore);
});

test('/openapi.json is an OpenAPI 3 document listing the routes', async () => {
  const r = await d.request('GET', '/openapi.json');
  assert.equal(r.status, 200);
  const doc = r.body;
  assert.match(doc.openapi, /^3\./);
  for (const [p, m] of [['/1.0', 'get'], ['/1.0/host', 'get'], ['/1.0/images', 'get'], ['/1.0/vms', 'get'], ['/1.0/vms', 'post'], ['/1.0/vms/{name}', 'get'], ['/1.0/vms/{name}', 'delete'], ['/1.0/vms/{name}/state', 'put'], ['/1.0/vms/{name}/logs', 'get'], ['/1.0/operations', 'get'], ['/1.0/operations/{id}', 'get'], ['/1.0/operations/{id}/wait', 'get'], ['/1.0/events', 'get']] as const) {
    assert.ok(doc.paths[p]?.[m], `${m.toUpperCase()} ${p} documented`);
  }
  const body = doc.paths['/1.0/vms'].post.requestBody.content['application/json'].schema;
  assert.equal(body.additionalProperties, false);
  assert.deepEqual(Object.keys(body.properties).sort(), ['boot', 'cmdline', 'cpus', 'disks', 'engine', 'image', 'iso', 'memory', 'name', 'network', 'networkConfig', 'nics', 'rootSize', 'sshKeys', 'start', 'userData']);
  assert.ok(doc.paths['/1.0/vms'].post.responses['202']);
});

test('the Unix socket is private (0600)', () => {
  assert.equal(fs.statSync(d.socket).mode & 0o777, 0o600);
});

test('the TCP listener refuses a missing or wrong token and serves the right one', async () => {
  assertError(await tcp('GET', '/1.0/vms'), 401, 'UNAUTHORIZED');
  assertError(await tcp('GET', '/1.0/vms', { authorization: 'Bearer wrong' }), 401, 'UNAUTHORIZED');
  assertError(await tcp('GET', '/openapi.json', { authorization: `Basic ${TOKEN}` }), 401, 'UNAUTHORIZED');
  assertError(await tcp('POST', '/1.0/vms', {}, JSON.stringify({ name: 'tcp', image: 'tiny' })), 401, 'UNAUTHORIZED');
  const ok = await tcp('GET', '/1.0/vms', { authorization: `Bearer ${TOKEN}` });
  assert.equal(ok.status, 200);
  assert.equal(ok.body.type, 'sync');
  assert.deepEqual(ok.body.metadata.map((v: { name: string }) => v.name), ['one']);
  assert.equal((await d.request('GET', '/1.0/vms/tcp')).status, 404, 'the refused create did nothing');

  // WebSocket upgrades need the token too.
  const addr = fs.readFileSync(path.join(d.dataDir, 'hangard.listen'), 'utf8').trim();
  const upgrade = (headers: Record<string, string>): Promise<number> => new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${addr}/1.0/events`, { headers });
    ws.once('open', () => { ws.close(); resolve(101); });
    ws.once('unexpected-response', (_req, res) => { res.resume(); resolve(res.statusCode ?? 0); });
    ws.once('error', reject);
  });
  assert.equal(await upgrade({}), 401);
  assert.equal(await upgrade({ authorization: `Bearer ${TOKEN}` }), 101);
});

test('a second daemon on the same socket refuses to start', async () => {
  await assert.rejects(startDaemon({ dataDir: d.dataDir }), /another daemon already answers/);
  assert.equal((await d.request('GET', '/1.0')).status, 200, 'the first one is unharmed');
});
