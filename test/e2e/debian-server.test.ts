/**
 * A Debian server end to end, through the real daemon and CLI: one
 * debian-12 VM (QEMU, TCG on our hosts) launched with a 4 GiB root disk and
 * an SSH key, reused for every check:
 *
 * - cloud-init read the seed: the console shows `<name> login:` (host name
 *   from meta-data), the key is in /home/debian/.ssh/authorized_keys, the
 *   root file system was grown to the 4 GiB disk;
 * - `hangar exec` through the guest agent: output, exit codes, stdin;
 * - a file written in the guest survives `hangar restart` (a reboot); a
 *   disk snapshot of the running guest, the file deleted, the VM stopped,
 *   the snapshot restored (refused first without --force), the VM started:
 *   the file is back (read after that stop + start), and what was written
 *   after the snapshot is gone;
 * - deleting the VM removes its seed.
 *
 * The times from launch to the login prompt and to cloud-init's end are
 * printed as diagnostics (docs/benchmarks.md), never asserted.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { runHangar, expectOk, type CliResult } from '../helpers/cli.js';
import { ed25519PublicKeyLine } from '../helpers/ssh-keys.js';

const NAME = 'deb-e2e';
const GiB = 1024 ** 3;
/** Generous bounds for a TCG boot on a busy 2-core host; a healthy run takes a fraction. */
const BOOT_LIMIT_MS = 600_000;
const KEY = ed25519PublicKeyLine('e2e@hangar');

let d: TestDaemon;
let launchedAt = 0;

before(async () => {
  d = await startDaemon();
});

after(async () => {
  await d?.cleanup();
});

const hangar = (args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<CliResult> =>
  runHangar(args, { env: d.env, timeoutMs: opts.timeoutMs ?? 300_000, ...(opts.input !== undefined ? { input: opts.input } : {}) });

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `hangar exec NAME [OPTIONS] -- ...`; retried while no agent answers yet (exit 5: the guest is still booting). */
async function execWhenUp(command: string[], limitMs: number, input?: string, options: string[] = []): Promise<CliResult> {
  const end = Date.now() + limitMs;
  for (;;) {
    const r = await hangar(['exec', NAME, ...options, ...(input !== undefined ? ['--stdin'] : []), '--', ...command], input !== undefined ? { input } : {});
    if (r.code !== 5 || !/AGENT_UNAVAILABLE/.test(r.stderr)) return r;
    if (Date.now() > end) assert.fail(`no guest agent in ${NAME} within ${limitMs / 1000} s: ${r.stderr}\nconsole ends with:\n${await consoleTail()}`);
    await sleep(2000);
  }
}

const exec = (command: string[], input?: string): Promise<CliResult> => execWhenUp(command, 0, input);

async function consoleTail(): Promise<string> {
  const r = await d.request('GET', `/1.0/vms/${NAME}/logs?tail=40`);
  return typeof r.body === 'string' ? r.body : JSON.stringify(r.body);
}

/** Polls the console log until `pattern` has shown `count` times. */
async function waitForConsole(pattern: RegExp, count: number, limitMs: number): Promise<void> {
  const end = Date.now() + limitMs;
  let log = '';
  while (Date.now() < end) {
    const r = await d.request('GET', `/1.0/vms/${NAME}/logs`);
    log = typeof r.body === 'string' ? r.body : '';
    if ((log.match(new RegExp(pattern.source, 'g')) ?? []).length >= count) return;
    await sleep(2000);
  }
  assert.fail(`console of ${NAME}: ${pattern} not seen ${count} time(s) within ${limitMs / 1000} s; it ends with:\n${log.slice(-2000)}`);
}

test('launch debian-12 with a 4 GiB root disk and an SSH key: cloud-init names it, the console shows its login prompt', async (t) => {
  const keyFile = path.join(d.dataDir, 'e2e-key.pub');
  fs.writeFileSync(keyFile, `${KEY}\n`);
  launchedAt = Date.now();
  expectOk(await hangar(['launch', 'debian-12', NAME, '--cpus', '2', '--memory', '1G', '--disk', '4G', '--ssh-key', keyFile]), 'launch');
  const vm = (await d.request('GET', `/1.0/vms/${NAME}`)).body.metadata;
  assert.equal(vm.state, 'running');
  assert.deepEqual(vm.spec.cloudInit, { sshKeys: [KEY] });
  // The seed is in the VM's folder, as cloud-init will find it.
  assert.ok(fs.statSync(path.join(d.dataDir, 'vms', NAME, 'cidata.img')).size > 0);
  await waitForConsole(new RegExp(`${NAME} login:`), 1, BOOT_LIMIT_MS);
  t.diagnostic(`launch → "${NAME} login:" ${((Date.now() - launchedAt) / 1000).toFixed(1)} s`);
});

test('exec: cloud-init finished; the key is the default user\'s, the root file system fills the 4 GiB disk', async (t) => {
  // cloud-init may still be at work when the agent first answers: its --wait may take minutes under TCG.
  const done = await execWhenUp(['cloud-init', 'status', '--wait'], BOOT_LIMIT_MS, undefined, ['--timeout', String(BOOT_LIMIT_MS / 1000)]);
  expectOk(done, 'cloud-init status --wait');
  assert.match(done.stdout, /status: done/);
  t.diagnostic(`launch → cloud-init done ${((Date.now() - launchedAt) / 1000).toFixed(1)} s`);
  const keys = expectOk(await exec(['cat', '/home/debian/.ssh/authorized_keys']), 'cat authorized_keys').stdout;
  assert.ok(keys.split('\n').includes(KEY), keys);
  assert.equal(expectOk(await exec(['hostname']), 'hostname').stdout.trim(), NAME);
  const df = expectOk(await exec(['df', '-B1', '--output=size', '/']), 'df').stdout;
  const size = Number(df.trim().split('\n').pop());
  // 4 GiB less the ESP and ext4's own metadata: well above the image's 2 GiB.
  assert.ok(size > 3.5 * GiB && size <= 4 * GiB, `root file system is ${size} bytes`);
});

test('exec: exit codes pass through, stderr is separate, stdin reaches the command, a missing program is refused', async () => {
  const r = await exec(['sh', '-c', 'echo out; echo err >&2; exit 3']);
  assert.equal(r.code, 3);
  assert.equal(r.stdout, 'out\n');
  assert.equal(r.stderr, 'err\n');
  const json = await hangar(['exec', NAME, '--json', '--', 'uname', '-s']);
  assert.equal(JSON.parse(json.stdout).stdout, 'Linux\n');
  const echo = expectOk(await exec(['tr', 'a-z', 'A-Z'], 'hello guest'), 'tr');
  assert.equal(echo.stdout, 'HELLO GUEST');
  const missing = await exec(['no-such-program']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /could not run "no-such-program".*\(INVALID_ARGUMENT\)/);
});

test('a file written in the guest survives a reboot (hangar restart); snapshot, delete the file, restore: it is back', async (t) => {
  const token = randomBytes(8).toString('hex');
  expectOk(await exec(['sh', '-c', 'cat > /root/hangar-marker && sync'], token), 'write marker');
  expectOk(await hangar(['restart', NAME]), 'restart');
  const afterReboot = await execWhenUp(['cat', '/root/hangar-marker'], BOOT_LIMIT_MS);
  assert.equal(expectOk(afterReboot, 'cat after reboot').stdout, token);
  // Same instance: cloud-init kept the host name and did not run its first-boot steps again.
  assert.equal(expectOk(await exec(['hostname']), 'hostname').stdout.trim(), NAME);

  // A disk snapshot of the running guest (the marker is on disk: written with sync), then the marker
  // goes and a file the snapshot never saw comes; restoring puts the disk back as it was.
  const t0 = Date.now();
  expectOk(await hangar(['snapshot', 'create', NAME, 'with-marker']), 'snapshot create');
  expectOk(await exec(['sh', '-c', 'rm /root/hangar-marker && echo later > /root/after-snapshot && sync']), 'delete marker');
  assert.notEqual((await exec(['cat', '/root/hangar-marker'])).code, 0, 'the marker is gone');
  expectOk(await hangar(['stop', NAME]), 'stop');
  // The VM ran since the snapshot: restoring would lose that, so it takes --force.
  const refused = await hangar(['snapshot', 'restore', NAME, 'with-marker']);
  assert.equal(refused.code, 4, refused.stderr);
  assert.match(refused.stderr, /--force/);
  expectOk(await hangar(['snapshot', 'restore', NAME, 'with-marker', '--force']), 'snapshot restore');
  t.diagnostic(`snapshot create + restore (stopped) with the guest commands between: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  expectOk(await hangar(['start', NAME]), 'start');
  const afterRestore = await execWhenUp(['cat', '/root/hangar-marker'], BOOT_LIMIT_MS);
  assert.equal(expectOk(afterRestore, 'cat after restore').stdout, token, 'the marker is back, read after a stop + start');
  assert.notEqual((await exec(['test', '-e', '/root/after-snapshot'])).code, 0, 'what was written after the snapshot is gone');
  const list = expectOk(await hangar(['snapshot', 'list', NAME]), 'snapshot list').stdout;
  assert.match(list, /with-marker/);
});

test('delete removes the VM with its seed', async () => {
  expectOk(await hangar(['delete', NAME, '--force']), 'delete');
  assert.equal(fs.existsSync(path.join(d.dataDir, 'vms', NAME)), false);
});
