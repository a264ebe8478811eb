/**
 * The CLI's side of cloud-init and exec, against a fake daemon: what
 * `hangar launch --ssh-key/--user-data/--network-config` sends (and the
 * default keys from ~/.ssh), what `hangar exec` sends and how it hands the
 * command's output and exit status on, and how `hangar ssh` runs ssh (or
 * falls back to the console).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { FakeDaemon, asyncOp, errorEnv, operation, runHangar, sync, type RecordedRequest } from './cli-fake-daemon.js';
import { ed25519PublicKeyLine } from '../helpers/ssh-keys.js';
import { renderVm } from '../../src/cli/commands/vm.js';

let fake: FakeDaemon;
let home: string;
const KEY1 = ed25519PublicKeyLine('one@host');
const KEY2 = ed25519PublicKeyLine('two@host');
let execAnswer: (req: RecordedRequest) => ReturnType<typeof sync>;

before(async () => {
  fake = await new FakeDaemon()
    .on('POST', '/1.0/vms', asyncOp(operation('op-1', 'success')))
    .on('POST', '/1.0/vms/web/exec', (r) => execAnswer(r))
    .on('POST', '/1.0/vms/bare/exec', errorEnv(503, 'AGENT_UNAVAILABLE', 'VM "bare": the guest agent did not answer within 5000 ms'))
    .on('GET', '/1.0/vms/srv', sync({ name: 'srv', state: 'running', spec: { image: 'debian-12' }, runtime: { nics: [{ name: 'eth0', ipv4: null }, { name: 'eth1', ipv4: '10.77.0.5' }] } }))
    .on('GET', '/1.0/vms/web', sync({ name: 'web', state: 'running', spec: { image: 'debian-12' }, runtime: { nics: [{ name: 'eth0' }] } }))
    .listen();
  home = path.join(fake.dir, 'home');
  fs.mkdirSync(path.join(home, '.ssh'), { recursive: true });
});

after(async () => {
  await fake?.close();
});

const run = (args: string[], input?: string, env: NodeJS.ProcessEnv = {}) =>
  runHangar(args, { env: { ...fake.env(), HOME: home, ...env }, ...(input !== undefined ? { input } : {}) });

function lastBody(url: string): Record<string, unknown> {
  const r = [...fake.requests].reverse().find((q) => q.url === url);
  assert.ok(r, `no request to ${url}`);
  return r.body as Record<string, unknown>;
}

test('launch: --ssh-key files (repeatable, comments skipped), --user-data and --network-config are sent as text', async () => {
  const k = path.join(fake.dir, 'keys.pub');
  fs.writeFileSync(k, `# my keys\n${KEY1}\n\n${KEY2}\n`);
  const k1 = path.join(fake.dir, 'k1.pub');
  fs.writeFileSync(k1, `${KEY1}\n`);
  const ud = path.join(fake.dir, 'ud');
  fs.writeFileSync(ud, '#cloud-config\npackages: [htop]\n');
  const nc = path.join(fake.dir, 'nc');
  fs.writeFileSync(nc, 'version: 2\n');
  const r = await run(['launch', 'debian-12', 'web', '--ssh-key', k, '--ssh-key', k1, '--user-data', ud, '--network-config', nc, '--no-wait']);
  assert.equal(r.code, 0, r.stderr);
  const b = lastBody('/1.0/vms');
  assert.deepEqual(b.sshKeys, [KEY1, KEY2, KEY1]);
  assert.equal(b.userData, '#cloud-config\npackages: [htop]\n');
  assert.equal(b.networkConfig, 'version: 2\n');
});

test('launch: without --ssh-key the user\'s ~/.ssh/id_*.pub keys go; none there, no sshKeys', async () => {
  let r = await run(['launch', 'debian-12', 'web', '--no-wait']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(lastBody('/1.0/vms').sshKeys, undefined);
  fs.writeFileSync(path.join(home, '.ssh', 'id_ed25519.pub'), `${KEY2}\n`);
  fs.writeFileSync(path.join(home, '.ssh', 'id_rsa'), 'PRIVATE, never read');
  fs.writeFileSync(path.join(home, '.ssh', 'id_odd.pub'), 'not a key\n');
  r = await run(['launch', 'debian-12', 'web', '--no-wait']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(lastBody('/1.0/vms').sshKeys, [KEY2]);
});

test('launch: missing, empty, binary or oversized files fail before any request (exit 2)', async () => {
  const before = fake.requests.length;
  const empty = path.join(fake.dir, 'empty.pub');
  fs.writeFileSync(empty, '# nothing\n');
  const bin = path.join(fake.dir, 'ud.gz');
  fs.writeFileSync(bin, Buffer.from([0x1f, 0x8b, 0, 0]));
  const big = path.join(fake.dir, 'big');
  fs.writeFileSync(big, `#cloud-config\n#${'x'.repeat(256 * 1024)}`);
  for (const [args, re] of [
    [['--ssh-key', path.join(fake.dir, 'nope.pub')], /--ssh-key .*nope\.pub: no such file/],
    [['--ssh-key', empty], /holds no key/],
    [['--user-data', bin], /not a text file .*gzip is not accepted/],
    [['--user-data', big], /at most 262144/],
  ] as Array<[string[], RegExp]>) {
    const r = await run(['launch', 'debian-12', 'web', ...args]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, re);
  }
  assert.equal(fake.requests.length, before);
});

test('exec: sends the command (base64), writes stdout/stderr bytes as they are, exits with the command\'s status', async () => {
  execAnswer = (r) => {
    const b = r.body as { command: string[]; input?: string };
    const input = b.input ? Buffer.from(b.input, 'base64').toString() : '';
    return sync({ exitCode: 7, signal: null, stdout: Buffer.from(`out:${b.command.join('|')}:${input}\n`).toString('base64'), stderr: Buffer.from('warn\n').toString('base64'), encoding: 'base64', stdoutTruncated: false, stderrTruncated: false });
  };
  const r = await run(['exec', 'web', '--', 'ls', '-la', '/root']);
  assert.equal(r.code, 7);
  assert.equal(r.stdout, 'out:ls|-la|/root:\n');
  assert.equal(r.stderr, 'warn\n');
  assert.deepEqual(lastBody('/1.0/vms/web/exec'), { command: ['ls', '-la', '/root'], encoding: 'base64' });
  const i = await run(['exec', 'web', '--stdin', '--timeout', '9', '--', 'cat'], 'piped');
  assert.equal(i.stdout, 'out:cat:piped\n');
  assert.deepEqual(lastBody('/1.0/vms/web/exec'), { command: ['cat'], encoding: 'base64', input: Buffer.from('piped').toString('base64'), timeout: 9 });
});

test('exec: a signal gives 128+N; --json prints the result as text; no agent is exit 5 with the daemon\'s message', async () => {
  execAnswer = () => sync({ exitCode: null, signal: 9, stdout: Buffer.from('partial').toString('base64'), stderr: '', encoding: 'base64', stdoutTruncated: false, stderrTruncated: false });
  const s = await run(['exec', 'web', '--', 'sleep', '100']);
  assert.equal(s.code, 137);
  const j = await run(['exec', 'web', '--json', '--', 'sleep', '100']);
  assert.equal(j.code, 137);
  assert.deepEqual(JSON.parse(j.stdout), { vm: 'web', command: ['sleep', '100'], exitCode: null, signal: 9, encoding: 'utf8', stdout: 'partial', stderr: '', stdoutTruncated: false, stderrTruncated: false });
  const n = await run(['exec', 'bare', '--', 'true']);
  assert.equal(n.code, 5);
  assert.match(n.stderr, /^Error: VM "bare": the guest agent did not answer .*\(AGENT_UNAVAILABLE\)$/m);
});

test('exec --wait: tries again while the agent is not up yet, then runs the command; other errors and the deadline end it', async () => {
  const ok = sync({ exitCode: 0, signal: null, stdout: Buffer.from('up\n').toString('base64'), stderr: '', encoding: 'base64', stdoutTruncated: false, stderrTruncated: false });
  const booting = errorEnv(503, 'AGENT_UNAVAILABLE', 'VM "web": the guest agent did not answer within 5000 ms');
  let answers: Array<ReturnType<typeof sync>> = [];
  execAnswer = () => answers.shift() ?? ok;
  const tries = () => fake.requests.filter((q) => q.url === '/1.0/vms/web/exec').length;

  answers = [booting, booting];
  let before = tries();
  const w = await run(['exec', 'web', '--wait', '60', '--', 'uptime']);
  assert.equal(w.code, 0, w.stderr);
  assert.equal(w.stdout, 'up\n');
  assert.match(w.stderr, /Waiting up to 60 s for the guest agent of web/);
  assert.equal(tries() - before, 3, 'two refusals, then the answer');

  // Without --wait, the first refusal is the answer.
  answers = [booting];
  before = tries();
  const n = await run(['exec', 'web', '--', 'uptime']);
  assert.equal(n.code, 5);
  assert.equal(tries() - before, 1);

  // Another error is not waited out.
  answers = [errorEnv(404, 'NOT_FOUND', 'no VM named "web"')];
  before = tries();
  const e = await run(['exec', 'web', '--wait', '60', '--', 'uptime']);
  assert.equal(e.code, 3, e.stderr);
  assert.equal(tries() - before, 1);

  // An agent that never comes: the last refusal once the wait is over.
  const b = await run(['exec', 'bare', '--wait', '2', '--', 'true']);
  assert.equal(b.code, 5);
  assert.match(b.stderr, /\(AGENT_UNAVAILABLE\)$/m);
});

test('ssh: runs ssh as the image\'s user to the VM\'s address, with the arguments after --, and exits with its status', async () => {
  // An ssh on PATH that says how it was called.
  const bin = path.join(fake.dir, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  fs.writeFileSync(path.join(bin, 'ssh'), '#!/bin/sh\necho "ssh $*"\nexit 3\n', { mode: 0o755 });
  const env = { PATH: `${bin}:${process.env.PATH}` };
  const r = await run(['ssh', 'srv', '--', 'uname', '-a'], undefined, env);
  assert.equal(r.code, 3, r.stderr);
  assert.equal(r.stdout, 'ssh -l debian 10.77.0.5 uname -a\n');
  const u = await run(['ssh', 'srv', '--user', 'admin'], undefined, env);
  assert.equal(u.stdout, 'ssh -l admin 10.77.0.5\n');
});

test('ssh: a VM without an address gets the console fallback, which says why and points to exec', async () => {
  const r = await run(['ssh', 'web']);
  assert.match(r.stderr, /web has no address on a Hangar network \(yet: no DHCP lease, or no NIC\), so SSH cannot reach it/);
  assert.match(r.stderr, /hangar exec web -- CMD/);
  // Piped stdin: no terminal for the console.
  assert.equal(r.code, 7, r.stderr);
});

test('show: a cloud-init line with the keys\' comments, whose user-data, the network config', () => {
  const vm = {
    id: 'x', name: 'web', state: 'stopped' as const, createdAt: '2026-11-26T09:41:37.000Z',
    spec: { image: 'debian-12', engine: 'qemu' as const, cpus: 1, memoryBytes: 1 << 30, cmdline: '', disks: [], cloudInit: { sshKeys: [KEY1, KEY2], networkConfig: 'version: 2\n' } },
    runtime: { pid: null, accel: null, startedAt: null, uptimeSeconds: null, lastExit: null },
  };
  assert.match(renderVm(vm), /^ {2}cloud-init: 2 SSH keys \(one@host, two@host\); default user-data; network-config$/m);
  assert.match(renderVm({ ...vm, spec: { ...vm.spec, cloudInit: { sshKeys: [], userData: '#!/bin/sh\necho\n' } } }), /cloud-init: 0 SSH keys; own user-data \(#!\/bin\/sh\)$/m);
});
