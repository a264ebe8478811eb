/**
 * One real VM (QEMU, tiny Linux guest) through its whole life over the API:
 * launch, console, pause/resume, logs, restart, graceful stop, delete, and
 * the lifecycle events it leaves, live on the events WebSocket and stored.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { WebSocket } from 'ws';
import { startDaemon, waitOperation, ConsoleSession, type TestDaemon } from '../helpers/daemon.js';
import { TINY_PROMPT, TINY_BANNER } from '../../src/host/images/tiny.js';
import { START_TICKS, STOP_TICKS, lastTick, waitForTick, watchWindowMs } from '../helpers/guest-ticks.js';

let d: TestDaemon;
const liveEvents: Array<{ seq: number; vm: string; type: string; reason?: string }> = [];
let eventsWs: WebSocket;

before(async () => {
  d = await startDaemon();
  eventsWs = new WebSocket(`ws+unix://${d.socket}:/1.0/events?vm=life`);
  eventsWs.on('message', (m: Buffer) => liveEvents.push(JSON.parse(m.toString())));
  await new Promise((r, j) => { eventsWs.once('open', r); eventsWs.once('error', j); });
});

after(async () => {
  eventsWs?.close();
  await d?.cleanup();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until the guest's counter has printed its last tick (it ends within a round of the stop flag). */
async function quietTicks(con: ConsoleSession): Promise<void> {
  for (let seen = lastTick(con.output); ; ) {
    await sleep(1500);
    const now = lastTick(con.output);
    if (now === seen) return;
    seen = now;
  }
}

function pidAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

test('launch, console, pause/resume, logs, restart, stop, delete', { timeout: 420_000 }, async () => {
  // Launch: 202 + Location, the operation ends in success with the VM running.
  const res = await d.request('POST', '/1.0/vms', { name: 'life', image: 'tiny', memory: '128M', cpus: 1 });
  assert.equal(res.status, 202);
  assert.match(String(res.headers.location), /^\/1\.0\/operations\/[0-9a-f-]{36}$/);
  assert.equal(res.body.type, 'async');
  const op = await waitOperation(d, res);
  assert.equal(op.status, 'success', JSON.stringify(op));
  let vm = (await d.request('GET', '/1.0/vms/life')).body.metadata;
  assert.equal(vm.state, 'running');
  assert.equal(vm.runtime.accel, (await d.request('GET', '/1.0/host')).body.metadata.defaultAccel);
  assert.ok(pidAlive(vm.runtime.pid));
  const firstPid: number = vm.runtime.pid;

  // Console: shell prompt, a command, its output.
  const con = await ConsoleSession.open(d, 'life');
  await con.waitForPrompt(TINY_PROMPT);
  assert.match(await con.run('echo hangar-$((6*7))'), /hangar-42/);
  assert.match(await con.run('cat /proc/cpuinfo | grep -c ^processor'), /\b1\b/);
  assert.match(await con.run('hostname'), /\nlife\r?\n/, 'the guest is named after its VM');

  // A second client sees the same console (one engine connection, fanned out).
  const con2 = await ConsoleSession.open(d, 'life');
  const seen2 = con2.output.length;
  assert.match(await con.run('echo shared-console'), /shared-console/);
  await con2.waitFor('shared-console', 10_000, seen2);
  await con2.close();

  // Pause: the guest's vCPUs really stop. A counter in the guest prints a tick
  // every 0.2 s; while the VM is paused no new tick may appear, and input typed
  // meanwhile is answered only after resume.
  con.send(`${START_TICKS}\n`);
  const firstTick = await waitForTick(() => con.output, 1);
  const pace0 = Date.now();
  const paceTick = await waitForTick(() => con.output, firstTick + 5);
  const watchMs = watchWindowMs(Date.now() - pace0, paceTick - firstTick);
  let r = await d.request('PUT', '/1.0/vms/life/state', { action: 'pause' });
  assert.equal((await waitOperation(d, r)).status, 'success');
  assert.equal((await d.request('GET', '/1.0/vms/life')).body.metadata.state, 'paused');
  // A tick already on its way out of the guest when the pause took effect may still arrive.
  await sleep(1000);
  const frozenAt = lastTick(con.output);
  const beforePaused = con.output.length;
  con.send('echo resumed-$((2+3))\n');
  r = await d.request('PUT', '/1.0/vms/life/state', { action: 'pause' });
  assert.equal(r.status, 409, 'pausing a paused VM is refused at once');
  assert.equal(r.body.error.code, 'INVALID_STATE');
  await sleep(watchMs);
  assert.equal(lastTick(con.output), frozenAt, `the paused guest went on counting (watched ${watchMs} ms)`);
  assert.ok(!con.output.slice(beforePaused).includes('resumed-5'), 'a paused guest does not answer');
  r = await d.request('PUT', '/1.0/vms/life/state', { action: 'resume' });
  assert.equal((await waitOperation(d, r)).status, 'success');
  await con.waitFor('resumed-5', 60_000, beforePaused);
  await waitForTick(() => con.output, frozenAt + 3);
  assert.equal((await d.request('GET', '/1.0/vms/life')).body.metadata.state, 'running');
  await con.run(STOP_TICKS);
  await quietTicks(con);

  // Logs: the persisted console output, tail honoured: exactly the last lines.
  const logs = await d.request('GET', '/1.0/vms/life/logs');
  assert.equal(logs.status, 200);
  assert.match(String(logs.headers['content-type']), /^text\/plain/);
  assert.ok(String(logs.body).includes(TINY_BANNER));
  assert.ok(String(logs.body).includes(`tick-${frozenAt}\r\n`), 'the counter is in the log');
  const lastOut = con.output.length;
  con.send('echo tail-$((1+1)); echo tail-$((2+1))\n');
  await con.waitFor(new RegExp(`tail-3\\r\\n[^]*${TINY_PROMPT}`), 30_000, lastOut);
  await sleep(500); // the shell may still send its cursor query after the prompt
  const full = String((await d.request('GET', '/1.0/vms/life/logs')).body);
  const tail = await d.request('GET', '/1.0/vms/life/logs?tail=3');
  assert.equal(tail.status, 200);
  const tailLines = String(tail.body).split('\n');
  assert.equal(tailLines.length, 3, JSON.stringify(tail.body));
  assert.deepEqual(tailLines.slice(0, 2), ['tail-2\r', 'tail-3\r']);
  assert.ok(tailLines[2]!.includes(TINY_PROMPT), JSON.stringify(tailLines[2]));
  assert.equal(tail.body, full.split('\n').slice(-3).join('\n'), 'the tail is the end of the whole log');

  // Restart: a new process, the shell comes back; the old console is closed.
  r = await d.request('PUT', '/1.0/vms/life/state', { action: 'restart' });
  assert.equal((await waitOperation(d, r)).status, 'success');
  await con.waitFor(/$^/, 10_000).catch(() => undefined);
  assert.ok(con.closed, 'console clients are closed when the VM process ends');
  vm = (await d.request('GET', '/1.0/vms/life')).body.metadata;
  assert.equal(vm.state, 'running');
  assert.notEqual(vm.runtime.pid, firstPid);
  assert.ok(!pidAlive(firstPid));
  const con3 = await ConsoleSession.open(d, 'life');
  await con3.waitForPrompt(TINY_PROMPT);

  // Delete refuses a running VM without force.
  r = await d.request('DELETE', '/1.0/vms/life');
  assert.equal(r.status, 409);
  assert.equal(r.body.error.code, 'INVALID_STATE');

  // Graceful stop: the guest powers off.
  const pid2: number = vm.runtime.pid;
  r = await d.request('PUT', '/1.0/vms/life/state', { action: 'stop', timeout: 60 });
  assert.equal((await waitOperation(d, r)).status, 'success');
  vm = (await d.request('GET', '/1.0/vms/life')).body.metadata;
  assert.equal(vm.state, 'stopped');
  assert.equal(vm.runtime.pid, null);
  assert.equal(vm.runtime.lastExit.reason, 'poweroff');
  assert.ok(!pidAlive(pid2));
  await con3.close();

  // The console of a stopped VM is refused with our error envelope.
  await assert.rejects(ConsoleSession.open(d, 'life'), /HTTP 409/);

  // Delete: row and run directory gone.
  r = await d.request('DELETE', '/1.0/vms/life');
  assert.equal((await waitOperation(d, r)).status, 'success');
  assert.equal((await d.request('GET', '/1.0/vms/life')).status, 404);
  assert.ok(!fs.existsSync(path.join(d.dataDir, 'vms', 'life')));

  // Events: stored in order, and the same ones arrived live.
  const stored = (await d.request('GET', '/1.0/events?vm=life')).body.metadata as Array<{ seq: number; type: string; reason?: string }>;
  assert.deepEqual(stored.map((e) => e.type), ['created', 'started', 'paused', 'resumed', 'stopped', 'started', 'stopped', 'deleted']);
  assert.equal(stored[6]!.reason?.startsWith('poweroff'), true);
  const since = stored[3]!.seq;
  assert.deepEqual((await d.request('GET', `/1.0/events?vm=life&since=${since}`)).body.metadata.map((e: { seq: number }) => e.seq), stored.slice(4).map((e) => e.seq));
  for (let i = 0; i < 50 && liveEvents.length < stored.length; i++) await new Promise((res) => setTimeout(res, 100));
  assert.deepEqual(liveEvents.map((e) => e.seq), stored.map((e) => e.seq));
});
