/** The console hub: one engine console stream shared by many clients. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough, Duplex } from 'node:stream';
import { ConsoleHub, type ConsoleClient } from '../../src/host/console-hub.js';

/** A console stream whose two directions are visible to the test. */
function fakeConsole(): { stream: Duplex; toVm: Buffer[]; fromVm: PassThrough } {
  const toVm: Buffer[] = [];
  const fromVm = new PassThrough();
  const stream = new Duplex({
    read() { /* pushed below */ },
    write(chunk: Buffer, _enc, cb) { toVm.push(chunk); cb(); },
  });
  fromVm.on('data', (c: Buffer) => stream.push(c));
  fromVm.on('end', () => stream.push(null));
  return { stream, toVm, fromVm };
}

function client(): ConsoleClient & { got: string; closedWith: string | null } {
  const c = { got: '', closedWith: null as string | null, send(b: Buffer) { c.got += b.toString(); }, close(r: string) { c.closedWith = r; } };
  return c;
}

test('opens the engine console once, fans output out, takes input from anyone', async () => {
  const f = fakeConsole();
  let opens = 0;
  let gone = 0;
  const hub = new ConsoleHub(async () => { opens++; return f.stream; }, () => { gone++; });
  const a = client();
  const b = client();
  const [ca, cb] = await Promise.all([hub.attach(a), hub.attach(b)]);
  assert.equal(opens, 1);
  assert.equal(hub.clientCount, 2);
  f.fromVm.write('hello\n');
  await new Promise((r) => setImmediate(r));
  assert.equal(a.got, 'hello\n');
  assert.equal(b.got, 'hello\n');
  ca.write(Buffer.from('from-a'));
  cb.write(Buffer.from('from-b'));
  assert.deepEqual(f.toVm.map(String), ['from-a', 'from-b']);
  ca.detach();
  f.fromVm.write('more');
  await new Promise((r) => setImmediate(r));
  assert.equal(a.got, 'hello\n');
  assert.equal(b.got, 'hello\nmore');
  // The stream ending closes the remaining clients and the hub.
  f.fromVm.end();
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(b.closedWith, 'console stream ended');
  assert.equal(gone, 1);
  await assert.rejects(hub.attach(client()));
});

test('a failed open can be retried', async () => {
  const f = fakeConsole();
  let tries = 0;
  const hub = new ConsoleHub(async () => { if (tries++ === 0) throw new Error('not yet'); return f.stream; }, () => {});
  await assert.rejects(hub.attach(client()), /not yet/);
  const c = await hub.attach(client());
  c.write(Buffer.from('x'));
  assert.deepEqual(f.toVm.map(String), ['x']);
  hub.close('done');
});
