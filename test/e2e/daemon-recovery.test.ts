/**
 * VMs outlive the daemon: SIGKILL or SIGTERM of hangard leaves the QEMU
 * process running, the next daemon re-adopts it (console still answers);
 * a VM that died while no daemon watched is recorded stopped; a QEMU
 * process killed behind the daemon's back is reported crashed.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startDaemon, waitOperation, ConsoleSession, type TestDaemon } from '../helpers/daemon.js';
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
  assert.ok(['killed', 'crashed'].includes(v.runtime.lastExit.reason), JSON.stringify(v.runtime.lastExit));
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
