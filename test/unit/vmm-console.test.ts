/**
 * hangar-vmm's console socket (src/vmm/console.ts) under pressure, with real
 * Unix-socket clients: a client that stops reading is dropped while another
 * gets every byte; input beyond what the UART takes waits with the clients
 * paused (bounded), and reaches the UART in order as the guest reads; the
 * number of clients is capped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ConsoleHub, CLIENT_BACKLOG_MAX, MAX_CLIENTS } from '../../src/vmm/console.js';

const MiB = 1024 * 1024;

async function withHub(fn: (hub: ConsoleHub, sock: string) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-vmm-console-'));
  const hub = new ConsoleHub();
  const sock = path.join(dir, 'console.sock');
  await hub.listen(sock);
  try { await fn(hub, sock); } finally { hub.close(); fs.rmSync(dir, { recursive: true, force: true }); }
}

function connect(sock: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => { const s = net.connect(sock, () => resolve(s)); s.once('error', reject); });
}

const tick = () => new Promise((r) => setImmediate(r));

test('vmm console: a client that stops reading is dropped; another gets every byte', { timeout: 120_000 }, async () => {
  await withHub(async (hub, sock) => {
    const slow = await connect(sock);
    const fast = await connect(sock);
    await tick();
    slow.pause();
    let slowGot = 0;
    slow.on('data', (d: Buffer) => { slowGot += d.length; });
    const slowClosed = new Promise<void>((r) => slow.once('close', () => r()));
    let fastGot = 0;
    const total = 32 * MiB;
    const chunk = new Uint8Array(64 * 1024).fill(0x41);
    let written = 0;
    await new Promise<void>((resolve) => {
      // The guest writes at the fast reader's pace (at most 256 KiB ahead of it).
      const more = (): void => {
        while (written < total && written - fastGot < 256 * 1024) { hub.write(chunk); written += chunk.length; }
      };
      fast.on('data', (d: Buffer) => { fastGot += d.length; if (fastGot >= total) resolve(); else more(); });
      more();
    });
    assert.equal(fastGot, total);
    assert.equal(hub.droppedClients, 1);
    slow.resume();
    await slowClosed;
    assert.ok(slowGot < CLIENT_BACKLOG_MAX + 8 * MiB, `the dropped client got ${slowGot} bytes`);
    fast.destroy();
  });
});

test('vmm console: input the UART cannot take waits, bounded, with clients paused, and arrives in order', { timeout: 120_000 }, async () => {
  await withHub(async (hub, sock) => {
    // A UART with room for 4 KiB, which the "guest" empties only when the test says.
    let queued = 0;
    const received: Buffer[] = [];
    hub.setInput((b) => {
      const n = Math.min(b.length, 4096 - queued);
      queued += n;
      received.push(Buffer.from(b.subarray(0, n)));
      return n;
    });
    const c = await connect(sock);
    const total = 4 * MiB;
    const data = Buffer.alloc(total);
    for (let i = 0; i < total; i += 4) data.writeUInt32LE(i / 4, i);
    let peakBacklog = 0;
    let got = 0;
    c.write(data);
    while (got < total) {
      await new Promise((r) => setTimeout(r, 1));
      peakBacklog = Math.max(peakBacklog, hub.inputBacklog);
      got += queued; // the guest reads what is queued
      queued = 0;
    }
    const all = Buffer.concat(received);
    assert.equal(all.length, total);
    assert.ok(all.equals(data), 'every byte, in order');
    // Without pausing, the whole 4 MiB would pile up in the hub.
    assert.ok(peakBacklog <= 1 * MiB, `input waiting in the VMM peaked at ${peakBacklog} bytes`);
    c.destroy();
  });
});

test('vmm console: one client more than the cap is turned away with a message', { timeout: 60_000 }, async () => {
  await withHub(async (_hub, sock) => {
    const open: net.Socket[] = [];
    for (let i = 0; i < MAX_CLIENTS; i++) open.push(await connect(sock));
    const extra = await connect(sock);
    let text = '';
    extra.on('data', (d: Buffer) => { text += d.toString(); });
    await new Promise<void>((r) => extra.once('close', () => r()));
    assert.match(text, new RegExp(`already has ${MAX_CLIENTS} clients`));
    for (const s of open) s.destroy();
  });
});
