/**
 * `hangar top`, `hangar stats` and `hangar alerts` against a fake daemon:
 * the requests they send, the tables and JSON they print, sorting, and bad
 * options failing with exit code 2 before any request.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { FakeDaemon, HangarProcess, runHangar, sync } from './cli-fake-daemon.js';

const sample = (cpuPercent: number, memoryBytes: number) => ({
  t: Date.UTC(2026, 10, 30, 1, 0, 0), cpuPercent, cpuSeconds: 12.5, memoryBytes, guestMemoryUsedBytes: null,
  diskReadBytes: 4096, diskWriteBytes: 0, netRxBytes: 9000, netTxBytes: 500,
});
const summary = {
  sampleIntervalSeconds: 10,
  host: { t: Date.UTC(2026, 10, 30, 1, 0, 0), cpuPercent: 42.5, memoryUsedBytes: 2 * 2 ** 30, memoryTotalBytes: 24 * 2 ** 30, load1: 1.5, dataDirUsedBytes: 25 * 2 ** 30, dataDirTotalBytes: 250 * 2 ** 30 },
  budget: { vcpus: { committed: 3, available: 8 }, memoryBytes: { committed: 768 * 2 ** 20, available: 21 * 2 ** 30 } },
  vms: [
    { vm: 'alpha', engine: 'qemu', state: 'running', cpus: 1, memoryBytes: 256 * 2 ** 20, sample: sample(5, 300 * 2 ** 20) },
    { vm: 'beta', engine: 'qemu', state: 'running', cpus: 2, memoryBytes: 512 * 2 ** 20, sample: sample(95, 100 * 2 ** 20) },
    { vm: 'gamma', engine: 'micro', state: 'stopped', cpus: 1, memoryBytes: 128 * 2 ** 20, sample: null },
  ],
  alerts: [{ id: 7, vm: 'beta', kind: 'cpu', message: 'VM beta uses 95% of its 2 vCPUs', raisedAt: Date.UTC(2026, 10, 30, 0, 55, 0), clearedAt: null }],
};

let fake: FakeDaemon;
before(async () => {
  fake = await new FakeDaemon()
    .on('GET', '/1.0/metrics', sync(summary))
    .on('GET', '/1.0/vms/beta/metrics', sync({ vm: 'beta', step: 10, samples: [sample(90, 100 * 2 ** 20), { ...sample(100, 110 * 2 ** 20), t: Date.UTC(2026, 10, 30, 1, 0, 10), cpuSeconds: 22.5 }] }))
    .on('GET', '/1.0/alerts', sync([
      summary.alerts[0],
      { id: 6, vm: null, kind: 'disk-space', message: 'the data directory is 91% full', raisedAt: Date.UTC(2026, 10, 29), clearedAt: Date.UTC(2026, 10, 29, 1) },
    ]))
    .listen();
});
after(async () => { await fake.close(); });

const run = (args: string[]) => runHangar(args, { env: fake.env() });

test('top --once: the host lines, active alerts, and VMs busiest first', async () => {
  const r = await run(['top', '--once']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^host: cpu 42\.5% {2}memory 2G of 24G {2}load 1\.50 {2}data dir 25G of 250G$/m);
  assert.match(r.stdout, /^committed: 3 of 8 vCPUs, 768M of 21G memory {2}VMs: 2 running of 3 {2}sorted by cpu$/m);
  assert.match(r.stdout, /^ALERT cpu beta: VM beta uses 95% of its 2 vCPUs/m);
  const rows = r.stdout.split('\n').filter((l) => /^(NAME|alpha|beta|gamma)\b/.test(l));
  assert.deepEqual(rows.map((l) => l.split(/\s+/)[0]), ['NAME', 'beta', 'alpha', 'gamma']);
  assert.match(rows[1]!, /^beta\s+running\s+qemu\s+2\s+95\.0\s+100M\s+-\s+4K\s+0B\s+8\.8K\s+500B$/);
  assert.match(rows[3]!, /^gamma\s+stopped\s+micro\s+1\s+-\s+-/);
});

test('top --once --sort mem / name', async () => {
  const byMem = await run(['top', '--once', '--sort', 'mem']);
  assert.deepEqual(byMem.stdout.split('\n').filter((l) => /^(alpha|beta|gamma)\b/.test(l)).map((l) => l.split(' ')[0]), ['alpha', 'beta', 'gamma']);
  const byName = await run(['top', '--once', '--sort', 'name']);
  assert.deepEqual(byName.stdout.split('\n').filter((l) => /^(alpha|beta|gamma)\b/.test(l)).map((l) => l.split(' ')[0]), ['alpha', 'beta', 'gamma']);
});

test('top --once --json: the summary, VMs in sort order, for pipes', async () => {
  const r = await run(['top', '--once', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as typeof summary;
  assert.deepEqual(j.vms.map((v) => v.vm), ['beta', 'alpha', 'gamma']);
  assert.equal(j.host.cpuPercent, 42.5);
});

test('top without --once over a pipe prints a screen per refresh (--interval)', async () => {
  const p = new HangarProcess(['top', '--interval', '100ms', '--json'], fake.env());
  try {
    await p.waitFor(/\n.*\n.*\n/);
  } finally {
    await p.stop();
  }
  const lines = p.stdout.trim().split('\n');
  for (const l of lines.slice(0, 3)) assert.equal((JSON.parse(l) as typeof summary).vms.length, 3);
});

test('stats VM --since 1h: the query it sends, a table of samples, a summary on stderr', async () => {
  const r = await run(['stats', 'beta', '--since', '1h', '--step', '10']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(fake.requests.at(-1)!.url, '/1.0/vms/beta/metrics?since=1h&step=10');
  assert.match(r.stdout, /^TIME\s+CPU%\s+CPU TIME\s+MEM\s+GUEST MEM\s+DISK R\s+DISK W\s+NET RX\s+NET TX$/m);
  assert.match(r.stdout, /^2026-11-30 01:00:10Z\s+100\.0\s+22\.50s\s+110M\s+-\s+4K/m);
  assert.match(r.stderr, /2 samples every 10s; CPU average 95\.0%, peak 100\.0%.*CPU time 10\.00s/);
  const j = await run(['stats', 'beta', '--json']);
  assert.equal((JSON.parse(j.stdout) as { samples: unknown[] }).samples.length, 2);
});

test('alerts: active and cleared; --active only the active ones', async () => {
  const r = await run(['alerts']);
  assert.match(r.stdout, /^7\s+beta\s+cpu\s+2026-11-30 00:55:00Z\s+active\s+VM beta uses 95%/m);
  assert.match(r.stdout, /^6\s+-\s+disk-space\s+2026-11-29 00:00:00Z\s+2026-11-29 01:00:00Z/m);
  const a = await run(['alerts', '--active', '--json']);
  assert.deepEqual((JSON.parse(a.stdout) as Array<{ id: number }>).map((x) => x.id), [7]);
});

test('bad options: exit 2 and a clear message, no request', async () => {
  const before = fake.requests.length;
  const s = await run(['top', '--once', '--sort', 'speed']);
  assert.equal(s.code, 2);
  assert.match(s.stderr, /--sort must be one of cpu, mem, name, disk, net, state/);
  const since = await run(['stats', 'beta', '--since', 'yesterday']);
  assert.equal(since.code, 2);
  assert.match(since.stderr, /--since must be a duration such as 30m, 1h or 7d/);
  assert.equal(fake.requests.length, before);
});
