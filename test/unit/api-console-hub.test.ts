/** The console hub: one engine console stream shared by many clients. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough, Duplex } from 'node:stream';
import { ConsoleHub, type ConsoleClient } from '../../src/host/console-hub.js';
import { CONSOLE_CLOSE } from '../../src/api/console.js';
import type { HangarError } from '../../src/common/errors.js';

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

/** Lets output through: the stream emits it, and the hub sends what gathered (it batches for 10 ms). */
async function turns(): Promise<void> {
  await new Promise((r) => setTimeout(r, 50));
}

function client(): ConsoleClient & { got: string; closedWith: string | null; closeCode: number | null; unread: number } {
  const c = {
    got: '', closedWith: null as string | null, closeCode: null as number | null,
    /** What buffered() reports: output the client has not read yet. */
    unread: 0,
    send(b: Buffer) { c.got += b.toString(); },
    buffered() { return c.unread; },
    close(r: string, code: number) { c.closedWith = r; c.closeCode = code; },
  };
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
  await turns();
  assert.equal(a.got, 'hello\n');
  assert.equal(b.got, 'hello\n');
  ca.write(Buffer.from('from-a'));
  cb.write(Buffer.from('from-b'));
  assert.deepEqual(f.toVm.map(String), ['from-a', 'from-b']);
  ca.detach();
  f.fromVm.write('more');
  await turns();
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

test('a client with too much unread output is dropped; the others keep getting output', async () => {
  const f = fakeConsole();
  const hub = new ConsoleHub(async () => f.stream, () => {}, { clientBufferMax: 1000 });
  const slow = client();
  const fast = client();
  await hub.attach(slow);
  await hub.attach(fast);
  f.fromVm.write('x'.repeat(600));
  await turns();
  assert.equal(slow.closeCode, null);
  slow.unread = 600; // it read nothing of that
  f.fromVm.write('y'.repeat(600));
  await turns();
  assert.equal(slow.closeCode, CONSOLE_CLOSE.TOO_SLOW);
  assert.match(slow.closedWith!, /more than 1000 bytes of console output left unread/);
  assert.equal(slow.got.length, 600, 'nothing more is sent to a dropped client');
  assert.equal(fast.got.length, 1200);
  assert.equal(hub.clientCount, 1);
  hub.close('done');
});

test('the number of clients is capped, with a clear error', async () => {
  const f = fakeConsole();
  const hub = new ConsoleHub(async () => f.stream, () => {}, { maxClients: 2 });
  const a = await hub.attach(client());
  await hub.attach(client());
  await assert.rejects(hub.attach(client()), (e: HangarError) => e.code === 'RESOURCE_EXHAUSTED' && /already has 2 clients/.test(e.message));
  a.detach();
  await hub.attach(client());
  hub.close('done');
});

test('input: write() says when the console stream is full, onWritable says when it drained', async () => {
  let release: (() => void) | null = null;
  const got: Buffer[] = [];
  // A console whose guest takes input only when the test lets it.
  const stream = new Duplex({
    read() {},
    writableHighWaterMark: 100,
    write(chunk: Buffer, _e, cb) { got.push(chunk); release = cb; },
  });
  const hub = new ConsoleHub(async () => stream, () => {});
  const c = await hub.attach(client());
  assert.equal(c.write(Buffer.alloc(50)), true);
  assert.equal(c.write(Buffer.alloc(80)), false, 'over the high-water mark');
  let writable = 0;
  c.onWritable(() => writable++);
  await turns();
  assert.equal(writable, 0, 'still full');
  release!(); // first chunk consumed
  await turns();
  release!(); // second chunk consumed: drained
  await turns();
  assert.equal(writable, 1);
  c.onWritable(() => writable++);
  assert.equal(writable, 2, 'called at once when not full');
  hub.close('done');
});

test('output that arrives in many small pieces at once goes out as one message', async () => {
  const f = fakeConsole();
  const hub = new ConsoleHub(async () => f.stream, () => {});
  const c = client();
  let messages = 0;
  const send = c.send.bind(c);
  c.send = (b: Buffer) => { messages++; send(b); };
  await hub.attach(c);
  for (let i = 0; i < 1000; i++) f.stream.push(Buffer.from('x'));
  await turns();
  assert.equal(c.got, 'x'.repeat(1000));
  assert.equal(messages, 1, 'a UART\'s byte-sized pieces must not become 1000 WebSocket messages');
  hub.close('done');
});
