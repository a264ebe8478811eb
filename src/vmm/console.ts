/**
 * The serial console's host side: every byte the guest writes goes to the
 * console log (always, even with nobody attached; size-bounded and rotated,
 * see engines/console-log), to every client of the console socket (raw
 * bytes, no framing) and optionally to stdout; bytes from any client or
 * from stdin go to the UART.
 *
 * Memory stays bounded both ways. Output: a client with more than
 * CLIENT_BACKLOG_MAX bytes unread is dropped rather than buffered for, and
 * at most MAX_CLIENTS are served. Input: the UART's host-side queue is
 * bounded; what it cannot take yet waits here (one read's worth per source
 * at most) while every input source is paused, and is offered again as the
 * guest reads.
 */
import { listenPrivate } from '../common/private-socket.js';
import fs from 'node:fs';
import net from 'node:net';
import { RotatingFile } from '../common/console-log/rotating-file.js';
import { DEFAULT_CONSOLE_LOG_LIMIT, type ConsoleLogLimit } from '../common/console-log/limits.js';

export const CLIENT_BACKLOG_MAX = 1024 * 1024;
export const MAX_CLIENTS = 16;
/** How often input that the UART could not take is offered again. */
const INPUT_RETRY_MS = 5;

/** Takes console input; returns how many bytes it accepted (the rest must be offered again). */
export type ConsoleInput = (b: Uint8Array) => number;

export class ConsoleHub {
  private log: RotatingFile | null = null;
  private server: net.Server | null = null;
  private readonly clients = new Set<net.Socket>();
  private stdout = false;
  private stdinAttached = false;
  private input: ConsoleInput = (b) => b.length;
  /** Input the UART has not taken yet, oldest first. */
  private backlog: Uint8Array[] = [];
  private retry: NodeJS.Timeout | null = null;
  bytesOut = 0;
  droppedClients = 0;

  setInput(fn: ConsoleInput): void {
    this.input = fn;
  }

  openLog(path: string, limit: ConsoleLogLimit = DEFAULT_CONSOLE_LOG_LIMIT): void {
    this.log = new RotatingFile(path, limit);
  }

  attachStdio(): void {
    this.stdout = true;
    this.stdinAttached = true;
    if (process.stdin.isTTY) process.stdin.setRawMode(true);
    process.stdin.on('data', (d: Buffer) => this.feed(d));
    process.stdin.resume();
  }

  async listen(path: string): Promise<void> {
    try { fs.unlinkSync(path); } catch { /* not there */ }
    const srv = net.createServer((sock) => {
      if (this.clients.size >= MAX_CLIENTS) {
        sock.end(`hangar-vmm: the console already has ${MAX_CLIENTS} clients\r\n`);
        return;
      }
      this.clients.add(sock);
      if (this.backlog.length > 0) sock.pause();
      sock.on('data', (d) => this.feed(d));
      sock.on('error', () => sock.destroy());
      sock.on('close', () => this.clients.delete(sock));
    });
    await listenPrivate(srv, path);
    this.server = srv;
  }

  /** Input from a client or stdin: to the UART as far as it takes it; the rest waits with every source paused. */
  private feed(d: Uint8Array): void {
    if (this.backlog.length > 0) { this.backlog.push(d); return; }
    const took = this.input(d);
    if (took >= d.length) return;
    this.backlog.push(d.subarray(took));
    this.setPaused(true);
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    this.retry ??= setTimeout(() => { this.retry = null; this.drainBacklog(); }, INPUT_RETRY_MS);
  }

  private drainBacklog(): void {
    while (this.backlog.length > 0) {
      const head = this.backlog[0]!;
      const took = this.input(head);
      if (took < head.length) {
        this.backlog[0] = head.subarray(took);
        this.scheduleRetry();
        return;
      }
      this.backlog.shift();
    }
    this.setPaused(false);
  }

  private setPaused(paused: boolean): void {
    for (const c of this.clients) { if (paused) c.pause(); else c.resume(); }
    if (this.stdinAttached) { if (paused) process.stdin.pause(); else process.stdin.resume(); }
  }

  /** Input waiting for the UART, in bytes (for tests and stats). */
  get inputBacklog(): number {
    return this.backlog.reduce((n, b) => n + b.length, 0);
  }

  private pending: Uint8Array[] = [];
  private flushScheduled = false;

  /** Queues guest output; it is flushed once per event-loop turn, so a byte-at-a-time UART costs one write per turn. */
  write(b: Uint8Array): void {
    this.bytesOut += b.length;
    this.pending.push(b);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.flushScheduled = false;
    if (this.pending.length === 0) return;
    const b = Buffer.concat(this.pending);
    this.pending = [];
    this.log?.write(b);
    if (this.stdout) process.stdout.write(b);
    for (const c of this.clients) {
      // A client that stopped reading is dropped, not buffered for: its share is bounded.
      if (c.writableLength + b.length > CLIENT_BACKLOG_MAX) {
        this.clients.delete(c);
        this.droppedClients++;
        c.destroy();
        continue;
      }
      c.write(b);
    }
  }

  close(): void {
    this.flush();
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    for (const c of this.clients) c.end();
    this.server?.close();
    this.log?.close();
    this.log = null;
    if (this.stdout && process.stdin.isTTY) process.stdin.setRawMode(false);
    process.stdin.pause();
  }
}
