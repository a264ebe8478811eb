/**
 * Monitoring end to end: a real daemon sampling every second, two real QEMU
 * guests of the `tiny` image. One runs a shell busy loop on its console,
 * the other idles. The metrics API shows the busy guest's CPU time climbing
 * and the idle one's nearly flat; /metrics parses with a strict Prometheus
 * text parser and names both VMs; a CPU alert (threshold lowered for the
 * test in hangard.json) is raised for the busy loop, told on the events
 * stream, and cleared once the loop is killed; `hangar top --once --json`
 * and `hangar stats` read the same data.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startDaemon, waitOperation, ConsoleSession, type TestDaemon } from '../helpers/daemon.js';
import { runHangar } from '../helpers/cli.js';
import { parsePrometheusText } from '../helpers/prom-text.js';
import { TINY_PROMPT } from '../../src/host/images/tiny.js';
import { until } from '../helpers/until.js';

interface Sample { t: number; cpuPercent: number; cpuSeconds: number; memoryBytes: number }
interface Alert { id: number; vm: string | null; kind: string; message: string; raisedAt: number; clearedAt: number | null }

let d: TestDaemon;
// CPU above 5 % of its vCPU for 3 s raises the alert (and 3 s below clears it). A busy loop under
// TCG wants a whole host CPU, but on a host shared with other work (load 15 on 2 cores) it was seen
// to get as little as 6 %; an idle tiny guest stays at about 1 %.
const CONFIG = { monitoring: { alerts: { cpuPercent: 5, cpuForSeconds: 3 } } };

before(async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-test-monitor-'));
  fs.writeFileSync(path.join(dataDir, 'hangard.json'), JSON.stringify(CONFIG));
  d = await startDaemon({ dataDir, args: ['--sample-interval', '1'] });
});
after(async () => { await d?.cleanup(); });

const samples = async (vm: string): Promise<Sample[]> => {
  const r = await d.request('GET', `/1.0/vms/${vm}/metrics?since=10m`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.metadata.vm, vm);
  return r.body.metadata.samples as Sample[];
};
const alerts = async (): Promise<Alert[]> => (await d.request('GET', '/1.0/alerts')).body.metadata as Alert[];

test('a busy guest climbs, an idle one stays flat; /metrics parses; the CPU alert fires and clears', { timeout: 300_000 }, async () => {
  for (const name of ['busy', 'idle']) {
    const op = await waitOperation(d, await d.request('POST', '/1.0/vms', { name, image: 'tiny', memory: '128M', engine: 'qemu' }));
    assert.equal(op.status, 'success', JSON.stringify(op));
  }
  const con = await ConsoleSession.open(d, 'busy');
  await con.waitForPrompt(TINY_PROMPT);
  // Booting is busy work too (it may raise and clear an alert): start once both guests have settled,
  // each below the alert threshold for its last 4 samples (a guest still booting would raise its alert later).
  const calm = async (vm: string): Promise<boolean> => {
    const last = (await samples(vm)).slice(-4);
    return last.length === 4 && last.every((x) => x.cpuPercent < CONFIG.monitoring.alerts.cpuPercent);
  };
  await until('both guests settle', async () => !(await alerts()).some((a) => a.clearedAt === null) && (await calm('busy')) && (await calm('idle')), 120_000);
  const loopStart = Date.now();
  await con.run('while :; do :; done & echo loop=$!');

  // The alert: raised for the busy VM only, and told as an event.
  const raised = await until('a CPU alert for busy', async () => (await alerts()).find((a) => a.vm === 'busy' && a.kind === 'cpu' && a.clearedAt === null && a.raisedAt >= loopStart));
  assert.match(raised.message, /^VM busy uses \d+% of its 1 vCPU/);
  assert.ok(!(await alerts()).some((a) => a.vm === 'idle' && a.raisedAt >= loopStart), 'the idle VM raised nothing');
  const ev = (await d.request('GET', '/1.0/events?vm=busy')).body.metadata as Array<{ type: string; reason?: string }>;
  assert.ok(ev.some((e) => e.type === 'alert' && e.reason?.startsWith(`raised cpu (alert ${raised.id})`)), JSON.stringify(ev));

  // History: samples a second apart. Once the busy VM has gained a second of CPU time since the loop
  // started, the idle one has gained far less over the same samples.
  const gained = (s: Sample[]) => s.at(-1)!.cpuSeconds - s[0]!.cpuSeconds;
  const since = (s: Sample[]) => s.filter((x) => x.t >= loopStart);
  const busy = await until('busy gains a second of CPU time', async () => {
    const s = since(await samples('busy'));
    return s.length >= 3 && gained(s) >= 1 ? s : null;
  });
  const idle = since(await samples('idle')).filter((s) => s.t <= busy.at(-1)!.t);
  assert.ok(idle.length >= 3, `idle samples since the loop started: ${idle.length}`);
  for (let i = 1; i < busy.length; i++) assert.ok(busy[i]!.cpuSeconds >= busy[i - 1]!.cpuSeconds, 'CPU time never goes down');
  assert.ok(gained(idle) < gained(busy) / 4, `idle gained ${gained(idle)} s against busy's ${gained(busy)} s`);
  assert.ok(busy.at(-1)!.memoryBytes > 16 * 2 ** 20, 'a QEMU process has an RSS');

  // Prometheus: strict parse, both VMs there with their labels.
  const m = await d.request('GET', '/metrics');
  assert.equal(m.status, 200);
  assert.match(String(m.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  const fams = parsePrometheusText(String(m.body));
  const cpu = fams.get('hangar_vm_cpu_seconds_total');
  assert.equal(cpu?.type, 'counter');
  const busySeries = cpu!.samples.find((s) => s.labels.vm === 'busy');
  assert.deepEqual(Object.keys(busySeries?.labels ?? {}).sort(), ['engine', 'host', 'vm']);
  assert.equal(busySeries!.labels.engine, 'qemu');
  assert.ok(cpu!.samples.some((s) => s.labels.vm === 'idle'));
  assert.equal(fams.get('hangar_alerts_active')!.samples.find((s) => s.labels.kind === 'cpu')?.value, 1);

  // The CLI reads the same: top as JSON over a pipe, stats of one VM.
  const top = await runHangar(['top', '--once', '--json', '--sort', 'name'], { env: d.env });
  assert.equal(top.code, 0, top.stderr);
  const topJ = JSON.parse(top.stdout) as { vms: Array<{ vm: string; sample: Sample | null }>; alerts: Alert[] };
  assert.deepEqual(topJ.vms.map((v) => v.vm), ['busy', 'idle']);
  assert.ok(topJ.vms.every((v) => v.sample && v.sample.cpuSeconds > 0));
  assert.ok(topJ.alerts.some((a) => a.id === raised.id));

  // The loop ends: the alert clears and the clearing is an event too.
  await con.run('kill %1; wait');
  const cleared = await until('the CPU alert cleared', async () => (await alerts()).find((a) => a.id === raised.id && a.clearedAt !== null));
  assert.ok(cleared.clearedAt! > cleared.raisedAt);
  const ev2 = (await d.request('GET', '/1.0/events?vm=busy')).body.metadata as Array<{ type: string; reason?: string }>;
  assert.ok(ev2.some((e) => e.type === 'alert' && e.reason?.startsWith(`cleared cpu (alert ${raised.id})`)));
  await con.close();

  const stats = await runHangar(['stats', 'busy', '--since', '10m', '--json'], { env: d.env });
  assert.equal(stats.code, 0, stats.stderr);
  assert.ok((JSON.parse(stats.stdout) as { samples: Sample[] }).samples.length >= busy.length);

  // Host history and the budget the two VMs hold.
  const host = (await d.request('GET', '/1.0/host/metrics?since=5m')).body.metadata;
  assert.ok(host.samples.length >= 3);
  assert.deepEqual(host.budget.vcpus.committed, 2);
  assert.equal(host.budget.memoryBytes.committed, 2 * 128 * 2 ** 20);
  assert.ok(host.samples.at(-1).memoryTotalBytes > 0 && host.samples.at(-1).dataDirTotalBytes > 0);

  // The routes are in the OpenAPI document.
  const doc = (await d.request('GET', '/openapi.json')).body;
  for (const p of ['/1.0/vms/{name}/metrics', '/1.0/host/metrics', '/1.0/alerts', '/1.0/metrics', '/metrics']) assert.ok(doc.paths[p]?.get, `${p} documented`);
});
