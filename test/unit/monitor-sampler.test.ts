/**
 * The sampler over fake /proc and /sys files, a real SQLite store and an
 * engine handle that answers with QMP counters recorded from a real QEMU:
 * CPU percent from the change in CPU time, NIC counters from the TAP, disk
 * bytes from query-blockstats; a VM whose process vanished or whose engine
 * fails costs only its own sample; the CPU alert fires; /metrics parses
 * with the strict text-format parser and names every VM.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { projectRoot } from '../../src/common/paths.js';
import { Store, type VmRecord } from '../../src/host/store.js';
import { EventBus } from '../../src/host/events.js';
import { DEFAULT_MONITOR_SETTINGS, type MonitorSettings } from '../../src/host/monitor/config.js';
import { MetricsHistory } from '../../src/host/monitor/history.js';
import { AlertManager } from '../../src/host/monitor/alerts.js';
import { Sampler } from '../../src/host/monitor/sampler.js';
import { createMetricsRegistry } from '../../src/host/monitor/prometheus.js';
import { parseBlockstats } from '../../src/engines/qemu/device-counters.js';
import { tapNameFor } from '../../src/host/network/addressing.js';
import type { VmHandle } from '../../src/engines/engine.js';
import type { AdmissionBudget } from '../../src/host/api/schemas.js';
import { parsePrometheusText } from '../helpers/prom-text.js';
import { fakeQemu, fakeRoot, writeFake } from '../helpers/fake-proc.js';

const blockstats = (JSON.parse(fs.readFileSync(path.join(projectRoot(), 'test/fixtures/monitor/qmp-qemu7.2-no-balloon.json'), 'utf8')) as Record<string, { return: unknown }>)['query-blockstats']!.return;

function rec(name: string, state: VmRecord['state'], pid: number | null, nics: Array<{ name: string }> = []): VmRecord {
  return {
    id: `id-${name}`, name, state, pid, accel: 'tcg', startedAt: null, lastExit: null, createdAt: new Date(0).toISOString(),
    spec: { image: 'tiny', engine: 'qemu', cpus: 1, memoryBytes: 256 * 2 ** 20, cmdline: '', disks: [], ...(nics.length ? { nics: nics.map((n) => ({ ...n, network: 'default', mac: '52:54:00:00:00:01' })) } : {}) } as VmRecord['spec'],
  };
}

const budget = (): AdmissionBudget => ({
  memoryBytes: { committed: 768 * 2 ** 20, limit: 20 * 2 ** 30 }, cpus: { committed: 3, limit: 8 }, vms: { defined: 4, limit: 1000 },
  settings: { memoryReserveBytes: 2 ** 30, memoryRatio: 1, cpuRatio: 4, maxVms: 1000 },
});

test('one tick after another: rates, counters, isolation of failures, alerts and /metrics', async (t) => {
  const root = fakeRoot();
  const dir = fs.mkdtempSync(path.join(root, 'data-'));
  const store = new Store(dir);
  t.after(() => { store.close(); fs.rmSync(root, { recursive: true, force: true }); });
  const events = new EventBus(store);
  const settings: MonitorSettings = { ...DEFAULT_MONITOR_SETTINGS, sampleIntervalSeconds: 10, alerts: { ...DEFAULT_MONITOR_SETTINGS.alerts, cpuPercent: 50, cpuForSeconds: 10 } };
  const history = new MetricsHistory(store, settings);
  const alerts = new AlertManager(store, events);

  // busy: a QEMU process with a NIC and a disk; idle: one that uses no CPU; vanished: a pid with no /proc entry;
  // broken: its engine's counters fail; off: stopped.
  store.insertVm(rec('busy', 'running', 100, [{ name: 'eth0' }]));
  store.insertVm(rec('idle', 'running', 200));
  store.insertVm(rec('vanished', 'running', 300));
  store.insertVm(rec('broken', 'running', 400));
  store.insertVm(rec('off', 'stopped', null));
  fakeQemu(root, 100, { main: 10, vcpu0: 100, vcpu1: 0, io: 0 });
  fakeQemu(root, 200, { main: 10, vcpu0: 5, vcpu1: 0, io: 0 });
  fakeQemu(root, 400, { main: 10, vcpu0: 5, vcpu1: 0, io: 0 });
  const tap = tapNameFor('id-busy', 'eth0');
  writeFake(root, `sys/class/net/${tap}/statistics/rx_bytes`, '500\n');
  writeFake(root, `sys/class/net/${tap}/statistics/tx_bytes`, '9000\n');
  writeFake(root, 'proc/stat', 'cpu  100 0 100 800 0 0 0 0 0 0\n');
  writeFake(root, 'proc/meminfo', 'MemTotal: 4000000 kB\nMemAvailable: 3600000 kB\n');
  writeFake(root, 'proc/loadavg', '0.50 0.40 0.30 1/100 1\n');

  const handle = (counters: () => Promise<unknown>): VmHandle => ({ deviceCounters: counters } as unknown as VmHandle);
  const handles: Record<string, VmHandle> = {
    busy: handle(async () => ({ disks: parseBlockstats(blockstats), guestMemory: null })),
    broken: handle(async () => { throw new Error('QMP connection is closed'); }),
  };
  let now = 1_000_000;
  const sampler = new Sampler({
    store, liveHandle: (n) => handles[n] ?? null, budget, dataDir: dir, history, alerts, settings,
    log: pino({ level: 'silent' }), root, now: () => now, hostCpus: 2,
  });

  await sampler.tick();
  // 10 s later: busy used 8 more seconds of CPU (80 %), idle none; the host was 50 % busy.
  now += 10_000;
  fakeQemu(root, 100, { main: 10, vcpu0: 900, vcpu1: 0, io: 0 });
  writeFake(root, 'proc/stat', 'cpu  200 0 200 1000 0 0 0 0 0 0\n');
  await sampler.tick();

  const busy = sampler.vm('busy')!;
  assert.equal(busy.sample!.cpuPercent, 80);
  assert.equal(busy.sample!.cpuSeconds, 9.1);
  assert.equal(busy.vcpuSeconds, 9);
  assert.equal(busy.sample!.memoryBytes, 230400 * 1024);
  assert.equal(busy.sample!.netRxBytes, 9000, 'what the host sent into the TAP');
  assert.equal(busy.sample!.netTxBytes, 500);
  assert.equal(busy.sample!.diskReadBytes, 4608, 'from the recorded query-blockstats');
  assert.equal(sampler.vm('idle')!.sample!.cpuPercent, 0);
  assert.equal(sampler.vm('vanished')!.sample, null, 'a process that is gone has no sample, and is no error');
  assert.equal(sampler.vm('off')!.sample, null);
  const broken = sampler.vm('broken')!;
  assert.ok(broken.sample, 'an engine that fails still leaves the /proc part of the sample');
  assert.equal(broken.sample.diskReadBytes, 0);
  assert.equal(sampler.hostNow()!.cpuPercent, 50);
  assert.equal(sampler.hostNow()!.memoryUsedBytes, 400000 * 1024);

  // History holds both ticks of the running VMs.
  const h = history.vmSamples('id-busy', { sinceMs: 0, nowMs: now, sampleIntervalSeconds: 10 });
  assert.deepEqual(h.samples.map((s) => s.cpuSeconds), [1.1, 9.1]);

  // busy has been above 50 % for 10 s after one more busy tick: the CPU alert is raised.
  now += 10_000;
  fakeQemu(root, 100, { main: 10, vcpu0: 1800, vcpu1: 0, io: 0 });
  await sampler.tick();
  now += 10_000;
  fakeQemu(root, 100, { main: 10, vcpu0: 2700, vcpu1: 0, io: 0 });
  await sampler.tick();
  const active = alerts.activeAlerts();
  assert.deepEqual(active.map((a) => [a.vm, a.kind]), [['busy', 'cpu']]);
  assert.deepEqual(store.listEvents({ vm: 'busy' }).map((e) => e.type), ['alert']);

  const text = await createMetricsRegistry({ sampler, alerts, budget, hostName: 'testhost' }).metrics();
  const fams = parsePrometheusText(text);
  const cpu = fams.get('hangar_vm_cpu_seconds_total')!;
  assert.equal(cpu.type, 'counter');
  assert.deepEqual(cpu.samples.find((s) => s.labels.vm === 'busy')?.labels, { vm: 'busy', engine: 'qemu', host: 'testhost' });
  assert.equal(cpu.samples.find((s) => s.labels.vm === 'busy')?.value, 27.1);
  assert.deepEqual(fams.get('hangar_vm_state')!.samples.map((s) => `${s.labels.vm}=${s.labels.state}`).sort(), ['broken=running', 'busy=running', 'idle=running', 'off=stopped', 'vanished=running']);
  assert.equal(fams.get('hangar_vm_disk_read_bytes_total')!.samples[0]!.labels.disk, 'root');
  assert.equal(fams.get('hangar_vm_network_receive_bytes_total')!.samples[0]!.value, 9000);
  assert.equal(fams.get('hangar_alerts_active')!.samples.find((s) => s.labels.kind === 'cpu')?.value, 1);
  assert.equal(fams.get('hangar_host_vcpus_committed')!.samples[0]!.value, 3);
});

test('the strict parser rejects what Prometheus would', () => {
  assert.throws(() => parsePrometheusText('# TYPE a counter\na{x="1} 1\n'), /unterminated|expected/);
  assert.throws(() => parsePrometheusText('a 1\n'), /before any TYPE/);
  assert.throws(() => parsePrometheusText('# TYPE a gauge\na one\n'), /not a float/);
  assert.throws(() => parsePrometheusText('# TYPE a gauge\na 1\na 2\n'), /twice/);
  assert.throws(() => parsePrometheusText('# TYPE a gauge\na 1'), /newline/);
  assert.equal(parsePrometheusText('# HELP a x\n# TYPE a gauge\na{b="q\\"z"} 1.5e3\n').get('a')!.samples[0]!.labels.b, 'q"z');
});

test('docs/grafana-dashboard.json and docs/monitoring.md name only metrics /metrics exposes, and the dashboard is complete', async () => {
  const root = fakeRoot();
  const dir = path.join(root, 'data');
  const store = new Store(dir);
  try {
    const events = new EventBus(store);
    const sampler = new Sampler({ store, liveHandle: () => null, budget, dataDir: dir, history: new MetricsHistory(store, DEFAULT_MONITOR_SETTINGS), alerts: new AlertManager(store, events), settings: DEFAULT_MONITOR_SETTINGS, log: pino({ level: 'silent' }) });
    const registry = createMetricsRegistry({ sampler, alerts: new AlertManager(store, events), budget });
    const exposed = new Set((await registry.getMetricsAsJSON()).map((m) => m.name));
    const dashboardText = fs.readFileSync(path.join(projectRoot(), 'docs/grafana-dashboard.json'), 'utf8');
    const dashboard = JSON.parse(dashboardText) as { panels: Array<{ type: string; targets?: Array<{ expr: string }> }>; templating: { list: Array<{ name: string }> } };
    const named = (text: string) => new Set([...text.matchAll(/\bhangar_[a-z0-9_]+/g)].map((m) => m[0]));
    for (const n of named(dashboardText)) assert.ok(exposed.has(n), `the dashboard queries ${n}, which /metrics does not expose`);
    const docs = fs.readFileSync(path.join(projectRoot(), 'docs/monitoring.md'), 'utf8');
    for (const n of named(docs)) assert.ok(exposed.has(n), `docs/monitoring.md names ${n}, which /metrics does not expose`);
    for (const n of exposed) assert.ok(named(docs).has(n), `docs/monitoring.md does not document ${n}`);
    assert.deepEqual(dashboard.templating.list.map((v) => v.name), ['datasource', 'host', 'vm']);
    for (const p of dashboard.panels.filter((x) => x.type !== 'row')) assert.ok(p.targets && p.targets.length > 0 && p.targets.every((t) => t.expr.includes('hangar_')));
  } finally {
    store.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
});
