/**
 * The console WebSocket route under pressure, over a real Unix socket with
 * real WebSocket clients, the daemon's real route and console hub, and a
 * console stream that stands in for the VM (its guest takes input slowly,
 * and writes output as the test says). Checks that memory stays bounded in
 * both directions: a client flooding input is held back by the guest's pace,
 * a client that stops reading is dropped with a clear close code while the
 * others still get everything, too many clients and oversized frames are
 * refused. Bounds are on buffered bytes and memory, never on time.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Duplex } from 'node:stream';
import { pino } from 'pino';
import WebSocket from 'ws';
import type { FastifyInstance } from 'fastify';
import { buildServer, type ApiContext } from '../../src/host/server.js';
import { ConsoleHub, type ConsoleClient } from '../../src/host/console-hub.js';
import { CONSOLE_CLIENT_BUFFER_MAX, CONSOLE_CLOSE, CONSOLE_MAX_CLIENTS, CONSOLE_MAX_INPUT_FRAME } from '../../src/api/console.js';

const MiB = 1024 * 1024;

/** The VM side: input is taken one chunk per timer tick (a slow guest); output is pushed by the test. */
class FakeVmConsole extends Duplex {
  inputBytes = 0;
  peakBuffered = 0;
  constructor() { super({ allowHalfOpen: true }); }
  override _read(): void { /* output is pushed by the test */ }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.peakBuffered = Math.max(this.peakBuffered, this.writableLength);
    this.inputBytes += chunk.length;
    setTimeout(cb, 1);
  }
}

let dir: string;
let sock: string;
let app: FastifyInstance;
let vm: FakeVmConsole;
let hub: ConsoleHub;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-console-bp-'));
  sock = path.join(dir, 'api.sock');
  vm = new FakeVmConsole();
  hub = new ConsoleHub(async () => vm, () => {});
  // Only what the console route uses: the VM's state and its console hub.
  const vms = {
    get: async () => ({ state: 'running' }),
    attachConsole: (_name: string, c: ConsoleClient) => hub.attach(c),
  };
  // operations: the upload routes key their state on it; the console tests start none.
  const ctx = { version: 'test', dataDir: dir, vms, operations: {}, log: pino({ level: 'silent' }) } as unknown as ApiContext;
  app = await buildServer(ctx);
  await app.listen({ path: sock });
});

after(async () => {
  hub.close('test over');
  await app.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function connect(): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws+unix://${sock}:/1.0/vms/a/console`);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

/** Waits until the hub has `n` clients (attach completes after the upgrade). */
async function clients(n: number): Promise<void> {
  while (hub.clientCount !== n) await new Promise((r) => setTimeout(r, 5));
}

test('input flood: the daemon reads only as fast as the guest takes input', { timeout: 120_000 }, async () => {
  const ws = await connect();
  await clients(1);
  const total = 32 * MiB;
  const frame = Buffer.alloc(CONSOLE_MAX_INPUT_FRAME, 0x61);
  const base = process.memoryUsage().arrayBuffers;
  let peakGrowth = 0;
  // The client sends as fast as its own socket lets it, with at most 16 frames not yet handed to the kernel.
  let sent = 0;
  let inFlight = 0;
  await new Promise<void>((resolve, reject) => {
    const pump = (): void => {
      while (inFlight < 16 && sent < total) {
        inFlight++;
        sent += frame.length;
        ws.send(frame, (err) => {
          if (err) { reject(err); return; }
          inFlight--;
          peakGrowth = Math.max(peakGrowth, process.memoryUsage().arrayBuffers - base);
          if (sent >= total && inFlight === 0) resolve(); else pump();
        });
      }
    };
    pump();
  });
  while (vm.inputBytes < total) await new Promise((r) => setTimeout(r, 10));
  assert.equal(vm.inputBytes, total, 'every byte reaches the guest');
  // Without backpressure the daemon queues the flood in front of the slow guest: tens of MiB.
  assert.ok(vm.peakBuffered <= 4 * CONSOLE_MAX_INPUT_FRAME, `at most a few frames wait for the guest, saw ${vm.peakBuffered} bytes`);
  assert.ok(peakGrowth < 48 * MiB, `buffer memory grew by ${(peakGrowth / MiB).toFixed(1)} MiB`);
  ws.close();
  await clients(0);
});

test('a client that stops reading is dropped (4001); the others get every byte', { timeout: 120_000 }, async () => {
  const slow = await connect();
  const fast = await connect();
  await clients(2);
  slow.pause(); // reads nothing from now on
  const slowClosed = closed(slow);
  let slowGot = 0;
  slow.on('message', (d: Buffer) => { slowGot += d.length; });
  const chunk = Buffer.alloc(64 * 1024, 0x62);
  const total = 32 * MiB;
  let fastGot = 0;
  let pushed = 0;
  // The guest writes at the pace of the fast reader (at most 256 KiB ahead of it), as a UART would.
  await new Promise<void>((resolve) => {
    const push = (): void => {
      while (pushed < total && pushed - fastGot < 256 * 1024) { vm.push(chunk); pushed += chunk.length; }
    };
    fast.on('message', (d: Buffer) => {
      fastGot += d.length;
      if (fastGot >= total) resolve(); else push();
    });
    push();
  });
  assert.equal(fastGot, total, 'the fast reader got everything');
  assert.equal(hub.clientCount, 1, 'the slow reader was dropped');
  slow.resume();
  const c = await slowClosed;
  assert.equal(c.code, CONSOLE_CLOSE.TOO_SLOW);
  assert.match(c.reason, /left unread/);
  // What it still gets is what was queued before the drop: its cap plus the kernel's socket buffers.
  assert.ok(slowGot < CONSOLE_CLIENT_BUFFER_MAX + 8 * MiB, `the dropped reader got ${slowGot} bytes`);
  fast.close();
  await clients(0);
});

test('the console refuses one client more than its cap (4002)', { timeout: 120_000 }, async () => {
  const open: WebSocket[] = [];
  for (let i = 0; i < CONSOLE_MAX_CLIENTS; i++) open.push(await connect());
  await clients(CONSOLE_MAX_CLIENTS);
  const extra = await connect();
  const c = await closed(extra);
  assert.equal(c.code, CONSOLE_CLOSE.TOO_MANY_CLIENTS);
  assert.match(c.reason, new RegExp(`already has ${CONSOLE_MAX_CLIENTS} clients`));
  for (const ws of open) ws.close();
  await clients(0);
});

test('an input frame over the cap ends the session (1009)', { timeout: 120_000 }, async () => {
  const ws = await connect();
  await clients(1);
  const c = closed(ws);
  ws.on('error', () => { /* the server closes after the frame */ });
  ws.send(Buffer.alloc(CONSOLE_MAX_INPUT_FRAME + 1));
  assert.equal((await c).code, CONSOLE_CLOSE.FRAME_TOO_BIG);
  await clients(0);
});
