/**
 * `hangar --remote URL` against a real daemon listening on loopback TCP with
 * TLS: the CLI pins the daemon's certificate fingerprint on first use (and
 * refuses before sending anything when it is not pinned or has changed),
 * requests carry the bearer token, images upload over the remote, events
 * stream over wss, and failed authentication is rate-limited per address
 * while the Unix socket stays open. Also: what the daemon refuses at start
 * (short token, token file open to others, plain HTTP on a non-loopback
 * address). No guest is booted.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import https from 'node:https';
import { spawn, execFileSync } from 'node:child_process';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { projectRoot } from '../../src/common/paths.js';
import { runHangar } from '../helpers/cli.js';

let d: TestDaemon;
let url: string;
let token: string;
let fingerprint: string;
let cfg: string;
let tmp: string;

before(async () => {
  d = await startDaemon({ args: ['--listen', '127.0.0.1:0'] });
  url = `https://${fs.readFileSync(path.join(d.dataDir, 'hangard.listen'), 'utf8').trim()}`;
  token = fs.readFileSync(path.join(d.dataDir, 'api.token'), 'utf8').trim();
  fingerprint = (await d.request('GET', '/1.0')).body.metadata.tlsFingerprint;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-remote-'));
  cfg = path.join(tmp, 'cfg');
});

after(async () => {
  await d?.cleanup();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

// No HANGAR_SOCKET here: with --remote the CLI must not need the Unix socket at all.
const remote = (args: string[], o: { tok?: string; env?: NodeJS.ProcessEnv; config?: string } = {}) =>
  runHangar(['--remote', url, ...args], { env: { HANGAR_API_TOKEN: o.tok ?? token, HANGAR_SOCKET: '/nonexistent/hangard.sock', HANGAR_CONFIG_DIR: o.config ?? cfg, ...o.env } });

test('the daemon made a TLS certificate (key 0600) and shows its fingerprint', () => {
  assert.match(fingerprint, /^[0-9a-f]{64}$/);
  assert.equal(fs.statSync(path.join(d.dataDir, 'tls', 'server.key')).mode & 0o777, 0o600);
  const der = execFileSync('openssl', ['x509', '-in', path.join(d.dataDir, 'tls', 'server.crt'), '-outform', 'DER']);
  assert.equal(fingerprint, execFileSync('sha256sum', { input: der }).toString().split(' ')[0]);
});

test('an unpinned remote is refused with its fingerprint; a wrong --fingerprint is refused; the right one pins it', async () => {
  const first = await remote(['list']);
  assert.equal(first.code, 8, first.stderr);
  assert.match(first.stderr, new RegExp(`not a trusted remote yet; its certificate's SHA-256 fingerprint is ${fingerprint}.*hangar remote add ${url.replace(/[.]/g, '\\.')} --fingerprint ${fingerprint}`));
  assert.equal(fs.existsSync(path.join(cfg, 'remotes.json')), false, 'nothing was pinned');

  const wrong = await runHangar(['remote', 'add', url, '--fingerprint', 'ab'.repeat(32)], { env: { HANGAR_CONFIG_DIR: cfg } });
  assert.equal(wrong.code, 8, wrong.stderr);
  assert.match(wrong.stderr, /presents certificate SHA-256 .* not the expected abab/);
  // Not on a terminal and no fingerprint given: the user is told how to confirm it.
  const noFp = await runHangar(['remote', 'add', url], { env: { HANGAR_CONFIG_DIR: cfg } });
  assert.equal(noFp.code, 2, noFp.stderr);
  assert.match(noFp.stderr, new RegExp(`SHA-256 fingerprint: ${fingerprint}`));
  assert.match(noFp.stderr, /confirm the fingerprint with --fingerprint/);

  // Colons and upper case, as other tools print fingerprints, are accepted.
  const colons = fingerprint.toUpperCase().match(/../g)!.join(':');
  const add = await runHangar(['remote', 'add', url, '--fingerprint', colons], { env: { HANGAR_CONFIG_DIR: cfg } });
  assert.equal(add.code, 0, add.stderr);
  assert.equal(fs.statSync(path.join(cfg, 'remotes.json')).mode & 0o777, 0o600);
  const list = await runHangar(['remote', 'list', '--json'], { env: { HANGAR_CONFIG_DIR: cfg } });
  assert.deepEqual(JSON.parse(list.stdout).map((r: { remote: string; fingerprint: string }) => [r.remote, r.fingerprint]), [[url, fingerprint]]);

  const ok = await remote(['list', '--json']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.deepEqual(JSON.parse(ok.stdout), []);
  const st = await remote(['daemon', 'status', '--json']);
  assert.equal(JSON.parse(st.stdout).running, true);
  assert.equal(JSON.parse(st.stdout).tlsFingerprint, fingerprint);
});

test('HANGAR_REMOTE_FINGERPRINT pins on first use, for scripts; a wrong one is refused', async () => {
  const other = path.join(tmp, 'cfg-env');
  const bad = await remote(['list'], { config: other, env: { HANGAR_REMOTE_FINGERPRINT: 'cd'.repeat(32) } });
  assert.equal(bad.code, 8, bad.stderr);
  assert.equal(fs.existsSync(path.join(other, 'remotes.json')), false);
  const good = await remote(['list'], { config: other, env: { HANGAR_REMOTE_FINGERPRINT: fingerprint } });
  assert.equal(good.code, 0, good.stderr);
  assert.equal(JSON.parse(fs.readFileSync(path.join(other, 'remotes.json'), 'utf8')).remotes[url].fingerprint, fingerprint);
});

test('a changed certificate is refused before the request (and its token) is sent', async () => {
  // An impostor on another port, with its own certificate, under a pin of the real daemon's fingerprint.
  const key = path.join(tmp, 'imp.key');
  const crt = path.join(tmp, 'imp.crt');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', crt, '-days', '1', '-subj', '/CN=impostor'], { stdio: 'ignore' });
  let requests = 0;
  const imp = https.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(crt) }, (_req, res) => { requests++; res.end('{}'); });
  await new Promise<void>((r) => imp.listen(0, '127.0.0.1', () => r()));
  try {
    const impUrl = `https://127.0.0.1:${(imp.address() as { port: number }).port}`;
    const file = path.join(cfg, 'remotes.json');
    const pins = JSON.parse(fs.readFileSync(file, 'utf8'));
    pins.remotes[impUrl] = { fingerprint, addedAt: new Date().toISOString() };
    fs.writeFileSync(file, JSON.stringify(pins));
    const r = await runHangar(['--remote', impUrl, 'list'], { env: { HANGAR_API_TOKEN: token, HANGAR_CONFIG_DIR: cfg } });
    assert.equal(r.code, 8, r.stderr);
    assert.match(r.stderr, new RegExp(`TLS certificate of ${impUrl.replace(/[.]/g, '\\.')} has changed: pinned SHA-256 ${fingerprint}, the server presents [0-9a-f]{64}.*hangar remote remove`));
    // Even HANGAR_REMOTE_FINGERPRINT does not override an existing pin.
    const imposterFp = execFileSync('openssl', ['x509', '-in', crt, '-noout', '-fingerprint', '-sha256']).toString().split('=')[1]!.trim();
    const r2 = await runHangar(['--remote', impUrl, 'list'], { env: { HANGAR_API_TOKEN: token, HANGAR_CONFIG_DIR: cfg, HANGAR_REMOTE_FINGERPRINT: imposterFp } });
    assert.equal(r2.code, 8, r2.stderr);
    assert.equal(requests, 0, 'no HTTP request (so no token) reached the impostor');
  } finally {
    imp.close();
  }
});

test('plain http is refused for a non-loopback remote before any connection', async () => {
  const r = await runHangar(['--remote', 'http://192.0.2.1:8443', 'list'], { env: { HANGAR_API_TOKEN: token, HANGAR_CONFIG_DIR: cfg } });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /plain http would send the token in clear text/);
});

test('image import uploads local files over the remote, with progress', async () => {
  const kernel = path.join(tmp, 'vmlinux');
  const b = Buffer.alloc(3 * 2 ** 20, 0x90);
  b.writeUInt32BE(0x7f454c46, 0); b[4] = 2; b[5] = 1; b[6] = 1; b.writeUInt16LE(2, 16); b.writeUInt16LE(62, 18);
  fs.writeFileSync(kernel, b);
  const initrd = path.join(tmp, 'initrd.img');
  fs.writeFileSync(initrd, Buffer.concat([Buffer.from('070701'), Buffer.alloc(5000, 0x30)]));
  const r = await remote(['image', 'import', 'remote-img', '--kernel', kernel, '--initrd', initrd, '--cmdline', 'console=ttyS0']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /Uploading image remote-img/);
  assert.match(r.stderr, /uploading kernel \d+%/);
  assert.match(r.stdout, /Imported image remote-img/);
  const img = (await d.request('GET', '/1.0/images/remote-img')).body.metadata;
  assert.equal(img.sizeBytes, b.length + 5006);
  assert.deepEqual(fs.readFileSync(img.kernel), b);
  // A file that is not a kernel is refused by the daemon, and nothing is kept.
  const bad = await remote(['image', 'import', 'bad-img', '--kernel', initrd]);
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /neither an x86-64 ELF64 executable nor a Linux bzImage/);
  assert.equal((await d.request('GET', '/1.0/images/bad-img')).status, 404);
  const del = await remote(['image', 'delete', 'remote-img']);
  assert.equal(del.code, 0, del.stderr);
});

test('events stream over the remote WebSocket (wss, pinned)', async () => {
  const root = projectRoot();
  const follower = spawn(process.execPath, [...fileEntry(root), '--remote', url, 'events', '--follow', '--json'], {
    cwd: root,
    env: { ...process.env, HANGAR_API_TOKEN: token, HANGAR_CONFIG_DIR: cfg },
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

/** One request to the TLS listener, trusting the daemon's certificate by its fingerprint. */
function tcp(p: string, auth?: string): Promise<{ status: number; headers: Record<string, unknown>; body: any }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = https.request({ host: u.hostname, port: Number(u.port), path: p, rejectUnauthorized: false, agent: false, headers: auth ? { authorization: auth } : {} }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => { text += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text ? JSON.parse(text) : undefined }));
    });
    req.on('socket', (s) => s.once('secureConnect', () => {
      const fp = (s as import('node:tls').TLSSocket).getPeerCertificate().fingerprint256.replace(/:/g, '').toLowerCase();
      if (fp !== fingerprint) req.destroy(new Error('not the daemon'));
    }));
    req.on('error', reject);
    req.end();
  });
}

// Last: it blocks 127.0.0.1 on this daemon's TCP listener for a minute.
test('failed authentication is rate-limited per address (429, Retry-After); the Unix socket is never locked out', async () => {
  for (let i = 0; i < 10; i++) {
    const r = await tcp('/1.0/vms', `Bearer wrong-${i}`);
    assert.equal(r.status, 401, `attempt ${i}`);
    assert.equal(r.body.error.code, 'UNAUTHORIZED');
  }
  const blocked = await tcp('/1.0/vms', 'Bearer wrong-again');
  assert.equal(blocked.status, 429);
  assert.equal(blocked.body.error.code, 'UNAUTHORIZED');
  const retry = Number(blocked.headers['retry-after']);
  assert.ok(retry >= 1 && retry <= 60, String(blocked.headers['retry-after']));
  // While blocked, even the right token waits: guessing must not go on.
  assert.equal((await tcp('/1.0/vms', `Bearer ${token}`)).status, 429);
  const cli = await remote(['list']);
  assert.equal(cli.code, 8, cli.stderr);
  assert.match(cli.stderr, /too many failed authentications from .*retry in \d+ s/);
  // The Unix socket has no token and no limit.
  assert.equal((await d.request('GET', '/1.0/vms')).status, 200);
});

test('the daemon refuses to start with a short token, a token file others can read, or plain HTTP off loopback', async () => {
  const main = path.join(projectRoot(), 'dist', 'src', 'host', 'main.js');
  const start = (dataDir: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stderr: string }> => new Promise((resolve) => {
    const c = spawn(process.execPath, [main, '--data-dir', dataDir, '--socket', path.join(dataDir, 's.sock'), ...args], { env: { ...process.env, HANGAR_API_TOKEN: '', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    c.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    const timer = setTimeout(() => c.kill('SIGKILL'), 30_000);
    c.on('close', (code) => { clearTimeout(timer); resolve({ code, stderr }); });
  });
  const dir = path.join(tmp, 'refuse');
  fs.mkdirSync(dir);
  const short = await start(dir, ['--listen', '127.0.0.1:0'], { HANGAR_API_TOKEN: 'x' });
  assert.equal(short.code, 1, short.stderr);
  assert.match(short.stderr, /API token from HANGAR_API_TOKEN has 1 characters; at least 32 \(128 bits as hex\) are required/);
  const s31 = await start(dir, ['--listen', '127.0.0.1:0'], { HANGAR_API_TOKEN: 'a'.repeat(31) });
  assert.match(s31.stderr, /has 31 characters/);

  fs.writeFileSync(path.join(dir, 'api.token'), `${'f'.repeat(64)}\n`, { mode: 0o644 });
  fs.chmodSync(path.join(dir, 'api.token'), 0o644);
  const open = await start(dir, ['--listen', '127.0.0.1:0']);
  assert.equal(open.code, 1, open.stderr);
  assert.match(open.stderr, /api\.token has mode 0644: group or others may read it\. Run: chmod 600/);
  fs.chmodSync(path.join(dir, 'api.token'), 0o640);
  assert.match((await start(dir, ['--listen', '127.0.0.1:0'])).stderr, /mode 0640/);

  const plain = await start(dir, ['--listen', '0.0.0.0:0', '--insecure-http'], { HANGAR_API_TOKEN: 'f'.repeat(64) });
  assert.equal(plain.code, 1, plain.stderr);
  assert.match(plain.stderr, /--insecure-http serves plain HTTP and is allowed on loopback addresses only/);
  assert.equal(fs.existsSync(path.join(dir, 's.sock')), false, 'nothing left listening');
});
