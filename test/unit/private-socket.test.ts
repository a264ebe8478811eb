// Unix sockets of the VMM (control, console) are 0600 from the moment they exist.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { listenPrivate } from '../../src/common/private-socket.js';

test('the socket file is 0600 already when bind() creates it, whatever the umask', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hg-sock-'));
  const sock = path.join(dir, 's.sock');
  const server = net.createServer();
  // Look at the file right after the (synchronous) bind, before any chmod could run.
  const listen = server.listen.bind(server) as (...a: unknown[]) => net.Server;
  let modeAtBind = -1;
  (server as unknown as { listen: (...a: unknown[]) => net.Server }).listen = (...a: unknown[]) => {
    const r = listen(...a);
    modeAtBind = fs.statSync(sock).mode & 0o777;
    return r;
  };
  const old = process.umask(0o000);
  try {
    await listenPrivate(server, sock);
  } finally {
    process.umask(old);
    server.close();
  }
  assert.equal(modeAtBind, 0o600);
  assert.equal(fs.statSync(dir).isDirectory(), true);
  assert.equal(process.umask(), old, 'the umask is given back');
  fs.rmSync(dir, { recursive: true, force: true });
});
