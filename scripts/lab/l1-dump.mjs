#!/usr/bin/env node
// What QEMU can say about a stalled L1 (scripts/kvm-lab.sh calls this when L1's console
// has been quiet too long): over L1's QMP socket, its run state and, through the human
// monitor, its vCPU registers (HLT with IF set and nothing pending = waiting for a timer
// or interrupt that never came), local APIC, PIC and IRQ counters. Prints text; exits 0
// even when QEMU does not answer (it says so).
//   node scripts/lab/l1-dump.mjs QMP_SOCKET
import net from 'node:net';

const sock = process.argv[2];
if (!sock) { console.error('usage: l1-dump.mjs QMP_SOCKET'); process.exit(2); }
const commands = ['info status', 'info registers', 'info lapic', 'info pic', 'info irq', 'info cpus'];

const conn = net.connect(sock);
let buf = '';
const pending = [];
conn.on('data', (d) => {
  buf += d.toString();
  let nl;
  while ((nl = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, nl).trim();
    buf = buf.slice(nl + 1);
    if (!line) continue;
    const msg = JSON.parse(line);
    if ('return' in msg || 'error' in msg) pending.shift()?.(msg);
  }
});
conn.on('error', (e) => { console.log(`l1-dump: QMP: ${e.message}`); process.exit(0); });
setTimeout(() => { console.log('l1-dump: QEMU did not answer within 30 s'); process.exit(0); }, 30_000).unref();
const send = (execute, args) => new Promise((resolve) => {
  pending.push(resolve);
  conn.write(`${JSON.stringify(args ? { execute, arguments: args } : { execute })}\n`);
});
conn.once('connect', async () => {
  await send('qmp_capabilities');
  for (const c of commands) {
    const r = await send('human-monitor-command', { 'command-line': c });
    console.log(`---- L1 ${c}`);
    console.log(typeof r.return === 'string' ? r.return.trimEnd() : JSON.stringify(r.error));
  }
  conn.end();
  process.exit(0);
});
