/**
 * Five VMs launched at the same moment all come up (no global serialisation
 * of long actions), each with its own working console, and go away cleanly.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, waitOperation, ConsoleSession, type TestDaemon } from '../helpers/daemon.js';
import { TINY_PROMPT } from '../../src/host/images/tiny.js';

let d: TestDaemon;
before(async () => { d = await startDaemon(); });
after(async () => { await d?.cleanup(); });

test('five launches at once', { timeout: 300_000 }, async () => {
  const names = ['c1', 'c2', 'c3', 'c4', 'c5'];
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

  const dels = await Promise.all(names.map((name) => d.request('DELETE', `/1.0/vms/${name}?force=true`)));
  for (const op of await Promise.all(dels.map((r) => waitOperation(d, r)))) assert.equal(op.status, 'success', JSON.stringify(op));
  assert.deepEqual((await d.request('GET', '/1.0/vms')).body.metadata, []);
});
