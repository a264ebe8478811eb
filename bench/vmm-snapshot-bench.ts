/**
 * hangar-vmm snapshot and restore against guest memory size (node dist/bench/vmm-snapshot-bench.js):
 * a guests/snapshot.c guest runs on 1 vCPU with 64 MiB and 1 GiB of RAM, once
 * freshly booted (a few MiB in use) and once after writing every page of its
 * RAM (`snap.touch=1`); it is paused and snapshotted (PUT /snapshot/create),
 * then a fresh hangar-vmm, already answering its socket as an engine would
 * keep one, loads it with resume_vm (PUT /snapshot/load). Reported, medians
 * of SNAPSHOT_BENCH_RUNS runs:
 *  - create: the PUT as the client sees it, of which writing memory (VMM's
 *    own timing), and the bytes of guest memory written (the rest are holes);
 *  - restore: PUT /snapshot/load → answered (machine rebuilt, vCPUs running), of which
 *    rebuilding the machine (VMM's timing: KVM VM, memory mapping, devices, vCPU state),
 *    → the vCPU's first KVM_RUN, → the guest's next console line (it ran
 *    its ring-3 loop to its next print: ~4 M increments plus the pages it
 *    touches on the way, read lazily from the memory file);
 *  - the restored VMM's RSS once the guest printed (memory comes in lazily).
 * Writes the `vmm-snapshot` section of docs/benchmarks.md.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { percentile, writeSection } from './report.js';
import { api, buildGuest, ConsoleClient, guestTestsUnavailable, startVmm } from '../test/helpers/vmm.js';

const RUNS = Number(process.env.SNAPSHOT_BENCH_RUNS ?? 3);
const SIZES = (process.env.SNAPSHOT_BENCH_MIB ?? '64,1024').split(',').map(Number);
const IDLE_MS = Number(process.env.SNAPSHOT_BENCH_IDLE_MS ?? 3000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const med = (xs: number[]) => percentile(xs, 50);

interface Sample {
  createMs: number;
  memoryMs: number;
  memDataMiB: number;
  loadAnswerMs: number;
  loadToEntryMs: number;
  loadToOutputMs: number;
  restoreMs: number;
  rssMiB: number;
}

async function put(sock: string, url: string, body: unknown): Promise<void> {
  const r = await api(sock, 'PUT', url, body);
  if (r.status !== 204) throw new Error(`PUT ${url}: ${JSON.stringify(r.body)}`);
}

/** GET / until it answers: the socket file appears at bind(), a moment before listen(). */
async function answering(sock: string): Promise<void> {
  for (let i = 0; ; i++) {
    try { await api(sock, 'GET', '/'); return; } catch (e) { if (i > 200) throw e; }
    await sleep(25);
  }
}

function rssMib(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}

async function once(elf: string, memMib: number, touch: boolean, dir: string): Promise<Sample> {
  const snap = path.join(dir, 'snap');
  const mem = path.join(dir, 'mem');
  const a = await startVmm();
  try {
    await answering(a.apiSock);
    const con = await ConsoleClient.connect(a.consoleSock);
    await put(a.apiSock, '/machine-config', { vcpu_count: 1, mem_size_mib: memMib });
    await put(a.apiSock, '/boot-source', { kernel_image_path: elf, boot_args: `console=ttyS0${touch ? ' snap.touch=1' : ''}` });
    await put(a.apiSock, '/actions', { action_type: 'InstanceStart' });
    await con.waitFor(/snap: step=2 /, 300_000).catch((e: Error) => { throw new Error(`${e.message}\nhangar-vmm: ${a.stderr()}`); });
    await put(a.apiSock, '/actions', { action_type: 'Pause' });
    const t0 = performance.now();
    await put(a.apiSock, '/snapshot/create', { snapshot_path: snap, mem_file_path: mem });
    const createMs = performance.now() - t0;
    const m = (await api(a.apiSock, 'GET', '/metrics')).body as { last_snapshot: { memoryMs: number; memDataBytes: number } };
    con.close();
    await a.cleanup();

    const b = await startVmm();
    try {
      await answering(b.apiSock);
      const cb = await ConsoleClient.connect(b.consoleSock);
      // The VMM preloads its machine model and a vCPU thread after its first answer; on a busy
      // 2-core host that takes 1-2 s. Measured here: a VMM started ahead, as an engine would keep one.
      await sleep(IDLE_MS);
      const t1 = performance.now();
      await put(b.apiSock, '/snapshot/load', { snapshot_path: snap, mem_file_path: mem, resume_vm: true });
      const loadAnswerMs = performance.now() - t1;
      await cb.waitFor(/^snap: step=\d+ /m, 60_000);
      const timing = ((await api(b.apiSock, 'GET', '/metrics')).body as { timing_ms: Record<string, number> }).timing_ms;
      const rssMiB = rssMib(b.child.pid!);
      cb.close();
      return {
        createMs, memoryMs: m.last_snapshot.memoryMs, memDataMiB: m.last_snapshot.memDataBytes / 2 ** 20, loadAnswerMs,
        loadToEntryMs: timing.first_vcpu_entry! - timing.snapshot_load!, loadToOutputMs: timing.first_console_byte! - timing.snapshot_load!,
        restoreMs: timing.snapshot_restored! - timing.snapshot_modules_ready!, rssMiB,
      };
    } finally {
      await b.cleanup();
    }
  } finally {
    await a.cleanup();
    for (const f of [snap, mem]) fs.rmSync(f, { force: true });
  }
}

async function main(): Promise<void> {
  const why = guestTestsUnavailable();
  if (why) {
    writeSection('vmm-snapshot', `## hangar-vmm snapshots\n\nNot measured: ${why}.`);
    return;
  }
  const elf = buildGuest('snapshot');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-vmm-snapshot-bench-'));
  const rows: string[] = [];
  try {
    for (const mib of SIZES) {
      for (const touch of [false, true]) {
        const samples: Sample[] = [];
        for (let i = 0; i < RUNS; i++) samples.push(await once(elf, mib, touch, dir));
        const col = (k: keyof Sample, digits = 0) => med(samples.map((s) => s[k])).toFixed(digits);
        const row = `| ${mib} MiB | ${touch ? 'all pages written' : 'fresh boot'} | ${col('createMs')} | ${col('memoryMs')} | ${col('memDataMiB', 1)} | ${col('loadAnswerMs')} | ${col('restoreMs')} | ${col('loadToEntryMs')} | ${col('loadToOutputMs')} | ${col('rssMiB')} |`;
        rows.push(row);
        process.stderr.write(`${row}\n`);
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const md = `## hangar-vmm snapshots

\`node dist/bench/vmm-snapshot-bench.js\`: guests/snapshot.c on 1 vCPU, paused after a few lines,
PUT /snapshot/create, then a fresh hangar-vmm loads it with
\`resume_vm\` (that VMM answered its socket ${IDLE_MS / 1000} s earlier, so its modules and vCPU thread are
preloaded, as an engine keeping a VMM ready would have it). Medians of ${RUNS} runs; times in ms.
Memory files on ${os.tmpdir()}.

| guest RAM | guest memory | create (PUT) | of which memory | memory written (MiB) | load PUT → answered | of which rebuilding the machine | load → first KVM_RUN | load → next guest line | RSS after (MiB) |
|---|---|---|---|---|---|---|---|---|---|
${rows.join('\n')}

Restore does not read guest memory up front (a private mapping of the memory file), so load →
guest running stays flat as RAM grows; creating a snapshot writes what the guest has touched
(never-touched pages are skipped without being read, zero blocks become holes), so it grows with
the memory in use, not with the configured size, at the rate this host writes memory to files.
The RSS after restore stays ~80 MiB (the VMM itself) whatever the guest's size: memory comes in
as the guest touches it.`;
  const file = writeSection('vmm-snapshot', md);
  process.stdout.write(`${md}\n\nwritten to ${file}\n`);
}

await main();
