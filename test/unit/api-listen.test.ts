/**
 * The Unix socket is private from the moment it exists: listenUnix creates
 * it under a umask, so it is 0600 before any chmod (there is no window in
 * which another user could connect), and the process umask is restored.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Fastify from 'fastify';
import { listenUnix, parseListen } from '../../src/host/listen.js';

test('listenUnix: the socket is 0600 as listen() creates it, before the chmod; the umask is restored', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-sock-'));
  const socket = path.join(dir, 'api.sock');
  const app = Fastify();
  const before = process.umask(0o022);
  const seen: number[] = [];
  const chmod = fs.chmodSync;
  // Record the mode the socket had when the chmod came: that is what it had since listen().
  fs.chmodSync = ((p: fs.PathLike, m: fs.Mode) => { if (String(p) === socket) seen.push(fs.statSync(socket).mode & 0o777); chmod(p, m); }) as typeof fs.chmodSync;
  try {
    await listenUnix(app, socket);
    assert.deepEqual(seen, [0o600]);
    assert.equal(fs.statSync(socket).mode & 0o777, 0o600);
    assert.equal(process.umask(), 0o022, 'the umask is as it was');
  } finally {
    fs.chmodSync = chmod;
    process.umask(before);
    await app.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('parseListen: HOST:PORT and [v6]:PORT', () => {
  assert.deepEqual(parseListen('127.0.0.1:8443'), { host: '127.0.0.1', port: 8443 });
  assert.deepEqual(parseListen('[::1]:0'), { host: '::1', port: 0 });
  for (const bad of ['8443', 'host:', 'host:99999', ':80', 'a:b']) assert.throws(() => parseListen(bad), /--listen wants HOST:PORT/, bad);
});
