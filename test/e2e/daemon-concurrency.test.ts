/**
 * What the daemon promises about concurrent actions (docs/api.md, "State
 * checks"; docs/architecture.md): actions on one VM run one after another, in
 * the order they were asked for; actions on different VMs run at the same
 * time. Five launches at once all come up, each with its own console; then a
 * stop held open inside one guest shows both halves of the promise.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, waitOperation, ConsoleSession, type TestDaemon, type TestResponse } from '../helpers/daemon.js';
import { TINY_PROMPT } from '../../src/host/images/tiny.js';

let d: TestDaemon;
before(async () => { d = await startDaemon(); });
after(async () => { await d?.cleanup(); });

const names = ['c1', 'c2', 'c3', 'c4', 'c5'];

async function state(name: string): Promise<string> {
  return (await d.request('GET', `/1.0/vms/${name}`)).body.metadata.state;
}

/** The operation behind a 202, as it is now (no waiting). */
async function opNow(res: TestResponse): Promise<{ status: string; error?: { code: string } }> {
  assert.equal(res.status, 202, JSON.stringify(res.body));
  return (await d.request('GET', String(res.headers.location))).body.metadata;
}

/** Waits at most `s` seconds, once, for the operation behind a 202 (a global lock would leave it running). */
async function waitOnce(res: TestResponse, s: number): Promise<{ status: string; error?: { code: string } }> {
  assert.equal(res.status, 202, JSON.stringify(res.body));
  const w = await d.request('GET', `${String(res.headers.location)}/wait?timeout=${s}`);
  assert.equal(w.status, 200, JSON.stringify(w.body));
  return w.body.metadata;
}

test('five launches at once', { timeout: 300_000 }, async () => {
  const answers = await Promise.all(names.map((name) => d.request('POST', '/1.0/vms', { name, image: 'tiny', memory: '128M' })));
  for (const a of answers) assert.equal(a.status, 202, JSON.stringify(a.body));
  const ops = await Promise.all(answers.map((a) => waitOperation(d, a)));
  for (const op of ops) assert.equal(op.status, 'success', JSON.stringify(op));

  const vms = (await d.request('GET', '/1.0/vms')).body.metadata as Array<{ name: string; state: string; runtime: { pid: number } }>;
  assert.deepEqual(vms.map((v) => v.name), names);
  assert.ok(vms.every((v) => v.state === 'running'));
  assert.equal(new Set(vms.map((v) => v.runtime.pid)).size, 5);

  const host = (await d.request('GET', '/1.0/host')).body.metadata;
  assert.equal(host.memory.allocatedBytes, 5 * 128 * 1024 * 1024);
  assert.equal(host.cpus.allocated, 5);

  // Each guest boots to its own shell and answers with its own name.
  await Promise.all(names.map(async (name) => {
    const con = await ConsoleSession.open(d, name);
    await con.waitForPrompt(TINY_PROMPT, 200_000);
    assert.match(await con.run(`echo I-am-${name}`), new RegExp(`I-am-${name}`));
    await con.close();
  }));
});

test('one VM: actions wait for each other; other VMs: they do not', { timeout: 300_000 }, async () => {
  // c1's guest ignores the power button, so a graceful stop of c1 stays in
  // progress (holding c1's lock) until the test types `poweroff` in the guest.
  const con = await ConsoleSession.open(d, 'c1');
  await con.waitForPrompt(TINY_PROMPT);
  await con.run("printf '#!/bin/sh\\necho tiny: power button ignored > /dev/console\\n' > /etc/acpi/PWRF/00000080");
  const seen = con.output.length;
  const stop = await d.request('PUT', '/1.0/vms/c1/state', { action: 'stop', timeout: 600 });
  await con.waitFor('power button ignored', 120_000, seen);
  assert.equal((await opNow(stop)).status, 'running', 'the stop waits for the guest');
  assert.equal(await state('c1'), 'stopping');

  // Another action on c1 is accepted (an earlier one is queued), but waits its turn.
  const start = await d.request('PUT', '/1.0/vms/c1/state', { action: 'start' });
  assert.equal(start.status, 202, JSON.stringify(start.body));

  // Actions on other VMs go ahead meanwhile: c2 pauses and resumes, c3 is deleted.
  const pause2 = await waitOnce(await d.request('PUT', '/1.0/vms/c2/state', { action: 'pause' }), 120);
  assert.equal(pause2.status, 'success', `pausing c2 while c1 stops: ${JSON.stringify(pause2)}`);
  assert.equal(await state('c2'), 'paused');
  const resume2 = await waitOnce(await d.request('PUT', '/1.0/vms/c2/state', { action: 'resume' }), 120);
  assert.equal(resume2.status, 'success', JSON.stringify(resume2));
  const del3 = await waitOnce(await d.request('DELETE', '/1.0/vms/c3?force=true'), 120);
  assert.equal(del3.status, 'success', JSON.stringify(del3));

  // c1's own actions have not moved: the stop still waits, the start has not begun.
  assert.equal((await opNow(stop)).status, 'running', 'c1 is still stopping');
  assert.equal((await opNow(start)).status, 'running', 'the start waits for the stop');
  assert.equal(await state('c1'), 'stopping');

  // The guest powers itself off: the stop ends, and only then does the queued start run.
  con.send('poweroff\n');
  const stopped = await waitOperation(d, stop);
  assert.equal(stopped.status, 'success', JSON.stringify(stopped));
  const started = await waitOperation(d, start);
  assert.equal(started.status, 'success', `the queued start ran after the stop: ${JSON.stringify(started)}`);
  assert.equal(await state('c1'), 'running');
  const ev = (await d.request('GET', '/1.0/events?vm=c1')).body.metadata as Array<{ type: string; reason?: string }>;
  assert.deepEqual(ev.slice(-2).map((e) => e.type), ['stopped', 'started']);
  assert.match(ev.at(-2)!.reason ?? '', /^poweroff/, 'the guest powered off; it was not killed after a timeout');
  await con.close();

  const left = names.filter((n) => n !== 'c3');
  const dels = await Promise.all(left.map((name) => d.request('DELETE', `/1.0/vms/${name}?force=true`)));
  for (const op of await Promise.all(dels.map((r) => waitOperation(d, r)))) assert.equal(op.status, 'success', JSON.stringify(op));
  assert.deepEqual((await d.request('GET', '/1.0/vms')).body.metadata, []);
});
