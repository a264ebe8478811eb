/**
 * Snapshot timings through hangard (POST → operation done) for a 512 MiB
 * tiny guest (QEMU, TCG) on a 64 MiB qcow2 data disk: disk snapshots of the
 * stopped VM, memory snapshots of the running VM, restores of each kind,
 * and a copy from a snapshot. Median of 3 each; writes the `snapshots`
 * section of docs/benchmarks.md.
 */
import { performance } from 'node:perf_hooks';
import { startDaemon, waitOperation, ConsoleSession, type TestDaemon } from '../test/helpers/daemon.js';
import { TINY_PROMPT } from '../src/host/images/tiny.js';
import { writeSection } from './report.js';

const RUNS = 3;

async function timed(d: TestDaemon, method: string, url: string, body?: unknown): Promise<{ ms: number; result: any }> {
  const t0 = performance.now();
  const op = await waitOperation(d, await d.request(method, url, body));
  const ms = performance.now() - t0;
  if (op.status !== 'success') throw new Error(`${method} ${url}: ${JSON.stringify(op.error)}`);
  return { ms, result: op.result };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (ms: number): string => `${ms.toFixed(0)} ms`;

async function main(): Promise<void> {
  const d = await startDaemon();
  try {
    await timed(d, 'POST', '/1.0/vms', { name: 'bench', image: 'tiny', memory: '512M', disks: [{ name: 'data', size: '64M' }] });
    const con = await ConsoleSession.open(d, 'bench');
    await con.waitForPrompt(TINY_PROMPT);
    await con.close();
    const rows: Array<[string, string]> = [];

    const memCreate: number[] = [];
    const memLoad: number[] = [];
    let stateBytes = 0;
    for (let i = 0; i < RUNS; i++) {
      const c = await timed(d, 'POST', '/1.0/vms/bench/snapshots', { name: `m${i}`, memory: true });
      memCreate.push(c.ms);
      stateBytes = c.result.vmStateBytes;
      memLoad.push((await timed(d, 'POST', `/1.0/vms/bench/snapshots/m${i}/restore`, { force: true })).ms);
    }
    rows.push(['memory snapshot of the running guest (`snapshot-save` job)', `${fmt(median(memCreate))}; machine state ${(stateBytes / 2 ** 20).toFixed(1)} MiB`]);
    rows.push(['restore it into the running VM (`snapshot-load` job)', fmt(median(memLoad))]);

    await timed(d, 'PUT', '/1.0/vms/bench/state', { action: 'stop', force: true });
    const loadvm: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      loadvm.push((await timed(d, 'POST', `/1.0/vms/bench/snapshots/m${i}/restore`, { force: true })).ms);
      await timed(d, 'PUT', '/1.0/vms/bench/state', { action: 'stop', force: true });
    }
    rows.push(['restore it into the stopped VM (QEMU started with `-loadvm`, to running)', fmt(median(loadvm))]);

    const diskCreate: number[] = [];
    const diskRestore: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      diskCreate.push((await timed(d, 'POST', '/1.0/vms/bench/snapshots', { name: `d${i}` })).ms);
      diskRestore.push((await timed(d, 'POST', `/1.0/vms/bench/snapshots/d${i}/restore`, { force: true })).ms);
    }
    rows.push(['disk snapshot of the stopped VM (`qemu-img snapshot -c`)', fmt(median(diskCreate))]);
    rows.push(['restore it (`qemu-img snapshot -a`)', fmt(median(diskRestore))]);

    const copies: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      copies.push((await timed(d, 'POST', '/1.0/vms/bench/copy', { name: `bench-c${i}`, snapshot: 'm0' })).ms);
    }
    rows.push(['copy from the memory snapshot to a new VM (`qemu-img convert -l`)', fmt(median(copies))]);

    const md = [
      '## Snapshots (QEMU engine)',
      '',
      `A 512 MiB tiny guest (1 vCPU, **TCG**) at its shell prompt, with a 64 MiB qcow2 data disk that holds the snapshots; API request → operation done, median of ${RUNS}.`,
      '',
      '| measure | result |',
      '|---|---|',
      ...rows.map(([k, v]) => `| ${k} | ${v} |`),
      '',
      'The machine state holds what the guest touched (zero pages cost nothing), so it grows with the guest\'s working set, not its configured RAM.',
    ].join('\n');
    const file = writeSection('snapshots', md);
    process.stdout.write(`${md}\n\nwritten to ${file}\n`);
  } finally {
    await d.cleanup();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
