// Daemon memory under the two console attacks, against a real daemon and QEMU guest:
//   node bench/console-pressure.mjs [path/to/dist/src/host/main.js]
// 1. flood: one client sends 300 MiB of input in 64 KiB frames as fast as its socket allows;
// 2. stalled reader: one client stops reading while the guest prints ~1.5 MB.
// Prints the daemon's RSS before and its peak (VmHWM) after each. Not part of the test suite.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import { spawn } from 'node:child_process';
import WebSocket from 'ws';

const main = path.resolve(process.argv[2] ?? 'dist/src/host/main.js');
const only = process.argv[3]; // 'stalled': skip the flood
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-pressure-'));
const sock = path.join(dir, 'hangard.sock');
const env = { ...process.env, HANGAR_DATA_DIR: dir, HANGAR_SOCKET: sock };
const d = spawn(process.execPath, [main, '--data-dir', dir, '--socket', sock], { env, stdio: 'ignore', detached: true });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const req = (method, p, body) => new Promise((resolve, reject) => {
  const r = http.request({ socketPath: sock, method, path: p, headers: { 'content-type': 'application/json' } }, (res) => {
    let t = ''; res.on('data', (c) => (t += c)); res.on('end', () => { try { resolve(JSON.parse(t)); } catch { resolve(t); } });
  });
  r.on('error', reject); if (body) r.write(JSON.stringify(body)); r.end();
});
const status = (k) => Number(/(\d+) kB/.exec(fs.readFileSync(`/proc/${d.pid}/status`, 'utf8').split('\n').find((l) => l.startsWith(k)))[1]) / 1024;
const open = () => new Promise((res, rej) => { const ws = new WebSocket(`ws+unix://${sock}:/1.0/vms/p/console`); ws.once('open', () => res(ws)); ws.once('error', rej); });
let vmPid = null;
try {
  for (;;) { try { await req('GET', '/1.0'); break; } catch { await sleep(100); } }
  const op = await req('POST', '/1.0/vms', { name: 'p', image: 'tiny', memory: '128M' });
  await req('GET', `${op.operation}/wait?timeout=600`);
  vmPid = (await req('GET', '/1.0/vms/p')).metadata.runtime.pid;
  const c = await open();
  let out = '';
  c.on('message', (m) => (out += m.toString()));
  while (!out.includes('# ')) { c.send('\n'); await sleep(1000); }
  const rss0 = status('VmRSS:');
  // 1. flood
  const frame = Buffer.alloc(64 * 1024, 0x20);
  let sent = 0; const t0 = Date.now(); let closed = null;
  c.on('close', (code) => (closed = code));
  while (only !== 'stalled' && sent < 300 * 1024 * 1024 && closed === null && Date.now() - t0 < 60_000) {
    c.send(frame); sent += frame.length;
    while (c.bufferedAmount > 8 * 1024 * 1024 && closed === null && Date.now() - t0 < 60_000) await sleep(5); // the client's own memory
  }
  const accepted = sent - c.bufferedAmount;
  await sleep(2000);
  console.log(`flood: the daemon took ${(accepted / 1048576).toFixed(0)} of 300 MiB in ${((Date.now() - t0) / 1000).toFixed(1)} s (the rest waited in the client); daemon RSS before ${rss0.toFixed(0)} MiB, peak ${status('VmHWM:').toFixed(0)} MiB, now ${status('VmRSS:').toFixed(0)} MiB`);
  c.terminate();
  // Let the guest take what was already on its way (the shell then sits on a line of spaces: Ctrl-C clears it).
  if (only !== 'stalled') await sleep(10_000);
  // 2. stalled reader (a fresh daemon peak is not available: report now-RSS growth)
  await sleep(3000);
  const rss1 = status('VmRSS:');
  const slow = await open();
  const drv = await open();
  slow.pause();
  let closeCode = null; slow.on('close', (code) => (closeCode = code));
  let got = 0; drv.on('message', (m) => (got += m.length));
  drv.send('\x03\n');
  await sleep(2000);
  drv.send('seq 1 500000 | head -c 1500000; echo DONE-MARK\n');
  const t1 = Date.now();
  while (got < 1_500_000 && Date.now() - t1 < Number(process.env.STALL_S ?? 240) * 1000) await sleep(500);
  console.log(`stalled reader: guest wrote ${(got / 1e6).toFixed(1)} MB in ${((Date.now() - t1) / 1000).toFixed(0)} s; daemon RSS before ${rss1.toFixed(0)} MiB, after ${status('VmRSS:').toFixed(0)} MiB, peak ${status('VmHWM:').toFixed(0)} MiB; stalled client dropped: ${slow.readyState !== WebSocket.OPEN}`);
  slow.terminate(); drv.terminate();
} finally {
  try { process.kill(d.pid, 'SIGTERM'); } catch {}
  await sleep(1000);
  if (vmPid) { try { process.kill(vmPid, 'SIGKILL'); } catch {} }
  await sleep(500);
  fs.rmSync(dir, { recursive: true, force: true });
}
