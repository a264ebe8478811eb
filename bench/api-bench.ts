/**
 * Platform benchmark: API latency (list, show), launch to the guest's shell
 * prompt, five launches at once, daemon memory, and the host memory each VM
 * costs beyond the guest RAM it actually touched. Writes the 'platform'
 * section of docs/benchmarks.md.
 */
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { startDaemon, waitOperation, ConsoleSession, type TestDaemon } from '../test/helpers/daemon.js';
import { TINY_PROMPT } from '../src/host/images/tiny.js';
import { writeSection, percentile } from './report.js';

const MiB = 1024 * 1024;
const CALLS = Number(process.env.BENCH_API_CALLS ?? 1000);
const LAUNCHES = Number(process.env.BENCH_LAUNCHES ?? 3);

function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

/**
 * Resident bytes of the guest RAM mapping inside the VM process: the one
 * anonymous mapping whose size is the guest's memory (QEMU allocates guest RAM
 * as one block). What is resident there is guest RAM the guest touched.
 */
function guestRamResident(pid: number, memoryBytes: number): number | null {
  const smaps = fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n');
  let best: { size: number; rss: number } | null = null;
  let cur: { size: number; rss: number; anon: boolean } | null = null;
  const flush = (): void => {
    if (cur && cur.anon && cur.size >= memoryBytes && cur.size <= memoryBytes + 8 * MiB && (!best || cur.size < best.size)) best = { size: cur.size, rss: cur.rss };
  };
  for (const line of smaps) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      flush();
      cur = { size: Number(BigInt(`0x${head[2]}`) - BigInt(`0x${head[1]}`)), rss: 0, anon: head[3]!.trim() === '' };
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB$/.exec(line);
    if (rss && cur) cur.rss = Number(rss[1]) * 1024;
  }
  flush();
  return best ? (best as { size: number; rss: number }).rss : null;
}

async function timeCalls(d: TestDaemon, path: string, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const r = await d.request('GET', path);
    out.push(performance.now() - t);
    if (r.status !== 200) throw new Error(`${path}: ${r.status}`);
  }
  return out;
}

async function launchToPrompt(d: TestDaemon, name: string, memory = '128M'): Promise<{ apiMs: number; promptMs: number; pid: number; accel: string }> {
  const t0 = performance.now();
  const op = await waitOperation(d, await d.request('POST', '/1.0/vms', { name, image: 'tiny', memory }));
  if (op.status !== 'success') throw new Error(`launch ${name}: ${JSON.stringify(op.error)}`);
  const apiMs = performance.now() - t0;
  const con = await ConsoleSession.open(d, name);
  await con.waitForPrompt(TINY_PROMPT, 300_000);
  const promptMs = performance.now() - t0;
  await con.close();
  return { apiMs, promptMs, pid: op.result.runtime.pid as number, accel: op.result.runtime.accel as string };
}

const fmt = (ms: number): string => (ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0));

async function main(): Promise<void> {
  const d = await startDaemon();
  try {
    // Warm the image once so launches measure launching, not building.
    const img = await waitOperation(d, await d.request('POST', '/1.0/vms', { name: 'warm', image: 'tiny', memory: '128M', start: false }));
    if (img.status !== 'success') throw new Error(`image: ${JSON.stringify(img.error)}`);
    const daemonRssIdle = rssBytes(d.pid);

    // Launch → prompt, one at a time.
    const single: Array<{ apiMs: number; promptMs: number; pid: number; accel: string }> = [];
    for (let i = 0; i < LAUNCHES; i++) {
      const r = await launchToPrompt(d, `l${i}`);
      single.push(r);
      if (i < LAUNCHES - 1) await waitOperation(d, await d.request('DELETE', `/1.0/vms/l${i}?force=true`));
    }
    const keep = single.at(-1)!;

    // Memory of one idle VM at its prompt: 128M guest and a 512M one.
    const big = await launchToPrompt(d, 'big', '512M');
    await new Promise((r) => setTimeout(r, 1000));
    const mem = [
      { label: '128M', pid: keep.pid, bytes: 128 * MiB },
      { label: '512M', pid: big.pid, bytes: 512 * MiB },
    ].map((m) => {
      const rss = rssBytes(m.pid);
      const touched = guestRamResident(m.pid, m.bytes);
      return { ...m, rss, touched, overhead: touched === null ? null : rss - touched };
    });

    // API latency with 20 VMs defined (2 running).
    for (let i = 0; i < 18; i++) await waitOperation(d, await d.request('POST', '/1.0/vms', { name: `idle${i}`, image: 'tiny', memory: '64M', start: false }));
    const list = await timeCalls(d, '/1.0/vms', CALLS);
    const show = await timeCalls(d, `/1.0/vms/l${LAUNCHES - 1}`, CALLS);
    const showStopped = await timeCalls(d, '/1.0/vms/idle0', CALLS);
    const daemonRssBusy = rssBytes(d.pid);

    // Five launches at the same moment, to the prompt of the last one.
    for (const n of [`l${LAUNCHES - 1}`, 'big']) await waitOperation(d, await d.request('DELETE', `/1.0/vms/${n}?force=true`));
    const t5 = performance.now();
    const five = await Promise.all([0, 1, 2, 3, 4].map((i) => launchToPrompt(d, `five${i}`)));
    const fiveAllMs = performance.now() - t5;

    const med = (xs: number[]): number => percentile(xs, 50);
    // The daemon picks the accelerator per host (docs/hosts.md); the text says which one these numbers are for.
    const tcg = keep.accel === 'tcg';
    const howToRead = tcg
      ? `How to read it: guests here run under QEMU with TCG (this host cannot run
full-system guests on KVM, see \`hangar host check\`), so launch-to-prompt is dominated by
software emulation of the Linux boot, not by Hangar.`
      : `How to read it: guests here run under QEMU with KVM (\`hangar host check\`).`;
    const md = `
## Platform (hangard API, QEMU engine)

| measure | result | peer figure |
|---|---|---|
| \`GET /1.0/vms\` (20 VMs), ${CALLS} calls | p50 ${fmt(percentile(list, 50))} ms, p99 ${fmt(percentile(list, 99))} ms | — |
| \`GET /1.0/vms/{name}\`, running VM (includes a QMP query-status), ${CALLS} calls | p50 ${fmt(percentile(show, 50))} ms, p99 ${fmt(percentile(show, 99))} ms | — |
| \`GET /1.0/vms/{name}\`, stopped VM, ${CALLS} calls | p50 ${fmt(percentile(showStopped, 50))} ms, p99 ${fmt(percentile(showStopped, 99))} ms | — |
| launch (POST → operation done, QEMU process up), median of ${LAUNCHES} | ${fmt(med(single.map((s) => s.apiMs)))} ms | — |
| launch → guest shell prompt on the console, median of ${LAUNCHES} (128M, 1 vCPU, **${keep.accel.toUpperCase()}**) | ${fmt(med(single.map((s) => s.promptMs)))} ms | Firecracker: API start → /sbin/init ≤ 125 ms (KVM, minimal kernel) |
| five launches at once → all five prompts | ${fmt(fiveAllMs)} ms (slowest single ${fmt(Math.max(...five.map((f) => f.promptMs)))} ms) | Firecracker: 5 VMs created per host core per second |
| hangard RSS, idle / after ${3 * CALLS} API calls | ${(daemonRssIdle / MiB).toFixed(1)} MiB / ${(daemonRssBusy / MiB).toFixed(1)} MiB | — |
${mem.map((m) => `| QEMU process for a ${m.label} guest at its prompt: RSS; guest RAM touched; RSS − touched | ${(m.rss / MiB).toFixed(1)} MiB; ${m.touched === null ? 'n/a' : `${(m.touched / MiB).toFixed(1)} MiB`}; ${m.overhead === null ? 'n/a' : `**${(m.overhead / MiB).toFixed(1)} MiB**`} | Firecracker ≤ 5 MiB, Cloud Hypervisor ~6 MiB VMM overhead |`).join('\n')}

${howToRead} "Guest RAM touched" is the
resident part of QEMU's guest-RAM mapping (from /proc/PID/smaps). A guest
touches only part of its RAM, so subtracting the configured RAM size from RSS
would hide QEMU's own cost; subtracting what was touched does not.
"RSS − touched" is what QEMU itself costs: its code, heap,
device state${tcg ? ` and, under TCG, the translated-code cache, which is why it is far
above the microVM monitors' figures (they run on KVM, without TCG)` : ''}.
API latencies are measured over the Unix socket from a Node client with
keep-alive, sequential calls.
`;
    const file = writeSection('platform', md);
    process.stdout.write(`${md}\nwritten to ${file}\n`);
  } finally {
    await d.cleanup();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`api-bench: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
