/**
 * A small client for the QEMU guest agent (qemu-ga), reached through the
 * Unix socket QEMU puts behind the VM's virtio-serial port
 * org.qemu.guest_agent.0 (cmdline.ts).
 *
 * The protocol is QMP-like JSON, one object per line, but with no greeting
 * and no ids: the agent answers commands in order. The channel outlives our
 * connections and the agent may be half-way through an old command, or hold
 * replies nobody read, so every new connection first resynchronises:
 *
 *   client → 0xFF                                   (the agent's parser resets)
 *   client → {"execute":"guest-sync-delimited","arguments":{"id":N}}
 *   agent  → 0xFF {"return":N}                      (everything before 0xFF is stale)
 *
 * Only then are commands sent, strictly one at a time. A command without an
 * answer in time leaves the channel in an unknown state: the connection is
 * dropped and the next command resynchronises on a new one.
 *
 * An agent that does not answer the sync (none installed, not started yet,
 * the guest still booting) is AGENT_UNAVAILABLE. What the guest sends is
 * bounded: lines over maxLineBytes end the connection, output is cut at
 * maxOutputBytes per stream.
 */
import net from 'node:net';
import { randomInt } from 'node:crypto';
import { HangarError } from '../../common/errors.js';
import type { GuestExecRequest, GuestExecResult } from '../guest.js';

export interface GuestAgentOptions {
  socket: string;
  /** How long the agent has to answer the resync (default 5 s). */
  syncTimeoutMs?: number;
  /** How long one command has to be answered (default 10 s). */
  commandTimeoutMs?: number;
  /**
   * Longest reply line accepted (default 48 MiB: qemu-ga itself caps each
   * exec output stream at 16 MiB, which is ~21.4 MiB of base64, two streams).
   */
  maxLineBytes?: number;
  /** A connection unused this long is closed (default 30 s), so a stale one is never reused. */
  idleCloseMs?: number;
  /** Longest pause between two exec-status polls (default 250 ms; the first polls come quicker). */
  maxPollMs?: number;
}

/** `guest-exec-status` as qemu-ga answers it. */
interface ExecStatus {
  exited: boolean;
  exitcode?: number;
  signal?: number;
  'out-data'?: string;
  'err-data'?: string;
  'out-truncated'?: boolean;
  'err-truncated'?: boolean;
}

interface AgentReply {
  return?: unknown;
  error?: { class?: string; desc?: string };
}

const SENTINEL = 0xff;

/** An error reply from the agent. */
export class GuestAgentCommandError extends HangarError {
  constructor(readonly command: string, readonly errorClass: string, readonly desc: string) {
    super(errorClass === 'CommandNotFound' ? 'UNSUPPORTED' : 'ENGINE_FAILED', `guest agent: ${command} failed: ${desc}`, { command, class: errorClass });
  }
}

/** One socket connection to the agent, and the lines arriving on it. */
class Channel {
  private readonly sock: net.Socket;
  private chunks: Buffer[] = [];
  private size = 0;
  /** True until the sync's 0xFF has been seen: bytes before it are stale and dropped. */
  private awaitingSentinel = false;
  private waiter: ((line: Buffer | Error) => void) | null = null;
  private readonly lines: Buffer[] = [];
  private failure: Error | null = null;

  constructor(sock: net.Socket, private readonly maxLineBytes: number) {
    this.sock = sock;
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', (e) => this.fail(new HangarError('AGENT_UNAVAILABLE', `guest agent socket: ${e.message}`)));
    sock.on('close', () => this.fail(new HangarError('AGENT_UNAVAILABLE', 'guest agent socket closed')));
  }

  get broken(): boolean {
    return this.failure !== null;
  }

  private fail(e: Error): void {
    this.failure ??= e;
    this.sock.destroy();
    const w = this.waiter;
    this.waiter = null;
    w?.(this.failure);
  }

  private onData(d: Buffer): void {
    if (this.awaitingSentinel) {
      const at = d.lastIndexOf(SENTINEL);
      if (at < 0) return;
      // Stale bytes and any half line before the marker are dropped.
      this.awaitingSentinel = false;
      this.chunks = [];
      this.size = 0;
      d = d.subarray(at + 1);
    }
    let start = 0;
    for (let nl = d.indexOf(0x0a); nl >= 0; nl = d.indexOf(0x0a, start)) {
      this.chunks.push(d.subarray(start, nl));
      const line = Buffer.concat(this.chunks);
      this.chunks = [];
      this.size = 0;
      start = nl + 1;
      if (line.length > this.maxLineBytes) return this.fail(this.tooLong());
      this.lines.push(line);
    }
    if (start < d.length) {
      this.chunks.push(d.subarray(start));
      this.size += d.length - start;
      if (this.size > this.maxLineBytes) return this.fail(this.tooLong());
    }
    this.deliver();
  }

  private tooLong(): HangarError {
    return new HangarError('RESOURCE_EXHAUSTED', `the guest agent sent a reply longer than ${this.maxLineBytes} bytes`);
  }

  private deliver(): void {
    while (this.waiter && this.lines.length > 0) {
      const w = this.waiter;
      this.waiter = null;
      w(this.lines.shift()!);
    }
  }

  write(b: Buffer | string): void {
    this.sock.write(b);
  }

  /** From now on, ignore everything up to the next 0xFF. */
  expectSentinel(): void {
    this.awaitingSentinel = true;
    this.lines.length = 0;
    this.chunks = [];
    this.size = 0;
  }

  /** The next complete line, or an error after timeoutMs (the channel is then unusable). */
  nextLine(timeoutMs: number, onTimeout: () => HangarError): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.lines.length > 0) return Promise.resolve(this.lines.shift()!);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.waiter = null; this.fail(onTimeout()); reject(this.failure); }, timeoutMs);
      this.waiter = (l) => { clearTimeout(timer); if (l instanceof Error) reject(l); else resolve(l); };
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

function connect(socket: string, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socket);
    const timer = setTimeout(() => { s.destroy(); reject(new HangarError('AGENT_UNAVAILABLE', `guest agent socket ${socket}: no connection within ${timeoutMs} ms`)); }, timeoutMs);
    s.once('connect', () => { clearTimeout(timer); s.removeAllListeners('error'); resolve(s); });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why = e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? 'the VM has no guest agent channel (is it running?)' : e.message;
      reject(new HangarError('AGENT_UNAVAILABLE', `guest agent socket ${socket}: ${why}`));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function decode(b64: string | undefined, max: number): { data: Buffer; cut: boolean } {
  const all = Buffer.from(b64 ?? '', 'base64');
  return all.length > max ? { data: all.subarray(0, max), cut: true } : { data: all, cut: false };
}

export class GuestAgent {
  private readonly o: Required<GuestAgentOptions>;
  private channel: Channel | null = null;
  /** Commands run one at a time: the agent's replies carry no ids. */
  private queue: Promise<unknown> = Promise.resolve();
  private idleTimer: NodeJS.Timeout | null = null;

  constructor(opts: GuestAgentOptions) {
    this.o = { syncTimeoutMs: 5000, commandTimeoutMs: 10_000, maxLineBytes: 48 * 1024 * 1024, idleCloseMs: 30_000, maxPollMs: 250, ...opts };
  }

  /** A connected, synchronised channel: the open one, or a new one. */
  private async open(): Promise<Channel> {
    if (this.channel && !this.channel.broken) return this.channel;
    this.channel = null;
    const ch = new Channel(await connect(this.o.socket, this.o.syncTimeoutMs), this.o.maxLineBytes);
    const id = randomInt(1, 2 ** 31);
    const unavailable = (): HangarError => new HangarError('AGENT_UNAVAILABLE',
      `the guest agent did not answer within ${this.o.syncTimeoutMs} ms: the guest may still be booting, or has no qemu-guest-agent running`);
    ch.expectSentinel();
    ch.write(Buffer.from([SENTINEL]));
    ch.write(`${JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } })}\n`);
    const deadline = Date.now() + this.o.syncTimeoutMs;
    for (;;) {
      const line = await ch.nextLine(Math.max(1, deadline - Date.now()), unavailable);
      let reply: AgentReply | null = null;
      try { reply = JSON.parse(line.toString('utf8')) as AgentReply; } catch { /* garbage: wait for the next marker */ }
      if (reply && reply.return === id) break;
      // A late answer to an older sync (its own 0xFF came first): ours is still to come.
      ch.expectSentinel();
    }
    this.channel = ch;
    return ch;
  }

  private armIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.close(), this.o.idleCloseMs);
    this.idleTimer.unref();
  }

  /** Runs one command; resolves with its `return` value. Error replies become GuestAgentCommandError. */
  request<T>(command: string, args?: Record<string, unknown>, timeoutMs = this.o.commandTimeoutMs): Promise<T> {
    const run = async (): Promise<T> => {
      if (this.idleTimer) clearTimeout(this.idleTimer);
      try {
        const ch = await this.open();
        ch.write(`${JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args })}\n`);
        const line = await ch.nextLine(timeoutMs, () => new HangarError('TIMEOUT', `guest agent: ${command} got no answer within ${timeoutMs} ms`, { command }));
        let reply: AgentReply;
        try {
          reply = JSON.parse(line.toString('utf8')) as AgentReply;
        } catch {
          ch.close();
          throw new HangarError('ENGINE_FAILED', `guest agent: ${command}: the answer is not JSON`);
        }
        if (reply.error) throw new GuestAgentCommandError(command, String(reply.error.class ?? 'GenericError'), String(reply.error.desc ?? 'no description'));
        if (!('return' in reply)) { ch.close(); throw new HangarError('ENGINE_FAILED', `guest agent: ${command}: the answer has neither return nor error`); }
        return reply.return as T;
      } finally {
        this.armIdle();
      }
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Resolves when the agent answers guest-ping. */
  async ping(): Promise<void> {
    await this.request('guest-ping');
  }

  /**
   * Runs a command in the guest and waits for it: guest-exec with captured
   * output, then guest-exec-status until it has exited. Past timeoutMs the
   * guest is asked to kill it (qemu-ga itself cannot) and TIMEOUT is thrown.
   */
  async exec(req: GuestExecRequest): Promise<GuestExecResult> {
    const [path, ...arg] = req.command;
    if (!path) throw new HangarError('INVALID_ARGUMENT', 'command must name a program');
    const args: Record<string, unknown> = { path, arg, 'capture-output': true };
    if (req.input && req.input.length > 0) args['input-data'] = req.input.toString('base64');
    let pid: number;
    try {
      ({ pid } = await this.request<{ pid: number }>('guest-exec', args));
    } catch (e) {
      // The agent could not start it (no such program, not executable): the request's fault.
      if (e instanceof GuestAgentCommandError && e.errorClass === 'GenericError') {
        throw new HangarError('INVALID_ARGUMENT', `the guest could not run ${JSON.stringify(path)}: ${e.desc}`, { command: req.command });
      }
      throw e;
    }
    const deadline = Date.now() + req.timeoutMs;
    let pause = 10;
    for (;;) {
      const st = await this.request<ExecStatus>('guest-exec-status', { pid });
      if (st.exited) {
        const out = decode(st['out-data'], req.maxOutputBytes);
        const err = decode(st['err-data'], req.maxOutputBytes);
        return {
          exitCode: typeof st.exitcode === 'number' ? st.exitcode : null,
          signal: typeof st.signal === 'number' ? st.signal : null,
          stdout: out.data,
          stderr: err.data,
          stdoutTruncated: out.cut || st['out-truncated'] === true,
          stderrTruncated: err.cut || st['err-truncated'] === true,
        };
      }
      if (Date.now() >= deadline) {
        await this.killInGuest(pid);
        throw new HangarError('TIMEOUT', `the command did not finish within ${Math.round(req.timeoutMs / 1000)} s; it was killed in the guest (pid ${pid})`, { pid });
      }
      await sleep(Math.min(pause, Math.max(1, deadline - Date.now())));
      pause = Math.min(pause * 2, this.o.maxPollMs);
    }
  }

  /** Best effort: the agent has no kill of its own, so the guest's kill(1) does it; then its status is collected. */
  private async killInGuest(pid: number): Promise<void> {
    try {
      const k = await this.request<{ pid: number }>('guest-exec', { path: 'kill', arg: ['-KILL', String(pid)], 'capture-output': true });
      // Collect both, so the agent forgets them.
      for (const p of [k.pid, pid]) {
        for (let i = 0; i < 20; i++) {
          const st = await this.request<ExecStatus>('guest-exec-status', { pid: p });
          if (st.exited) break;
          await sleep(50);
        }
      }
    } catch { /* the timeout is reported either way */ }
  }

  close(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    this.channel?.close();
    this.channel = null;
  }
}
