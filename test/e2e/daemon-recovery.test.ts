/**
 * VMs outlive the daemon: SIGKILL or SIGTERM of hangard leaves the QEMU
 * process running, the next daemon re-adopts it (console still answers);
 * a VM that died while no daemon watched is recorded stopped; a QEMU
 * process killed behind the daemon's back is reported crashed; a daemon
 * killed in the middle of a start (QEMU runs, its pid not yet recorded)
 * leaves no orphan: the next daemon adopts that QEMU if it answers on QMP
 * and kills exactly its pid if it does not.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDaemon, waitOperation, ConsoleSession, type TestDaemon, type StartDaemonOptions } from '../helpers/daemon.js';
import { TINY_PROMPT } from '../../src/host/images/tiny.js';

let d: TestDaemon;

before(async () => { d = await startDaemon(); });
after(async () => { await d?.cleanup(); });

function pidAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

async function waitDead(pid: number, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (pidAlive(pid) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  assert.ok(!pidAlive(pid), `pid ${pid} still alive`);
}

async function launch(name: string): Promise<number> {
  const op = await waitOperation(d, await d.request('POST', '/1.0/vms', { name, image: 'tiny', memory: '128M' }));
  assert.equal(op.status, 'success', JSON.stringify(op));
  return (await d.request('GET', `/1.0/vms/${name}`)).body.metadata.runtime.pid as number;
}

async function vm(name: string): Promise<any> {
  return (await d.request('GET', `/1.0/vms/${name}`)).body.metadata;
}

async function eventsOf(name: string): Promise<Array<{ type: string; reason?: string }>> {
  return (await d.request('GET', `/1.0/events?vm=${name}`)).body.metadata;
}

test('daemon SIGKILL: the VM keeps running and is re-adopted, console and all', { timeout: 120_000 }, async () => {
  const pid = await launch('keep');
  const con = await ConsoleSession.open(d, 'keep');
  await con.waitForPrompt(TINY_PROMPT);
  assert.match(await con.run('echo before > /tmp/mark; cat /tmp/mark'), /before/);
  const oldDaemon = d.pid;

  await d.kill9();
  assert.ok(!pidAlive(oldDaemon));
  assert.ok(pidAlive(pid), 'the VM survives the daemon');
  await con.waitFor(/$^/, 5000).catch(() => undefined);
  assert.ok(con.closed, 'the console client saw the daemon go');

  await d.restart();
  const v = await vm('keep');
  assert.equal(v.state, 'running');
  assert.equal(v.runtime.pid, pid);
  const con2 = await ConsoleSession.open(d, 'keep');
  await con2.waitForPrompt(TINY_PROMPT);
  assert.match(await con2.run('cat /tmp/mark'), /before/, 'the same guest, with its state');
  await con2.close();

  // Control works on the adopted VM: pause and resume through QMP.
  let op = await waitOperation(d, await d.request('PUT', '/1.0/vms/keep/state', { action: 'pause' }));
  assert.equal(op.status, 'success', JSON.stringify(op));
  op = await waitOperation(d, await d.request('PUT', '/1.0/vms/keep/state', { action: 'resume' }));
  assert.equal(op.status, 'success', JSON.stringify(op));

  // Graceful daemon stop (SIGTERM) also leaves it running.
  await d.stop();
  assert.ok(pidAlive(pid));
  assert.ok(!fs.existsSync(d.socket), 'SIGTERM removes the socket');
  await d.restart();
  assert.equal((await vm('keep')).state, 'running');

  // An adopted VM's exit is still seen: stop it through the API.
  op = await waitOperation(d, await d.request('PUT', '/1.0/vms/keep/state', { action: 'stop', force: true }));
  assert.equal(op.status, 'success', JSON.stringify(op));
  await waitDead(pid);
  assert.equal((await vm('keep')).state, 'stopped');
});

test('a VM that exits while the daemon is down is recorded stopped', { timeout: 120_000 }, async () => {
  const pid = await launch('gone');
  await d.kill9();
  process.kill(pid, 'SIGKILL');
  await waitDead(pid);
  await d.restart();
  const v = await vm('gone');
  assert.equal(v.state, 'stopped');
  assert.equal(v.runtime.pid, null);
  assert.equal(v.runtime.lastExit.reason, 'exited while the daemon was down');
  const ev = await eventsOf('gone');
  assert.deepEqual(ev.at(-1), { ...ev.at(-1), type: 'stopped', reason: 'exited while the daemon was down' });
  // And it starts again.
  const op = await waitOperation(d, await d.request('PUT', '/1.0/vms/gone/state', { action: 'start' }));
  assert.equal(op.status, 'success', JSON.stringify(op));
  await waitOperation(d, await d.request('DELETE', '/1.0/vms/gone?force=true'));
});

test('QEMU killed behind the daemon\'s back: the VM is reported crashed', { timeout: 120_000 }, async () => {
  const pid = await launch('victim');
  process.kill(pid, 'SIGKILL');
  await waitDead(pid);
  const end = Date.now() + 15_000;
  while ((await vm('victim')).state !== 'crashed' && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
  const v = await vm('victim');
  assert.equal(v.state, 'crashed');
  assert.equal(v.runtime.pid, null);
  // docs/engines.md: QEMU dead without a SHUTDOWN event (here: SIGKILL from elsewhere) is `crashed`.
  assert.equal(v.runtime.lastExit.reason, 'crashed', JSON.stringify(v.runtime.lastExit));
  assert.match(v.runtime.lastExit.detail, /SIGKILL/);
  const ev = await eventsOf('victim');
  assert.equal(ev.at(-1)!.type, 'crashed');
  // A crashed VM can be started again, then deleted by force while running.
  let op = await waitOperation(d, await d.request('PUT', '/1.0/vms/victim/state', { action: 'start' }));
  assert.equal(op.status, 'success', JSON.stringify(op));
  const pid2 = (await vm('victim')).runtime.pid as number;
  op = await waitOperation(d, await d.request('DELETE', '/1.0/vms/victim?force=true'));
  assert.equal(op.status, 'success', JSON.stringify(op));
  await waitDead(pid2);
  assert.equal((await d.request('GET', '/1.0/vms/victim')).status, 404);
  assert.equal((await eventsOf('victim')).at(-1)!.type, 'deleted');
});

/** Compiled test preload that holds every QEMU start after the spawn (test/helpers/hold-start-after-spawn.ts). */
const HOLD_PRELOAD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'helpers', 'hold-start-after-spawn.js');

/**
 * A daemon of its own, restarted with the test preload: its next VM start
 * holds after QEMU runs and before the pid is recorded, and writes that pid
 * to a file. Killing the daemon then is a crash mid-start, every time.
 */
async function crashMidStart(name: string): Promise<{ md: TestDaemon; qemuPid: number; strays: Set<number> }> {
  const opts: StartDaemonOptions = { env: {} };
  const md = await startDaemon(opts);
  const marker = path.join(md.dataDir, 'spawned.pid');
  assert.ok(fs.existsSync(HOLD_PRELOAD), `${HOLD_PRELOAD} is built`);
  opts.env!.NODE_OPTIONS = `--import ${HOLD_PRELOAD}`;
  opts.env!.HANGAR_TEST_HOLD_MARKER = marker;
  await md.restart(); // now with the preload
  const res = await md.request('POST', '/1.0/vms', { name, image: 'tiny', memory: '128M' });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  while (!fs.existsSync(marker) || !/\n$/.test(fs.readFileSync(marker, 'utf8'))) await new Promise((r) => setTimeout(r, 50));
  const qemuPid = Number(fs.readFileSync(marker, 'utf8'));
  const strays = new Set([qemuPid]);
  const v = (await md.request('GET', `/1.0/vms/${name}`)).body.metadata;
  assert.equal(v.state, 'starting');
  assert.equal(v.runtime.pid, null, 'the daemon has not recorded the pid yet');
  assert.ok(fs.readFileSync(`/proc/${qemuPid}/cmdline`, 'utf8').includes(md.dataDir), 'the marker names our QEMU');
  await md.kill9();
  assert.ok(pidAlive(qemuPid), 'QEMU outlives the daemon');
  delete opts.env!.NODE_OPTIONS;
  delete opts.env!.HANGAR_TEST_HOLD_MARKER;
  return { md, qemuPid, strays };
}

/** True while pid exists and is not a zombie (a killed QEMU whose parent, the dead daemon, left it to init to reap). */
function qemuRuns(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\S+ \(.*\) [ZX] /s.test(stat);
  } catch {
    return false;
  }
}

/** Kills what a test left running, by pid, only if it is still a process of that daemon's data directory. */
async function killStrays(md: TestDaemon | undefined, strays: Set<number>): Promise<void> {
  for (const pid of strays) {
    let mine = false;
    try { mine = md !== undefined && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(md.dataDir); } catch { /* gone */ }
    if (mine) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } await waitDead(pid); }
  }
  await md?.cleanup();
}

test('daemon killed mid-start, QEMU answers: the next daemon adopts it and says so', { timeout: 120_000 }, async () => {
  let md: TestDaemon | undefined;
  let strays = new Set<number>();
  try {
    const c = await crashMidStart('mid');
    md = c.md; strays = c.strays;
    await md.restart();
    const v = (await md.request('GET', '/1.0/vms/mid')).body.metadata;
    assert.equal(v.state, 'running');
    assert.equal(v.runtime.pid, c.qemuPid, 'the very QEMU that was spawned before the crash');
    const ev = (await md.request('GET', '/1.0/events?vm=mid')).body.metadata as Array<{ type: string; reason?: string }>;
    assert.deepEqual(ev.map((e) => e.type), ['created', 'started']);
    assert.equal(ev[1]!.reason, 'adopted after a daemon restart: its start had not been recorded');
    // The operation the crash cut short is failed, not left running.
    const ops = (await md.request('GET', '/1.0/operations')).body.metadata as Array<{ description: string; status: string }>;
    assert.equal(ops.find((o) => o.description === 'Launching VM mid')?.status, 'failure');
    // The adopted QEMU is controlled and supervised like any other.
    const con = await ConsoleSession.open(md, 'mid');
    await con.waitForPrompt(TINY_PROMPT);
    await con.close();
    const op = await waitOperation(md, await md.request('PUT', '/1.0/vms/mid/state', { action: 'stop', force: true }));
    assert.equal(op.status, 'success', JSON.stringify(op));
    await waitDead(c.qemuPid);
    assert.equal((await md.request('GET', '/1.0/vms/mid')).body.metadata.state, 'stopped');
  } finally {
    await killStrays(md, strays);
  }
});

test('daemon killed mid-start, QEMU does not answer: the next daemon kills exactly that pid', { timeout: 120_000 }, async () => {
  let md: TestDaemon | undefined;
  let strays = new Set<number>();
  try {
    const c = await crashMidStart('deaf');
    md = c.md; strays = c.strays;
    // A stopped process keeps its QMP socket but never answers on it.
    process.kill(c.qemuPid, 'SIGSTOP');
    await md.restart();
    assert.ok(!qemuRuns(c.qemuPid), `the unanswering QEMU was killed before the daemon served requests; ${fs.readFileSync(path.join(md.dataDir, 'hangard.log'), 'utf8').slice(-3000)}`);
    const v = (await md.request('GET', '/1.0/vms/deaf')).body.metadata;
    assert.equal(v.state, 'stopped');
    assert.equal(v.runtime.pid, null);
    assert.equal(v.runtime.lastExit.reason, 'start interrupted by a daemon restart');
    assert.match(v.runtime.lastExit.detail, new RegExp(`pid ${c.qemuPid}\\).*killed`));
    const ev = (await md.request('GET', '/1.0/events?vm=deaf')).body.metadata as Array<{ type: string; reason?: string }>;
    assert.deepEqual(ev.map((e) => e.type), ['created', 'stopped']);
    assert.match(ev[1]!.reason ?? '', /^start interrupted by a daemon restart: /);
    // And the VM starts cleanly again.
    const op = await waitOperation(md, await md.request('PUT', '/1.0/vms/deaf/state', { action: 'start' }));
    assert.equal(op.status, 'success', JSON.stringify(op));
    const pid2 = (await md.request('GET', '/1.0/vms/deaf')).body.metadata.runtime.pid as number;
    strays.add(pid2);
    assert.notEqual(pid2, c.qemuPid);
  } finally {
    await killStrays(md, strays);
  }
});
