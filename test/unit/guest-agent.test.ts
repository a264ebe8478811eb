/**
 * The QEMU guest agent client (src/engines/qemu/guest-agent.ts) against a
 * fake agent on a Unix socket that speaks qemu-ga's protocol: 0xFF resets
 * its parser, guest-sync-delimited answers 0xFF + {"return": id}, replies
 * come in order without ids, guest-exec hands out pids whose status is
 * polled. Scripted programs make each case exact: output, input, exit
 * codes, signals, stale bytes on the channel, a silent agent, huge replies,
 * a command that never ends.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { GuestAgent } from '../../src/engines/qemu/guest-agent.js';
import { HangarError } from '../../src/common/errors.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-qga-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Proc {
  path: string;
  arg: string[];
  input: Buffer;
  polls: number;
  killed: boolean;
}

interface FakeOptions {
  /** Never answer anything (no agent in the guest). */
  silent?: boolean;
  /** Sent to every new connection before anything else (leftovers of earlier use). */
  preamble?: Buffer;
  /** Polls of guest-exec-status that still say "running". */
  runningPolls?: number;
  /** Answer this command with an error of this class. */
  errorFor?: { command: string; class: string; desc: string };
  /** Stop answering after this many commands (sync included) on a connection. */
  answerOnly?: number;
}

/** qemu-ga, as far as these tests need it. */
class FakeAgent {
  readonly socket: string;
  readonly log: string[] = [];
  readonly procs = new Map<number, Proc>();
  connections = 0;
  private nextPid = 100;
  private server!: net.Server;

  constructor(name: string, private readonly o: FakeOptions = {}) {
    this.socket = path.join(tmp, `${name}.sock`);
  }

  start(): Promise<this> {
    this.server = net.createServer((s) => this.serve(s));
    return new Promise((r) => this.server.listen(this.socket, () => r(this)));
  }

  stop(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }

  private serve(s: net.Socket): void {
    this.connections++;
    let answered = 0;
    if (this.o.preamble) s.write(this.o.preamble);
    let buf = Buffer.alloc(0);
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      // 0xFF resets the parser: whatever came before it is dropped.
      const ff = buf.lastIndexOf(0xff);
      if (ff >= 0) buf = buf.subarray(ff + 1);
      let nl: number;
      while ((nl = buf.indexOf(0x0a)) >= 0) {
        const msg = JSON.parse(buf.subarray(0, nl).toString('utf8')) as { execute: string; arguments?: Record<string, unknown> };
        buf = buf.subarray(nl + 1);
        this.log.push(msg.execute);
        if (this.o.silent) continue;
        if (this.o.answerOnly !== undefined && answered >= this.o.answerOnly) continue;
        answered++;
        const reply = this.answer(msg.execute, msg.arguments ?? {});
        if (msg.execute === 'guest-sync-delimited') s.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(`${JSON.stringify(reply)}\n`)]));
        else s.write(`${JSON.stringify(reply)}\n`);
      }
    });
  }

  private answer(cmd: string, a: Record<string, unknown>): unknown {
    if (this.o.errorFor?.command === cmd) return { error: { class: this.o.errorFor.class, desc: this.o.errorFor.desc } };
    switch (cmd) {
      case 'guest-sync-delimited': return { return: a.id };
      case 'guest-ping': return { return: {} };
      case 'guest-exec': {
        const p = String(a.path);
        if (p === 'nope') return { error: { class: 'GenericError', desc: 'Guest agent command failed, error was \'Failed to execute child process “nope” (No such file or directory)\'' } };
        const pid = this.nextPid++;
        if (p === 'kill') {
          const target = this.procs.get(Number((a.arg as string[])[1]));
          if (target) target.killed = true;
        }
        this.procs.set(pid, { path: p, arg: (a.arg as string[]) ?? [], input: Buffer.from(String(a['input-data'] ?? ''), 'base64'), polls: 0, killed: false });
        return { return: { pid } };
      }
      case 'guest-exec-status': {
        const pr = this.procs.get(Number(a.pid));
        if (!pr) return { error: { class: 'GenericError', desc: `Invalid parameter 'pid'` } };
        pr.polls++;
        return { return: this.status(pr) };
      }
      default: return { error: { class: 'CommandNotFound', desc: `The command ${cmd} has not been found` } };
    }
  }

  private status(pr: Proc): Record<string, unknown> {
    const b64 = (s: string | Buffer): string => Buffer.from(s).toString('base64');
    if (pr.killed) return { exited: true, signal: 9 };
    if (pr.path === 'sleep') return { exited: false };
    if (pr.polls <= (this.o.runningPolls ?? 0)) return { exited: false };
    switch (pr.path) {
      case 'echo': return { exited: true, exitcode: 0, 'out-data': b64(`${pr.arg.join(' ')}\n`) };
      case 'cat': return { exited: true, exitcode: 0, 'out-data': b64(pr.input) };
      case 'fail': return { exited: true, exitcode: 3, 'err-data': b64('it went wrong\n') };
      case 'big': return { exited: true, exitcode: 0, 'out-data': b64(Buffer.alloc(Number(pr.arg[0]), 0x61)), 'out-truncated': pr.arg[1] === 'cut' };
      default: return { exited: true, exitcode: 0 };
    }
  }
}

async function expectError(p: Promise<unknown>, code: string, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof HangarError, String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, re);
    return true;
  });
}

const execReq = (command: string[], extra: Partial<{ input: Buffer; timeoutMs: number; maxOutputBytes: number }> = {}) =>
  ({ command, timeoutMs: 10_000, maxOutputBytes: 1 << 20, ...extra });

test('exec: sync, guest-exec, status polled until exited; output decoded from base64; one connection reused', async () => {
  const fake = await new FakeAgent('a', { runningPolls: 3 }).start();
  const ga = new GuestAgent({ socket: fake.socket });
  try {
    await ga.ping();
    const r = await ga.exec(execReq(['echo', 'hello', 'wörld']));
    assert.equal(r.stdout.toString(), 'hello wörld\n');
    assert.equal(r.stderr.length, 0);
    assert.equal(r.exitCode, 0);
    assert.equal(r.signal, null);
    assert.equal(fake.procs.get(100)!.polls, 4, 'polled until it exited');
    assert.deepEqual(fake.log.slice(0, 3), ['guest-sync-delimited', 'guest-ping', 'guest-exec']);
    assert.equal(fake.connections, 1);
    const c = await ga.exec(execReq(['cat'], { input: Buffer.from([0, 1, 2, 255]) }));
    assert.deepEqual([...c.stdout], [0, 1, 2, 255], 'stdin bytes reach the command and come back exact');
  } finally {
    ga.close();
    await fake.stop();
  }
});

test('exec: exit codes, signals, stderr; a program the guest cannot run is INVALID_ARGUMENT with the agent\'s words', async () => {
  const fake = await new FakeAgent('b').start();
  const ga = new GuestAgent({ socket: fake.socket });
  try {
    const f = await ga.exec(execReq(['fail']));
    assert.equal(f.exitCode, 3);
    assert.equal(f.stderr.toString(), 'it went wrong\n');
    await expectError(ga.exec(execReq(['nope', 'x'])), 'INVALID_ARGUMENT', /the guest could not run "nope": .*No such file or directory/);
    await expectError(ga.exec(execReq([])), 'INVALID_ARGUMENT', /must name a program/);
  } finally {
    ga.close();
    await fake.stop();
  }
});

test('resync: stale bytes and a late answer to an older sync on the channel are skipped', async () => {
  // What an earlier client may have left: half a reply, an old sync's marker and answer.
  const preamble = Buffer.concat([Buffer.from('{"return": {"pid": 7'), Buffer.from([0xff]), Buffer.from('{"return": 12345}\n{"return": {}}\n')]);
  const fake = await new FakeAgent('c', { preamble }).start();
  const ga = new GuestAgent({ socket: fake.socket });
  try {
    const r = await ga.exec(execReq(['echo', 'ok']));
    assert.equal(r.stdout.toString(), 'ok\n');
  } finally {
    ga.close();
    await fake.stop();
  }
});

test('no agent: a silent channel and a missing socket are AGENT_UNAVAILABLE', async () => {
  const fake = await new FakeAgent('d', { silent: true }).start();
  const ga = new GuestAgent({ socket: fake.socket, syncTimeoutMs: 300 });
  try {
    await expectError(ga.exec(execReq(['echo'])), 'AGENT_UNAVAILABLE', /did not answer within 300 ms.*qemu-guest-agent/);
    assert.deepEqual(fake.log, ['guest-sync-delimited'], 'nothing is sent before the agent answers the sync');
  } finally {
    ga.close();
    await fake.stop();
  }
  const none = new GuestAgent({ socket: path.join(tmp, 'absent.sock') });
  await expectError(none.ping(), 'AGENT_UNAVAILABLE', /no guest agent channel/);
});

test('timeout: a command past its time is killed in the guest and reported as TIMEOUT', async () => {
  const fake = await new FakeAgent('e').start();
  const ga = new GuestAgent({ socket: fake.socket });
  try {
    await expectError(ga.exec(execReq(['sleep', '1000'], { timeoutMs: 300 })), 'TIMEOUT', /did not finish within 0 s; it was killed in the guest \(pid 100\)/);
    assert.equal(fake.procs.get(100)!.killed, true, 'kill -KILL 100 ran in the guest');
    assert.deepEqual(fake.procs.get(101)!.arg, ['-KILL', '100']);
  } finally {
    ga.close();
    await fake.stop();
  }
});

test('output limits: cut at maxOutputBytes and flagged; the agent\'s own truncation flag is passed on', async () => {
  const fake = await new FakeAgent('f').start();
  const ga = new GuestAgent({ socket: fake.socket });
  try {
    const r = await ga.exec(execReq(['big', '5000'], { maxOutputBytes: 1000 }));
    assert.equal(r.stdout.length, 1000);
    assert.equal(r.stdoutTruncated, true);
    assert.equal(r.stderrTruncated, false);
    const whole = await ga.exec(execReq(['big', '1000'], { maxOutputBytes: 1000 }));
    assert.equal(whole.stdoutTruncated, false);
    const agentCut = await ga.exec(execReq(['big', '10', 'cut']));
    assert.equal(agentCut.stdoutTruncated, true);
  } finally {
    ga.close();
    await fake.stop();
  }
});

test('a reply longer than maxLineBytes ends the connection (RESOURCE_EXHAUSTED); the next command reconnects', async () => {
  const fake = await new FakeAgent('g').start();
  const ga = new GuestAgent({ socket: fake.socket, maxLineBytes: 4096 });
  try {
    await expectError(ga.exec(execReq(['big', '10000'])), 'RESOURCE_EXHAUSTED', /longer than 4096 bytes/);
    const r = await ga.exec(execReq(['echo', 'again']));
    assert.equal(r.stdout.toString(), 'again\n');
    assert.equal(fake.connections, 2);
  } finally {
    ga.close();
    await fake.stop();
  }
});

test('an unanswered command drops the connection (TIMEOUT); the next one resyncs on a new connection', async () => {
  // Answers the sync and one command per connection, then goes quiet.
  const fake = await new FakeAgent('h', { answerOnly: 2 }).start();
  const ga = new GuestAgent({ socket: fake.socket, commandTimeoutMs: 300 });
  try {
    await ga.ping();
    await expectError(ga.ping(), 'TIMEOUT', /guest-ping got no answer within 300 ms/);
    await ga.ping();
    assert.equal(fake.connections, 2);
    assert.deepEqual(fake.log, ['guest-sync-delimited', 'guest-ping', 'guest-ping', 'guest-sync-delimited', 'guest-ping']);
  } finally {
    ga.close();
    await fake.stop();
  }
});

test('concurrent execs share the one channel, one command at a time, each getting its own result', async () => {
  const fake = await new FakeAgent('i', { runningPolls: 2 }).start();
  const ga = new GuestAgent({ socket: fake.socket });
  try {
    const rs = await Promise.all(['one', 'two', 'three', 'four'].map((w) => ga.exec(execReq(['echo', w]))));
    assert.deepEqual(rs.map((r) => r.stdout.toString()), ['one\n', 'two\n', 'three\n', 'four\n']);
    assert.equal(fake.connections, 1);
  } finally {
    ga.close();
    await fake.stop();
  }
});

test('an agent without guest-exec (disabled, or too old) is UNSUPPORTED', async () => {
  const fake = await new FakeAgent('j', { errorFor: { command: 'guest-exec', class: 'CommandNotFound', desc: 'The command guest-exec has been disabled for this instance' } }).start();
  const ga = new GuestAgent({ socket: fake.socket });
  try {
    await expectError(ga.exec(execReq(['echo'])), 'UNSUPPORTED', /guest-exec failed: The command guest-exec has been disabled/);
  } finally {
    ga.close();
    await fake.stop();
  }
});
