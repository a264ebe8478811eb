/**
 * One serial console connection per VM, shared by every client. An engine
 * allows a single console stream, while any number of WebSocket clients may
 * watch: output goes to all of them, input from any of them goes to the VM.
 */
import type { Duplex } from 'node:stream';

export interface ConsoleClient {
  send(data: Buffer): void;
  /** The console went away (VM stopped, stream ended). */
  close(reason: string): void;
}

export class ConsoleHub {
  private stream: Duplex | null = null;
  private opening: Promise<Duplex> | null = null;
  private readonly clients = new Set<ConsoleClient>();
  private closed = false;

  constructor(private readonly open: () => Promise<Duplex>, private readonly onGone: () => void) {}

  get clientCount(): number {
    return this.clients.size;
  }

  /** Adds a client; opens the VM's console stream on first use. Returns the way to send input. */
  async attach(client: ConsoleClient): Promise<{ write(data: Buffer): void; detach(): void }> {
    if (this.closed) throw new Error('console closed');
    const stream = await this.ensureStream();
    this.clients.add(client);
    return {
      write: (data) => { if (!stream.destroyed) stream.write(data); },
      detach: () => { this.clients.delete(client); },
    };
  }

  private ensureStream(): Promise<Duplex> {
    if (this.stream) return Promise.resolve(this.stream);
    this.opening ??= this.open().then((s) => {
      this.stream = s;
      s.on('data', (chunk: Buffer | string) => {
        const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        for (const c of [...this.clients]) {
          try { c.send(buf); } catch { this.clients.delete(c); }
        }
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
      try { c.close(reason); } catch { /* already gone */ }
    }
    this.clients.clear();
    if (this.stream && !this.stream.destroyed) this.stream.destroy();
    this.stream = null;
    this.onGone();
  }
}
