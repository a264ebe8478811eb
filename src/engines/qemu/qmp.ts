/**
 * A small client for QMP, QEMU's machine protocol: newline-delimited JSON on
 * a Unix socket. The server speaks first (a greeting), the client enters
 * command mode with `qmp_capabilities`, then every command carries an `id`
 * that the reply echoes, and asynchronous events (SHUTDOWN, STOP, ...) may
 * arrive between replies at any time.
 *
 * A closed socket means the QEMU process is gone (or someone closed our
 * connection): pending commands are rejected and 'close' is emitted once.
 */
import net from 'node:net';
import { EventEmitter } from 'node:events';
import { HangarError } from '../../common/errors.js';
import { sendWithFd } from './fdpass.js';

/** An asynchronous QMP event, e.g. `{event:'SHUTDOWN', data:{guest:true, reason:'guest-shutdown'}}`. */
export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpGreeting {
  version?: { qemu?: { major: number; minor: number; micro: number }; package?: string };
  capabilities?: string[];
}

export interface QmpConnectOptions {
  /** How long to keep retrying while the socket does not exist yet or refuses (QEMU still starting). */
  connectTimeoutMs?: number;
  /** Pause between connect attempts. */
  retryIntervalMs?: number;
  /** Default per-command timeout. */
  commandTimeoutMs?: number;
  /** Checked between attempts: when it returns false, give up at once (the process died). */
  keepTrying?: () => boolean;
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: HangarError) => void;
  timer: NodeJS.Timeout;
}

/** Longest line we accept from QEMU; a longer one means a broken peer, not a real reply. */
const MAX_LINE_BYTES = 16 * 1024 * 1024;

/**
 * Events: 'event' (QmpEvent), 'close' (reason: string). Use `connectQmp()` to get one.
 */
export class QmpClient extends EventEmitter {
  private readonly socket: net.Socket;
  private readonly pending = new Map<string, Pending>();
  private buffer = '';
  private nextId = 1;
  private closedReason: string | null = null;
  private greetingWaiter: { resolve: (g: QmpGreeting) => void; reject: (e: HangarError) => void } | null = null;
  readonly commandTimeoutMs: number;
  greeting: QmpGreeting | null = null;

  constructor(socket: net.Socket, commandTimeoutMs = 10_000) {
    super();
    this.socket = socket;
    this.commandTimeoutMs = commandTimeoutMs;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err) => this.shutdown(`QMP socket error: ${err.message}`));
    socket.on('close', () => this.shutdown('QMP socket closed'));
  }

  /** True once the connection is gone; no command can be sent any more. */
  get closed(): boolean {
    return this.closedReason !== null;
  }

  /** Waits for the greeting and enters command mode. */
  async handshake(timeoutMs = this.commandTimeoutMs): Promise<QmpGreeting> {
    const greeting = this.greeting ?? (await new Promise<QmpGreeting>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.greetingWaiter = null;
        reject(new HangarError('TIMEOUT', `no QMP greeting within ${timeoutMs} ms`));
      }, timeoutMs);
      this.greetingWaiter = {
        resolve: (g) => { clearTimeout(timer); resolve(g); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
    }));
    await this.execute('qmp_capabilities', undefined, { timeoutMs });
    return greeting;
  }

  /**
   * Runs one command; resolves with its `return` value. A QMP error reply becomes
   * ENGINE_FAILED (details: class, desc), no reply in time TIMEOUT, a lost
   * connection UNAVAILABLE.
   */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    return this.send<T>(command, args, opts, (line) => { this.socket.write(line); });
  }

  /**
   * Runs one command with descriptor `fd` attached (SCM_RIGHTS), for `getfd`
   * and `add-fd`. The caller still owns `fd` (QEMU received its own copy).
   */
  async executeWithFd<T = unknown>(command: string, args: Record<string, unknown>, fd: number, opts: { timeoutMs?: number } = {}): Promise<T> {
    // The descriptor goes with the first byte of this message: nothing of ours may be queued before it.
    while (this.socket.writableLength > 0 && this.closedReason === null) await new Promise((r) => this.socket.once('drain', r));
    const socketFd = (this.socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (this.closedReason === null && (typeof socketFd !== 'number' || socketFd < 0)) {
      throw new HangarError('UNAVAILABLE', `QMP ${command}: the connection has no descriptor to pass ${fd} along`);
    }
    return this.send<T>(command, args, opts, async (line) => {
      const data = Buffer.from(line);
      const sent = await sendWithFd(socketFd!, data, fd);
      if (sent < data.length) this.socket.write(data.subarray(sent));
    });
  }

  private send<T>(command: string, args: Record<string, unknown> | undefined, opts: { timeoutMs?: number }, write: (line: string) => void | Promise<void>): Promise<T> {
    if (this.closedReason !== null) {
      return Promise.reject(new HangarError('UNAVAILABLE', `QMP ${command}: connection is closed (${this.closedReason})`));
    }
    const id = `hangar-${this.nextId++}`;
    const timeoutMs = opts.timeoutMs ?? this.commandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new HangarError('TIMEOUT', `QMP ${command}: no reply within ${timeoutMs} ms`, { command }));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      const msg: Record<string, unknown> = { execute: command, id };
      if (args !== undefined) msg.arguments = args;
      Promise.resolve(write(JSON.stringify(msg) + '\n')).catch((e: unknown) => {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(e instanceof HangarError ? e : new HangarError('UNAVAILABLE', `QMP ${command}: ${(e as Error).message}`, { command }));
      });
    });
  }

  /** Closes our connection; QEMU keeps running. */
  close(): void {
    this.socket.destroy();
    this.shutdown('closed by client');
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    if (this.buffer.length > MAX_LINE_BYTES && !this.buffer.includes('\n')) {
      this.socket.destroy();
      this.shutdown('QMP peer sent an over-long line');
      return;
    }
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      return; // not JSON: ignore rather than tear down the connection
    }
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) return;
    const m = msg as Record<string, unknown>;
    if ('QMP' in m) {
      this.greeting = (m.QMP ?? {}) as QmpGreeting;
      this.greetingWaiter?.resolve(this.greeting);
      this.greetingWaiter = null;
      return;
    }
    if (typeof m.event === 'string') {
      const ev: QmpEvent = { event: m.event };
      if (typeof m.data === 'object' && m.data !== null) ev.data = m.data as Record<string, unknown>;
      if (typeof m.timestamp === 'object' && m.timestamp !== null) ev.timestamp = m.timestamp as QmpEvent['timestamp'];
      this.emit('event', ev);
      return;
    }
    if (typeof m.id !== 'string') return; // a reply we did not ask for
    const p = this.pending.get(m.id);
    if (!p) return; // already timed out
    this.pending.delete(m.id);
    clearTimeout(p.timer);
    if ('error' in m) {
      const err = (m.error ?? {}) as { class?: unknown; desc?: unknown };
      const desc = typeof err.desc === 'string' ? err.desc : 'unknown error';
      p.reject(new HangarError('ENGINE_FAILED', `QMP ${p.command}: ${desc}`, { command: p.command, class: String(err.class ?? 'GenericError'), desc }));
    } else {
      p.resolve(m.return);
    }
  }

  private shutdown(reason: string): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    this.greetingWaiter?.reject(new HangarError('UNAVAILABLE', `QMP: ${reason} before the greeting`));
    this.greetingWaiter = null;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new HangarError('UNAVAILABLE', `QMP ${p.command}: ${reason}`, { command: p.command }));
      this.pending.delete(id);
    }
    this.emit('close', reason);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function connectOnce(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(path);
    s.once('connect', () => { s.removeAllListeners('error'); resolve(s); });
    s.once('error', reject);
  });
}

/**
 * Connects to a QMP socket, retrying while it does not exist yet or refuses
 * (QEMU is still creating it), then does the greeting and capabilities handshake.
 */
export async function connectQmp(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
  const deadline = Date.now() + (opts.connectTimeoutMs ?? 10_000);
  const retry = opts.retryIntervalMs ?? 25;
  let lastErr = 'not tried';
  for (;;) {
    if (opts.keepTrying && !opts.keepTrying()) {
      throw new HangarError('UNAVAILABLE', `QMP socket ${path}: the process went away while connecting (${lastErr})`);
    }
    try {
      const socket = await connectOnce(path);
      const client = new QmpClient(socket, opts.commandTimeoutMs);
      try {
        await client.handshake(Math.max(1000, deadline - Date.now()));
      } catch (e) {
        client.close();
        throw e;
      }
      return client;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ECONNREFUSED') {
        if (e instanceof HangarError) throw e;
        throw new HangarError('UNAVAILABLE', `QMP socket ${path}: ${(e as Error).message}`);
      }
      lastErr = code;
    }
    if (Date.now() >= deadline) {
      throw new HangarError('TIMEOUT', `QMP socket ${path} did not accept a connection in time (${lastErr})`);
    }
    await sleep(retry);
  }
}
