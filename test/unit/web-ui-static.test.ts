/**
 * The UI's files, precompressed: a real Fastify instance serves a folder
 * laid out like the web build (NAME, NAME.br, NAME.gz). A client that
 * accepts brotli or gzip gets those bytes with Content-Encoding, one that
 * does not (or refuses them with q=0) the plain file; every answer for a
 * text file carries Vary: Accept-Encoding; images are never switched.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import Fastify, { type FastifyInstance } from 'fastify';
import { registerUiStatic } from '../../src/host/ui/static.js';
import { acceptQ, pickEncoding, PRECOMPRESSED } from '../../src/host/ui/encoding.js';

let app: FastifyInstance;
let dir: string;
const JS = 'export const hello = "hangar";\n'.repeat(200);

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-ui-static-'));
  fs.mkdirSync(path.join(dir, 'assets'));
  const js = path.join(dir, 'assets', 'app-1234.js');
  fs.writeFileSync(js, JS);
  fs.writeFileSync(`${js}.br`, zlib.brotliCompressSync(JS));
  fs.writeFileSync(`${js}.gz`, zlib.gzipSync(JS));
  // Only a gzip copy of the page: a brotli-only client gets it plain.
  fs.writeFileSync(path.join(dir, 'index.html'), '<!doctype html><title>x</title>');
  fs.writeFileSync(path.join(dir, 'index.html.gz'), zlib.gzipSync('<!doctype html><title>x</title>'));
  fs.writeFileSync(path.join(dir, 'logo.png'), Buffer.from([0x89, 0x50, 0x4e, 0x47]));
  fs.writeFileSync(path.join(dir, 'logo.png.gz'), zlib.gzipSync('not to be sent'));
  app = Fastify();
  registerUiStatic(app, dir);
  await app.ready();
});
after(async () => {
  await app?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const get = (url: string, acceptEncoding?: string) => app.inject({ method: 'GET', url, headers: acceptEncoding === undefined ? {} : { 'accept-encoding': acceptEncoding } });

test('Accept-Encoding: q-values, the wildcard, refusals', () => {
  assert.equal(acceptQ('gzip, deflate, br', 'br'), 1);
  assert.equal(acceptQ('gzip;q=0.5, br;q=0', 'br'), 0);
  assert.equal(acceptQ('gzip;q=0.5, br;q=0', 'gzip'), 0.5);
  assert.equal(acceptQ('*;q=0.2', 'br'), 0.2);
  assert.equal(acceptQ('identity', 'gzip'), 0);
  assert.equal(acceptQ(undefined, 'gzip'), 0);
  const all = () => true;
  assert.equal(pickEncoding('gzip, br', all)?.encoding, 'br');
  assert.equal(pickEncoding('gzip;q=1, br;q=0.8', all)?.encoding, 'gzip', 'the client\'s preference wins');
  assert.equal(pickEncoding('br', (p) => p.encoding === 'gzip'), null, 'only what exists and is accepted');
  assert.deepEqual(PRECOMPRESSED.map((p) => p.suffix), ['.br', '.gz']);
});

test('a script: brotli, gzip or plain as asked, always with Vary', async () => {
  const br = await get('/ui/assets/app-1234.js', 'gzip, deflate, br');
  assert.equal(br.statusCode, 200);
  assert.equal(br.headers['content-encoding'], 'br');
  assert.equal(br.headers.vary, 'Accept-Encoding');
  assert.match(String(br.headers['content-type']), /^text\/javascript/);
  assert.equal(zlib.brotliDecompressSync(br.rawPayload).toString(), JS);
  assert.ok(br.rawPayload.length < JS.length / 10);

  const gz = await get('/ui/assets/app-1234.js', 'gzip, deflate');
  assert.equal(gz.headers['content-encoding'], 'gzip');
  assert.equal(zlib.gunzipSync(gz.rawPayload).toString(), JS);

  for (const ae of [undefined, 'identity', 'br;q=0, gzip;q=0']) {
    const plain = await get('/ui/assets/app-1234.js', ae);
    assert.equal(plain.headers['content-encoding'], undefined, String(ae));
    assert.equal(plain.headers.vary, 'Accept-Encoding');
    assert.equal(plain.payload, JS);
  }
});

test('the page falls back to what exists; images are sent as they are; compressed names alone are no route around the rules', async () => {
  const page = await get('/ui/', 'br');
  assert.equal(page.headers['content-encoding'], undefined);
  assert.match(page.payload, /^<!doctype html>/);
  const pageGz = await get('/ui/', 'gzip');
  assert.equal(pageGz.headers['content-encoding'], 'gzip');
  assert.ok(String(pageGz.headers['content-security-policy']).length > 0, 'the UI headers go with the compressed page too');

  const png = await get('/ui/logo.png', 'gzip, br');
  assert.equal(png.headers['content-encoding'], undefined);
  assert.equal(png.headers.vary, undefined);
  assert.deepEqual(png.rawPayload, Buffer.from([0x89, 0x50, 0x4e, 0x47]));

  assert.ok((await get('/ui/assets/missing.js', 'br')).statusCode >= 400, 'no file, no answer');
});
