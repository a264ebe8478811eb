/**
 * One serial console connection per VM, shared by every client. An engine
 * allows a single console stream, while several WebSocket clients may
 * watch: output goes to all of them, input from any of them goes to the VM.
 *
 * Memory stays bounded in both directions. Output: the hub never queues
 * anything itself; a client that has more than `clientBufferMax` bytes
 * unread is dropped (CONSOLE_CLOSE.TOO_SLOW), so a reader that stopped
 * reading neither holds memory nor slows the others down. Input: write()
 * reports when the VM's console stream is full, and the caller stops reading
 * its client until `onWritable` fires, so the kernel's socket buffers (and
 * in the end the client's own send) absorb the pressure.
 */
import type { Duplex } from 'node:stream';
import { HangarError } from '../common/errors.js';
import { CONSOLE_CLIENT_BUFFER_MAX, CONSOLE_CLOSE, CONSOLE_MAX_CLIENTS } from '../api/console.js';

/** How long output gathers before it goes out as one message: at most 100 messages a second, unnoticeable when typing. */
const OUTPUT_BATCH_MS = 10;

export interface ConsoleClient {
  send(data: Buffer): void;
  /** Memory this client's unread output holds: its WebSocket bufferedAmount plus a charge per message not yet written. */
  buffered(): number;
  /** The session is over: the console went away, or the client is dropped (code from CONSOLE_CLOSE). */
  close(reason: string, code: number): void;
}

export interface ConsoleConnection {
  /** Sends input to the VM. False: the console stream is full; stop reading the client until onWritable. */
  write(data: Buffer): boolean;
  /** Calls `fn` once the console stream takes input again (at once if it already does). */
  onWritable(fn: () => void): void;
  detach(): void;
}

export interface ConsoleHubLimits {
  maxClients: number;
  clientBufferMax: number;
}

export class ConsoleHub {
  private stream: Duplex | null = null;
  private opening: Promise<Duplex> | null = null;
  private readonly clients = new Set<ConsoleClient>();
  private readonly drainWaiters = new Set<() => void>();
  private closed = false;
  private readonly limits: ConsoleHubLimits;

  constructor(private readonly open: () => Promise<Duplex>, private readonly onGone: () => void, limits: Partial<ConsoleHubLimits> = {}) {
    this.limits = { maxClients: limits.maxClients ?? CONSOLE_MAX_CLIENTS, clientBufferMax: limits.clientBufferMax ?? CONSOLE_CLIENT_BUFFER_MAX };
  }

  get clientCount(): number {
    return this.clients.size;
  }

  /** Adds a client; opens the VM's console stream on first use. RESOURCE_EXHAUSTED when the console is full. */
  async attach(client: ConsoleClient): Promise<ConsoleConnection> {
    if (this.closed) throw new HangarError('UNAVAILABLE', 'console closed');
    this.checkRoom();
    const stream = await this.ensureStream();
    if (this.closed) throw new HangarError('UNAVAILABLE', 'console closed');
    this.checkRoom();
    this.clients.add(client);
    let waiter: (() => void) | null = null;
    return {
      write: (data) => (stream.destroyed ? true : stream.write(data)),
      onWritable: (fn) => {
        if (stream.destroyed || !stream.writableNeedDrain) { fn(); return; }
        if (waiter) this.drainWaiters.delete(waiter);
        waiter = () => { waiter = null; fn(); };
        this.drainWaiters.add(waiter);
      },
      detach: () => {
        this.clients.delete(client);
        if (waiter) this.drainWaiters.delete(waiter);
      },
    };
  }

  private checkRoom(): void {
    if (this.clients.size >= this.limits.maxClients) {
      throw new HangarError('RESOURCE_EXHAUSTED', `the console already has ${this.limits.maxClients} clients, the most it serves at once`, { maxClients: this.limits.maxClients });
    }
  }

  private pending: Buffer[] = [];
  private flushScheduled = false;

  /**
   * Output is gathered for OUTPUT_BATCH_MS and sent as one message: a UART
   * delivers a few bytes at a time, and a WebSocket message costs far more
   * memory than its payload, so per-chunk messages would multiply what a
   * slow client holds (and each counts against its cap, see ConsoleClient).
   */
  private queue(buf: Buffer): void {
    this.pending.push(buf);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setTimeout(() => {
      this.flushScheduled = false;
      const out = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
      this.pending = [];
      if (out.length > 0 && !this.closed) this.fanOut(out);
    }, OUTPUT_BATCH_MS);
  }

  private fanOut(buf: Buffer): void {
    for (const c of [...this.clients]) {
      if (c.buffered() + buf.length > this.limits.clientBufferMax) {
        this.clients.delete(c);
        try {
          c.close(`dropped: more than ${this.limits.clientBufferMax} bytes of console output left unread`, CONSOLE_CLOSE.TOO_SLOW);
        } catch { /* already gone */ }
        continue;
      }
      try { c.send(buf); } catch { this.clients.delete(c); }
    }
  }

  private ensureStream(): Promise<Duplex> {
    if (this.stream) return Promise.resolve(this.stream);
    this.opening ??= this.open().then((s) => {
      this.stream = s;
      s.on('data', (chunk: Buffer | string) => this.queue(typeof chunk === 'string' ? Buffer.from(chunk) : chunk));
      s.on('drain', () => {
        const waiting = [...this.drainWaiters];
        this.drainWaiters.clear();
        for (const w of waiting) w();
      });
      const gone = (): void => this.close('console stream ended');
      s.once('end', gone);
      s.once('close', gone);
      s.once('error', gone);
      return s;
    }).catch((e: unknown) => {
      this.opening = null;
      throw e;
    });
    return this.opening;
  }

  /** Ends the stream and every client (the VM stopped, or the daemon is shutting down). */
  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    for (const c of [...this.clients]) {
      try { c.close(reason, CONSOLE_CLOSE.ENDED); } catch { /* already gone */ }
    }
    this.clients.clear();
    // Readers paused on input must not wait for a drain that will never come.
    for (const w of [...this.drainWaiters]) w();
    this.drainWaiters.clear();
    if (this.stream && !this.stream.destroyed) this.stream.destroy();
    this.stream = null;
    this.onGone();
  }
}
