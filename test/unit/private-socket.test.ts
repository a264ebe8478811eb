// Unix sockets of the VMM (control, console) are 0600 from the moment they exist, and exist only once they listen.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { listenPrivate } from '../../src/common/private-socket.js';

/** Runs listenPrivate with a hook called right after the (synchronous) bind inside server.listen(). */
async function listenObserved(server: net.Server, sock: string, atBind: (boundPath: string) => void): Promise<void> {
  const listen = server.listen.bind(server) as (...a: unknown[]) => net.Server;
  (server as unknown as { listen: (...a: unknown[]) => net.Server }).listen = (...a: unknown[]) => {
    const r = listen(...a);
    atBind(a[0] as string);
    return r;
  };
  await listenPrivate(server, sock);
}

test('the socket file is 0600 already when bind() creates it, whatever the umask', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hg-sock-'));
  const sock = path.join(dir, 's.sock');
  const server = net.createServer();
  let modeAtBind = -1;
  const old = process.umask(0o000);
  try {
    await listenObserved(server, sock, (bound) => { modeAtBind = fs.statSync(bound).mode & 0o777; });
  } finally {
    process.umask(old);
    server.close();
  }
  assert.equal(modeAtBind, 0o600);
  assert.equal(process.umask(), old, 'the umask is given back');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('the socket path appears only once the socket accepts, and goes when the server closes', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hg-sock-'));
  const sock = path.join(dir, 'api.sock');
  const server = net.createServer((c) => c.end('hello'));
  let pathAtBind: boolean | undefined;
  await listenObserved(server, sock, () => { pathAtBind = fs.existsSync(sock); });
  assert.equal(pathAtBind, false, 'between bind() and listen() the real path does not exist yet');
  const got = await new Promise<string>((resolve, reject) => {
    const c = net.connect(sock);
    let s = '';
    c.on('data', (d) => { s += d.toString(); });
    c.on('end', () => resolve(s));
    c.on('error', reject);
  });
  assert.equal(got, 'hello');
  assert.deepEqual(fs.readdirSync(dir), ['api.sock'], 'no staging name is left behind');
  await new Promise<void>((r) => server.close(() => r()));
  assert.equal(fs.existsSync(sock), false, 'closing removes the socket file');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('closing does not remove a socket another process has since put at the path', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hg-sock-'));
  const sock = path.join(dir, 'api.sock');
  const first = net.createServer();
  const second = net.createServer();
  t.after(() => { first.close(); second.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  await listenPrivate(first, sock);
  await listenPrivate(second, sock); // replaces the path, as a restarted VMM does
  await new Promise<void>((r) => first.close(() => r()));
  assert.equal(fs.existsSync(sock), true, 'the second server keeps its socket');
  await new Promise<void>((r) => second.close(() => r()));
  assert.equal(fs.existsSync(sock), false);
});
