/**
 * The serial console's host side: every byte the guest writes goes to the
 * console log file (always, even with nobody attached), to every client of
 * the console socket (raw bytes, no framing) and optionally to stdout; bytes
 * from any client or from stdin go to the UART. A slow client is dropped
 * rather than allowed to buffer without bound.
 */
import fs from 'node:fs';
import net from 'node:net';

const CLIENT_BACKLOG_MAX = 1024 * 1024;

export class ConsoleHub {
  private logFd: number | null = null;
  private server: net.Server | null = null;
  private readonly clients = new Set<net.Socket>();
  private stdout = false;
  private input: (b: Uint8Array) => void = () => {};
  bytesOut = 0;

  setInput(fn: (b: Uint8Array) => void): void {
    this.input = fn;
  }

  openLog(path: string): void {
    this.logFd = fs.openSync(path, 'a', 0o640);
  }

  attachStdio(): void {
    this.stdout = true;
    if (process.stdin.isTTY) process.stdin.setRawMode(true);
    process.stdin.on('data', (d: Buffer) => this.input(d));
    process.stdin.resume();
  }

  async listen(path: string): Promise<void> {
    try { fs.unlinkSync(path); } catch { /* not there */ }
    const srv = net.createServer((sock) => {
      this.clients.add(sock);
      sock.on('data', (d) => this.input(d));
      sock.on('error', () => sock.destroy());
      sock.on('close', () => this.clients.delete(sock));
    });
    await new Promise<void>((resolve, reject) => { srv.once('error', reject); srv.listen(path, () => resolve()); });
    fs.chmodSync(path, 0o600);
    this.server = srv;
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
    if (this.logFd !== null) { try { fs.writeSync(this.logFd, b); } catch { /* disk full: keep the VM running */ } }
    if (this.stdout) process.stdout.write(b);
    for (const c of this.clients) {
      if (c.writableLength > CLIENT_BACKLOG_MAX) { c.destroy(); continue; }
      c.write(b);
    }
  }

  close(): void {
    this.flush();
    for (const c of this.clients) c.end();
    this.server?.close();
    if (this.logFd !== null) { fs.closeSync(this.logFd); this.logFd = null; }
    if (this.stdout && process.stdin.isTTY) process.stdin.setRawMode(false);
    process.stdin.pause();
  }
}
