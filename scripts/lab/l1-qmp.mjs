#!/usr/bin/env node
// scripts/kvm-lab.sh's line to L1's QEMU, over its QMP socket:
//   node scripts/lab/l1-qmp.mjs QMP_SOCKET dump | key | nmi
//
// dump: what QEMU can say about a quiet L1 — run state and, through the human monitor,
//   vCPU registers (HLT with IF set = waiting for an interrupt), local APIC, PIC and IRQ
//   counters (vector and x87 registers left out).
// key:  press and release Shift on L1's PS/2 keyboard. This is the lab's doorbell: QEMU 7.2's
//   TCG can lose a wake-up — the main thread's "poll the APIC" request is ORed into the vCPU's
//   interrupt_request while the vCPU thread, entering an L2 guest with VMRUN, rewrites the same
//   word without a lock (to add its virtual-interrupt bit). If that request was for L1's
//   one-shot LAPIC timer, L1 halts with the timer's vector in IRR and nothing to wake it. Any
//   new interrupt from a device makes QEMU look at the APIC again and deliver what waits there;
//   a key press is one no program in L1 reads.
// nmi:  inject an NMI into L1 (the last nudge before the lab gives L1 up as stalled).
// Prints text; exits 0 even when QEMU does not answer (it says so).
import net from 'node:net';

const [sock, action] = process.argv.slice(2);
if (!sock || !['dump', 'key', 'nmi'].includes(action)) { console.error('usage: l1-qmp.mjs QMP_SOCKET dump|key|nmi'); process.exit(2); }
const monitor = ['info status', 'info registers', 'info lapic', 'info pic', 'info irq', 'info cpus'];
const noise = /^(YMM|XMM|ZMM|FPR|Opmask)/;

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
conn.on('error', (e) => { console.log(`l1-qmp: QMP: ${e.message}`); process.exit(0); });
setTimeout(() => { console.log('l1-qmp: QEMU did not answer within 30 s'); process.exit(0); }, 30_000).unref();
const send = (execute, args) => new Promise((resolve) => {
  pending.push(resolve);
  conn.write(`${JSON.stringify(args ? { execute, arguments: args } : { execute })}\n`);
});
const failed = (r) => ('error' in r ? `: ${JSON.stringify(r.error)}` : '');
conn.once('connect', async () => {
  await send('qmp_capabilities');
  if (action === 'dump') {
    for (const c of monitor) {
      const r = await send('human-monitor-command', { 'command-line': c });
      console.log(`---- L1 ${c}`);
      const text = typeof r.return === 'string' ? r.return.trimEnd() : JSON.stringify(r.error);
      console.log(text.split('\n').filter((l) => !noise.test(l)).join('\n'));
    }
  } else if (action === 'key') {
    const r = await send('send-key', { keys: [{ type: 'qcode', data: 'shift' }] });
    if ('error' in r) console.log(`l1-qmp: send-key failed${failed(r)}`);
  } else {
    const r = await send('inject-nmi');
    console.log('error' in r ? `l1-qmp: inject-nmi failed${failed(r)}` : 'l1-qmp: NMI injected into L1');
  }
  conn.end();
  process.exit(0);
});
