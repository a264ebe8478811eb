/**
 * The QMP client against a fake QMP server (scripted replies, to exercise
 * id matching, errors, timeouts, events and disconnects precisely) and
 * against a real QEMU with no machine (`-machine none`).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { connectQmp, type QmpEvent, type QmpClient } from '../../src/engines/qemu/qmp.js';
import { isHangarError } from '../../src/common/errors.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-qmp-'));
const spawned: number[] = [];
after(() => {
  for (const pid of spawned) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});

type Handler = (msg: Record<string, unknown>, sock: net.Socket) => void;

/** A fake QMP server: sends a greeting, answers qmp_capabilities, hands other commands to `onCommand`. */
function fakeServer(sockPath: string, onCommand: Handler): Promise<net.Server> {
  const server = net.createServer((sock) => {
    sock.write(JSON.stringify({ QMP: { version: { qemu: { major: 9, minor: 9, micro: 9 } }, capabilities: [] } }) + '\r\n');
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      let nl: number;
      // Messages may arrive without newlines between them; the client always sends one per line.
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
        buf = buf.slice(nl + 1);
        if (msg.execute === 'qmp_capabilities') sock.write(JSON.stringify({ return: {}, id: msg.id }) + '\r\n');
        else onCommand(msg, sock);
      }
    });
    sock.on('error', () => {});
  });
  return new Promise((resolve) => server.listen(sockPath, () => resolve(server)));
}

const reply = (sock: net.Socket, obj: unknown) => sock.write(JSON.stringify(obj) + '\r\n');

test('fake server: replies are matched by id even out of order; events are emitted', async () => {
  const sp = path.join(tmp, 'a.sock');
  const held: Array<[Record<string, unknown>, net.Socket]> = [];
  const server = await fakeServer(sp, (msg, sock) => {
    held.push([msg, sock]);
    if (held.length === 2) {
      // Answer the second first, with an event in between.
      reply(sock, { return: { n: 2 }, id: held[1]![0].id });
      reply(sock, { event: 'SHUTDOWN', data: { guest: true, reason: 'guest-shutdown' }, timestamp: { seconds: 1, microseconds: 2 } });
      reply(sock, { return: { n: 1 }, id: held[0]![0].id });
    }
  });
  const qmp = await connectQmp(sp);
  const events: QmpEvent[] = [];
  qmp.on('event', (e: QmpEvent) => events.push(e));
  assert.equal(qmp.greeting?.version?.qemu?.major, 9);
  const [a, b] = await Promise.all([qmp.execute('one'), qmp.execute('two', { x: 1 })]);
  assert.deepEqual(a, { n: 1 });
  assert.deepEqual(b, { n: 2 });
  assert.notEqual(held[0]![0].id, held[1]![0].id, 'each command has its own id');
  assert.deepEqual(held[1]![0].arguments, { x: 1 });
  assert.equal(events.length, 1);
  assert.equal(events[0]!.event, 'SHUTDOWN');
  assert.equal(events[0]!.data?.reason, 'guest-shutdown');
  qmp.close();
  server.close();
});

test('fake server: an error reply is ENGINE_FAILED with class and desc', async () => {
  const sp = path.join(tmp, 'b.sock');
  const server = await fakeServer(sp, (msg, sock) => reply(sock, { error: { class: 'CommandNotFound', desc: 'The command nope has not been found' }, id: msg.id }));
  const qmp = await connectQmp(sp);
  await assert.rejects(qmp.execute('nope'), (e: unknown) => isHangarError(e) && e.code === 'ENGINE_FAILED' && e.details?.class === 'CommandNotFound');
  qmp.close();
  server.close();
});

test('fake server: a command without reply times out with TIMEOUT, later replies are ignored', async () => {
  const sp = path.join(tmp, 'c.sock');
  let late: (() => void) | null = null;
  const server = await fakeServer(sp, (msg, sock) => {
    if (msg.execute === 'slow') late = () => reply(sock, { return: {}, id: msg.id });
    else reply(sock, { return: 'ok', id: msg.id });
  });
  const qmp = await connectQmp(sp);
  await assert.rejects(qmp.execute('slow', undefined, { timeoutMs: 100 }), (e: unknown) => isHangarError(e) && e.code === 'TIMEOUT');
  late!();
  assert.equal(await qmp.execute('fast'), 'ok', 'the connection still works after a timeout');
  qmp.close();
  server.close();
});

test('fake server: a disconnect rejects pending commands and emits close once', async () => {
  const sp = path.join(tmp, 'd.sock');
  const server = await fakeServer(sp, (_msg, sock) => sock.destroy());
  const qmp = await connectQmp(sp);
  let closes = 0;
  qmp.on('close', () => closes++);
  await assert.rejects(qmp.execute('anything'), (e: unknown) => isHangarError(e) && e.code === 'UNAVAILABLE');
  assert.equal(closes, 1);
  assert.equal(qmp.closed, true);
  await assert.rejects(qmp.execute('after'), (e: unknown) => isHangarError(e) && e.code === 'UNAVAILABLE');
  server.close();
});

test('connect retries until the socket appears, and gives up with TIMEOUT when it never does', async () => {
  const sp = path.join(tmp, 'e.sock');
  let server: net.Server | null = null;
  setTimeout(() => {
    void fakeServer(sp, (msg, sock) => reply(sock, { return: 'late-but-fine', id: msg.id })).then((s) => (server = s));
  }, 300);
  const qmp = await connectQmp(sp, { connectTimeoutMs: 5000 });
  assert.equal(await qmp.execute('x'), 'late-but-fine');
  qmp.close();
  (server as net.Server | null)?.close();

  await assert.rejects(connectQmp(path.join(tmp, 'never.sock'), { connectTimeoutMs: 200 }), (e: unknown) => isHangarError(e) && e.code === 'TIMEOUT');
  await assert.rejects(
    connectQmp(path.join(tmp, 'never.sock'), { connectTimeoutMs: 5000, keepTrying: () => false }),
    (e: unknown) => isHangarError(e) && e.code === 'UNAVAILABLE',
  );
});

test('real QEMU (-machine none): query-status, stop/cont with events, quit closes the connection', { timeout: 60_000 }, async () => {
  const sp = path.join(tmp, 'real.sock');
  const child = spawn('qemu-system-x86_64', ['-machine', 'none', '-nodefaults', '-no-user-config', '-display', 'none', '-qmp', `unix:${sp},server=on,wait=off`], {
    stdio: 'ignore',
  });
  spawned.push(child.pid!);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const qmp: QmpClient = await connectQmp(sp, { connectTimeoutMs: 20_000 });
  const events: string[] = [];
  qmp.on('event', (e: QmpEvent) => events.push(e.event));
  const closed = new Promise<void>((r) => qmp.once('close', () => r()));

  assert.equal(((await qmp.execute('query-status')) as { running: boolean }).running, true);
  await qmp.execute('stop');
  const paused = (await qmp.execute('query-status')) as { status: string; running: boolean };
  assert.equal(paused.status, 'paused');
  assert.equal(paused.running, false);
  await qmp.execute('cont');
  assert.equal(((await qmp.execute('query-status')) as { status: string }).status, 'running');
  await assert.rejects(qmp.execute('no-such-command'), (e: unknown) => isHangarError(e) && e.details?.class === 'CommandNotFound');

  await qmp.execute('quit');
  await closed;
  assert.equal(await exited, 0);
  assert.ok(events.includes('STOP'), `saw STOP (${events.join(',')})`);
  assert.ok(events.includes('RESUME'), 'saw RESUME');
  assert.ok(events.includes('SHUTDOWN'), 'saw SHUTDOWN on quit');
});
