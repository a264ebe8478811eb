/**
 * The quick start and the daemon verbs, on a private data directory:
 * `hangar up` starts hangard in the background and a `demo` VM from `tiny`;
 * repeating it is safe; `hangar daemon status|stop` find the daemon through
 * its pid file. The repository-root launcher runs the CLI.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { projectRoot } from '../../src/common/paths.js';
import { runHangar, expectOk, type CliResult } from '../helpers/cli.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-cli-up-'));
const env: NodeJS.ProcessEnv = {
  HANGAR_DATA_DIR: dir,
  HANGAR_SOCKET: path.join(dir, 'hangard.sock'),
  HANGAR_IMAGE_DIR: process.env.HANGAR_IMAGE_DIR ?? path.join(projectRoot(), '.cache', 'images'),
};
/** Every pid this test caused to exist (daemon, VMs), so cleanup can kill exactly those. */
const pids = new Set<number>();

const hangar = (args: string[]): Promise<CliResult> => runHangar(args, { env, timeoutMs: 180_000 });
const ok = expectOk;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Only processes whose command line names our data directory: never a stranger's recycled pid. */
function ours(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir);
  } catch {
    return false;
  }
}

async function notePids(): Promise<void> {
  try {
    pids.add(Number(fs.readFileSync(path.join(dir, 'hangard.pid'), 'utf8').trim()));
  } catch {
    /* no daemon */
  }
  const r = await hangar(['list', '--json']);
  if (r.code === 0) for (const vm of JSON.parse(r.stdout) as Array<{ runtime: { pid: number | null } }>) if (vm.runtime.pid) pids.add(vm.runtime.pid);
}

after(async () => {
  // The test stops everything through the CLI; this is the safety net when an assertion failed midway.
  for (const p of pids) if (p > 1 && alive(p) && ours(p)) process.kill(p, 'SIGKILL');
  for (const p of pids) {
    const end = Date.now() + 5000;
    while (alive(p) && ours(p) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('hangar up, twice, then the daemon verbs', async (t) => {
  await t.test('no daemon yet: status says so with exit code 5', async () => {
    const r = await hangar(['daemon', 'status']);
    assert.equal(r.code, 5);
    assert.match(r.stdout, /hangard is not running/);
    const l = await hangar(['list']);
    assert.equal(l.code, 5);
    assert.match(l.stderr, /the Hangar daemon is not running .*hangar daemon start.*\(UNAVAILABLE\)/);
  });

  await t.test('up starts the daemon and launches demo', async () => {
    const r = await hangar(['up']);
    await notePids();
    ok(r, 'up');
    assert.match(r.stderr, /Starting the Hangar daemon/);
    assert.match(r.stderr, /^Launched demo$/m);
    assert.match(r.stdout, /demo is running/);
    assert.match(r.stdout, /hangar console demo/);
    assert.match(r.stdout, /hangar list/);
  });

  await t.test('up again is safe: the demo is already running', async () => {
    const r = ok(await hangar(['up']), 'second up');
    assert.doesNotMatch(r.stderr, /Starting the Hangar daemon/);
    assert.match(r.stderr, /demo is already running/);
    const j = JSON.parse(ok(await hangar(['up', '--json']), 'up --json').stdout);
    assert.equal(j.action, 'already-running');
    assert.equal(j.vm.name, 'demo');
    assert.equal(j.vm.spec.image, 'tiny');
    const vms = JSON.parse(ok(await hangar(['list', '--json']), 'list').stdout) as unknown[];
    assert.equal(vms.length, 1, 'still one VM');
  });

  await t.test('up starts a stopped demo', async () => {
    ok(await hangar(['stop', 'demo', '--force']), 'stop');
    // --force skips the guest's shutdown: a kill we asked for is a stop, not a crash.
    const stopped = JSON.parse(ok(await hangar(['show', 'demo', '--json']), 'show').stdout) as { state: string; runtime: { lastExit: { reason: string } | null } };
    assert.equal(stopped.state, 'stopped');
    assert.equal(stopped.runtime.lastExit?.reason, 'killed');
    const r = ok(await hangar(['up']), 'up after stop');
    await notePids();
    assert.match(r.stderr, /^Started demo$/m);
  });

  await t.test('daemon status and start find the running daemon', async () => {
    const s = JSON.parse(ok(await hangar(['daemon', 'status', '--json']), 'status').stdout);
    assert.equal(s.running, true);
    assert.equal(typeof s.pid, 'number');
    assert.ok(pids.has(s.pid));
    assert.match(ok(await hangar(['daemon', 'start']), 'start again').stdout, /already running/);
  });

  await t.test('daemon stop ends it through its pid file', async () => {
    ok(await hangar(['delete', 'demo', '--force']), 'delete demo');
    const daemonPid = Number(fs.readFileSync(path.join(dir, 'hangard.pid'), 'utf8').trim());
    const r = ok(await hangar(['daemon', 'stop']), 'daemon stop');
    assert.match(r.stdout, new RegExp(`hangard stopped \\(pid ${daemonPid}\\)`));
    assert.equal(alive(daemonPid), false);
    assert.equal((await hangar(['daemon', 'status'])).code, 5);
    assert.match(ok(await hangar(['daemon', 'stop']), 'second stop').stdout, /not running/);
  });

  await t.test('the repository-root launcher runs the built CLI', () => {
    const r = spawnSync(path.join(projectRoot(), 'hangar'), ['--version'], { encoding: 'utf8', env: { ...process.env, ...env } });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^\d+\.\d+\.\d+\n$/);
  });
});
