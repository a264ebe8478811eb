/**
 * `hangar --remote URL` against a real daemon listening on loopback TCP:
 * requests carry the bearer token from HANGAR_API_TOKEN, a wrong token gives
 * exit code 8, and the events WebSocket streams over TCP too. No guest is
 * booted: a VM created with --no-start is enough to make events.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { projectRoot } from '../../src/common/paths.js';
import { runHangar } from '../unit/cli-fake-daemon.js';

let d: TestDaemon;
let url: string;
let token: string;

before(async () => {
  d = await startDaemon({ args: ['--listen', '127.0.0.1:0'] });
  url = `http://${fs.readFileSync(path.join(d.dataDir, 'hangard.listen'), 'utf8').trim()}`;
  token = fs.readFileSync(path.join(d.dataDir, 'api.token'), 'utf8').trim();
});

after(async () => {
  await d?.cleanup();
});

// No HANGAR_SOCKET here: with --remote the CLI must not need the Unix socket at all.
const remote = (args: string[], tok = token) => runHangar(['--remote', url, ...args], { env: { HANGAR_API_TOKEN: tok, HANGAR_SOCKET: '/nonexistent/hangard.sock' } });

test('the token opens the API over TCP; a wrong one is refused with exit code 8', async () => {
  const r = await remote(['list', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), []);
  const bad = await remote(['list'], 'not-the-token');
  assert.equal(bad.code, 8);
  assert.match(bad.stderr, /^Error: .* \(UNAUTHORIZED\)$/m);
  const st = await remote(['daemon', 'status', '--json']);
  assert.equal(JSON.parse(st.stdout).running, true);
  const start = await remote(['daemon', 'start']);
  assert.equal(start.code, 7);
  assert.match(start.stderr, /remote host cannot be started from here .*\(UNSUPPORTED\)$/m);
});

test('events stream over the remote WebSocket', async () => {
  const root = projectRoot();
  const main = fileEntry(root);
  const follower = spawn(process.execPath, [...main, '--remote', url, 'events', '--follow', '--json'], {
    cwd: root,
    env: { ...process.env, HANGAR_API_TOKEN: token },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  follower.stdout.on('data', (c: Buffer) => (out += c.toString()));
  follower.stderr.on('data', (c: Buffer) => (err += c.toString()));
  try {
    // Once it says so, the follower is on the live stream: these events must arrive over the WebSocket.
    const end0 = Date.now() + 20_000;
    while (!/Following new events/.test(err) && Date.now() < end0) await new Promise((r) => setTimeout(r, 50));
    assert.match(err, /Following new events/);
    const c = await remote(['launch', 'tiny', 'remote-vm', '--no-start']);
    assert.equal(c.code, 0, c.stderr);
    const del = await remote(['delete', 'remote-vm']);
    assert.equal(del.code, 0, del.stderr);
    const end = Date.now() + 20_000;
    while (!/"deleted"/.test(out) && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    const events = out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { vm: string; type: string });
    assert.deepEqual(events.map((e) => `${e.vm}:${e.type}`), ['remote-vm:created', 'remote-vm:deleted'], err);
  } finally {
    follower.kill('SIGTERM');
    await new Promise((r) => follower.once('close', r));
  }
});

function fileEntry(root: string): string[] {
  return import.meta.url.endsWith('.ts') ? ['--import', 'tsx', path.join(root, 'src/cli/main.ts')] : [path.join(root, 'dist/src/cli/main.js')];
}
