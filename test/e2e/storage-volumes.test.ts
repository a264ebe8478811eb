/**
 * Storage pools and volumes through a real daemon and the real `hangar` CLI
 * (no VM needed): create, resize (grow only), import from the daemon's
 * import folder and by upload, clone with a format change, export (bytes
 * compared with what went in), the pool quota, hostile images refused by
 * both import paths, a copy whose qemu-img is killed halfway leaving no half
 * volume, and pools made and deleted.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import { execFileSync } from 'node:child_process';
import { startDaemon, waitOperation, type TestDaemon } from '../helpers/daemon.js';
import { runHangar, expectOk, type CliResult } from '../helpers/cli.js';

const MiB = 1024 * 1024;
let d: TestDaemon;
let work: string;
let importDir: string;
let trigger: string;

const hangar = (...args: string[]): Promise<CliResult> => runHangar(args, { env: d.env, timeoutMs: 60_000 });
const ok = async (what: string, ...args: string[]): Promise<CliResult> => expectOk(await hangar(...args), what);
const json = async <T = any>(...args: string[]): Promise<T> => JSON.parse((await ok(args.join(' '), ...args, '--json')).stdout) as T;

/** One request with a binary body or answer (the helper's request() reads text). */
function raw(method: string, urlPath: string, body?: Buffer): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: d.socket, method, path: urlPath, headers: body ? { 'content-type': 'application/octet-stream', 'content-length': body.length } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const VOLS = '/1.0/storage-pools/default/volumes';

/** Uploads `data` as a new volume through the API; resolves with the finished operation. */
async function upload(name: string, data: Buffer, format?: string): Promise<any> {
  const begin = await d.request('POST', VOLS, { name, source: { type: 'upload', bytes: data.length }, ...(format ? { format } : {}) });
  assert.equal(begin.status, 202, JSON.stringify(begin.body));
  await raw('PUT', `${VOLS}/${name}/content`, data);
  return waitOperation(d, begin);
}

function qemuImg(...args: string[]): void {
  execFileSync('qemu-img', args, { stdio: 'pipe' });
}

function poolDir(pool = 'default'): string {
  return path.join(d.dataDir, 'storage', pool);
}

/** A raw disk with a boot signature and a recognisable pattern in its first megabyte. */
function markedDisk(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < MiB; i += 4) b.writeUInt32LE((i * 2654435761) >>> 0, i);
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

before(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-e2e-storage-'));
  importDir = path.join(work, 'import');
  fs.mkdirSync(importDir, { mode: 0o700 });
  // A qemu-img that, while the trigger file exists, dies by SIGKILL in the middle of a convert
  // after writing part of its output: the "killed halfway" case, without any timing.
  trigger = path.join(work, 'kill-convert');
  const wrapper = path.join(work, 'qemu-img');
  fs.writeFileSync(wrapper, `#!/bin/sh
if [ "$1" = convert ] && [ -e '${trigger}' ]; then
  for last; do :; done
  head -c 1048576 /dev/zero > "$last"
  kill -9 $$
fi
exec qemu-img "$@"
`, { mode: 0o755 });
  d = await startDaemon({ args: ['--import-dir', importDir, '--pool-quota', '256M'], env: { HANGAR_QEMU_IMG: wrapper } });
});

after(async () => {
  await d?.cleanup();
  fs.rmSync(work, { recursive: true, force: true });
});

test('the default pool exists on first use with the configured quota', async () => {
  const r = await d.request('GET', '/1.0/storage-pools');
  assert.deepEqual(r.body.metadata.map((p: any) => [p.name, p.driver, p.path, p.quotaBytes]), [['default', 'dir', poolDir(), 256 * MiB]]);
});

test('/openapi.json documents the storage routes', async () => {
  const doc = (await d.request('GET', '/openapi.json')).body;
  for (const [p, m] of [['/1.0/storage-pools', 'get'], ['/1.0/storage-pools', 'post'], ['/1.0/storage-pools/{pool}', 'delete'], ['/1.0/storage-pools/{pool}/volumes', 'post'], ['/1.0/storage-pools/{pool}/volumes/{volume}', 'patch'], ['/1.0/storage-pools/{pool}/volumes/{volume}/content', 'put']] as const) {
    assert.ok(doc.paths[p]?.[m], `${m.toUpperCase()} ${p} documented`);
  }
});

test('create, resize (grow only) and the quota', async () => {
  const v = await json('volume', 'create', 'data', '--size', '64M');
  assert.deepEqual([v.pool, v.name, v.format, v.sizeBytes], ['default', 'data', 'qcow2', 64 * MiB]);
  const file = path.join(poolDir(), 'data.qcow2');
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);

  assert.equal((await json('volume', 'resize', 'data', '128M')).sizeBytes, 128 * MiB);
  assert.match(execFileSync('qemu-img', ['info', '--output=json', '-U', file]).toString(), /"virtual-size": 134217728/);
  const shrink = await hangar('volume', 'resize', 'data', '32M');
  assert.equal(shrink.code, 2, shrink.stderr);
  assert.match(shrink.stderr, /only grow/);

  const over = await d.request('POST', VOLS, { name: 'big', size: '200M' });
  assert.equal(over.status, 422);
  assert.equal(over.body.error.code, 'RESOURCE_EXHAUSTED');
  assert.match(over.body.error.message, /quota exceeded/);
  const overResize = await d.request('PATCH', `${VOLS}/data`, { size: '300M' });
  assert.equal(overResize.body.error.code, 'RESOURCE_EXHAUSTED');
  assert.equal((await d.request('GET', `${VOLS}/data`)).body.metadata.sizeBytes, 128 * MiB);
  assert.equal(fs.existsSync(path.join(poolDir(), 'big.qcow2')), false);
});

test('import from the import folder and by upload, clone with a format change, export: the bytes survive', async () => {
  const disk = markedDisk(8 * MiB);
  fs.writeFileSync(path.join(importDir, 'disk.raw'), disk);
  const a = await json('volume', 'import', 'imported', path.join(importDir, 'disk.raw'), '--from-daemon-dir', '--format', 'qcow2');
  assert.deepEqual([a.format, a.sizeBytes], ['qcow2', 8 * MiB]);

  // Upload a qcow2 from the client's side, with the CLI's progress line.
  const local = path.join(work, 'local.qcow2');
  qemuImg('convert', '-f', 'raw', '-O', 'qcow2', path.join(importDir, 'disk.raw'), local);
  const up = expectOk(await hangar('volume', 'import', 'uploaded', local), 'upload');
  assert.match(up.stderr, /Uploading local.qcow2/);
  assert.match(up.stdout, /Imported volume default\/uploaded \(qcow2, 8M\)/);

  const c = await json('volume', 'clone', 'uploaded', 'copy', '--format', 'raw');
  assert.deepEqual([c.format, c.sizeBytes, c.origin], ['raw', 8 * MiB, { kind: 'clone', from: 'default/uploaded' }]);

  const out = path.join(work, 'copy.out');
  expectOk(await hangar('volume', 'export', 'copy', out), 'export');
  assert.ok(fs.readFileSync(out).equals(disk), 'the copy, exported, is the disk that went in');
  for (const vol of ['imported', 'uploaded']) {
    const r = await raw('GET', `${VOLS}/${vol}/content?format=raw`);
    assert.equal(r.status, 200);
    assert.ok(r.body.equals(disk), `${vol} exported as raw is the disk that went in`);
  }
  // A raw upload kept as qcow2: converted on the way in.
  const conv = await upload('converted', disk, 'qcow2');
  assert.equal(conv.status, 'success', JSON.stringify(conv.error));
  assert.deepEqual([conv.result.format, conv.result.sizeBytes], ['qcow2', 8 * MiB]);
  assert.ok((await raw('GET', `${VOLS}/converted/content?format=raw`)).body.equals(disk));
  assert.equal((await d.request('DELETE', `${VOLS}/converted`)).status, 200);
  // As it is: the volume's own qcow2 file.
  assert.equal((await raw('GET', `${VOLS}/imported/content`)).body.readUInt32BE(0), 0x514649fb);
  const again = await hangar('volume', 'export', 'copy', out);
  assert.equal(again.code, 4, 'export never overwrites a local file');
});

test('hostile images are refused by path import and by upload, and leave nothing behind', async () => {
  const evil = path.join(importDir, 'shadow.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', '/etc/shadow', '-F', 'raw', evil, '16M');
  const byPath = await hangar('volume', 'import', 'evil1', evil, '--from-daemon-dir');
  assert.equal(byPath.code, 2, byPath.stderr);
  assert.match(byPath.stderr, /backing file \/etc\/shadow.*outside Hangar's storage folders/);
  const byUpload = await hangar('volume', 'import', 'evil2', evil);
  assert.equal(byUpload.code, 2, byUpload.stderr);
  assert.match(byUpload.stderr, /outside Hangar's storage folders/);

  const refusedByPath = async (file: string, code: string, re: RegExp): Promise<void> => {
    const r = await d.request('POST', VOLS, { name: 'evil3', source: { type: 'path', path: file } });
    assert.equal(r.body.error?.code, code, JSON.stringify(r.body));
    assert.match(r.body.error.message, re);
  };
  const jsonBacked = path.join(importDir, 'json.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', 'json:{"driver":"file","filename":"/etc/shadow"}', '-F', 'raw', jsonBacked, '16M');
  await refusedByPath(jsonBacked, 'INVALID_ARGUMENT', /json:/);
  const huge = path.join(importDir, 'huge.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', huge, '1T');
  await refusedByPath(huge, 'RESOURCE_EXHAUSTED', /over what pool "default" has left/);
  await refusedByPath('/etc/passwd', 'INVALID_ARGUMENT', /not a file inside the daemon's import folders/);

  const rnd = Buffer.alloc(MiB);
  for (let i = 0; i < rnd.length; i++) rnd[i] = (i * 7919 + (i >> 8) * 31 + 13) & 0xff;
  const r = await upload('evil4', rnd);
  assert.equal(r.status, 'failure');
  assert.match(r.error.message, /not a disk image/);
  const h = await upload('evil5', fs.readFileSync(huge));
  assert.equal(h.error.code, 'RESOURCE_EXHAUSTED');

  const names = (await d.request('GET', VOLS)).body.metadata.map((v: any) => v.name);
  assert.deepEqual(names.filter((n: string) => n.startsWith('evil')), []);
  assert.deepEqual(fs.readdirSync(poolDir()).filter((n) => n.startsWith('.') || n.startsWith('evil')), []);
});

test('a copy whose qemu-img is killed halfway fails and leaves no half volume', async () => {
  fs.writeFileSync(trigger, '');
  try {
    const r = await hangar('volume', 'clone', 'copy', 'half');
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /qemu-img convert was killed by SIGKILL before it finished/);
  } finally {
    fs.rmSync(trigger);
  }
  assert.equal((await d.request('GET', `${VOLS}/half`)).status, 404);
  assert.deepEqual(fs.readdirSync(poolDir()).filter((n) => n.startsWith('.') || n.includes('half')), []);
  // The name and the quota are free again.
  const again = await waitOperation(d, await d.request('POST', VOLS, { name: 'half', source: { type: 'copy', volume: 'default/copy' } }));
  assert.equal(again.status, 'success', JSON.stringify(again.error));
});

test('pools: one at a given path; delete refused while it has volumes', async () => {
  const rel = await d.request('POST', '/1.0/storage-pools', { name: 'bad', path: 'relative/dir' });
  assert.equal(rel.status, 400);
  const at = path.join(work, 'fast');
  const p = await json('storage', 'create', 'fast', '--path', at, '--quota', '32M');
  assert.deepEqual([p.name, p.path, p.quotaBytes], ['fast', at, 32 * MiB]);
  const v = await d.request('POST', '/1.0/storage-pools/fast/volumes', { name: 'scratch', size: '16M', format: 'raw' });
  assert.equal(v.status, 201);
  assert.equal(fs.statSync(path.join(at, 'scratch.raw')).size, 16 * MiB);
  const busy = await hangar('storage', 'delete', 'fast');
  assert.equal(busy.code, 4, busy.stderr);
  assert.match(busy.stderr, /still has 1 volume/);
  const list = (await ok('volume list', 'volume', 'list')).stdout;
  assert.match(list, /fast\s+scratch\s+raw\s+16M/);
  assert.equal((await d.request('DELETE', '/1.0/storage-pools/fast/volumes/scratch')).status, 200);
  assert.equal((await d.request('DELETE', '/1.0/storage-pools/fast')).status, 200);
  assert.equal(fs.existsSync(at), false);
});

test('an upload cut short by a daemon crash leaves nothing after the restart', async () => {
  const begin = await d.request('POST', VOLS, { name: 'crashed', source: { type: 'upload', bytes: 4 * MiB } });
  assert.equal(begin.status, 202);
  // Half the bytes, then the daemon dies with the request still open.
  const req = http.request({ socketPath: d.socket, method: 'PUT', path: `${VOLS}/crashed/content`, headers: { 'content-type': 'application/octet-stream', 'content-length': 4 * MiB } });
  req.on('error', () => {});
  req.write(Buffer.alloc(2 * MiB));
  for (let i = 0; i < 200 && !fs.readdirSync(poolDir()).some((n) => n.startsWith('.crashed.')); i++) await new Promise((r) => setTimeout(r, 25));
  assert.ok(fs.readdirSync(poolDir()).some((n) => n.startsWith('.crashed.')), 'the upload was being written');
  await d.kill9();
  req.destroy();
  await d.restart();
  assert.equal((await d.request('GET', `${VOLS}/crashed`)).status, 404);
  assert.deepEqual(fs.readdirSync(poolDir()).filter((n) => n.startsWith('.') || n.includes('crashed')), []);
  const op = (await d.request('GET', String(begin.headers.location))).body.metadata;
  assert.equal(op.status, 'failure');
  // The name is free again.
  assert.equal((await d.request('POST', VOLS, { name: 'crashed', size: '1M' })).status, 201);
  assert.equal((await d.request('DELETE', `${VOLS}/crashed`)).status, 200);
});

test('deleting volumes removes their files; a missing one is NOT_FOUND', async () => {
  for (const v of ['data', 'imported', 'uploaded', 'half']) assert.equal((await d.request('DELETE', `${VOLS}/${v}`)).status, 200);
  expectOk(await hangar('volume', 'delete', 'copy'), 'delete');
  assert.deepEqual(fs.readdirSync(poolDir()), []);
  assert.equal((await hangar('volume', 'delete', 'copy')).code, 3);
});
