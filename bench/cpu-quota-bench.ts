/**
 * What the VM cgroup's CPU quota costs a busy guest: the tiny image on the QEMU engine (1 vCPU)
 * launched through the daemon with the quota at exactly the vCPUs (the default) and at vCPUs + 1
 * (HANGAR_VM_CPU_ALLOWANCE=1), alternating, in one run. Per round: launch → shell prompt,
 * then a fixed busy loop in the guest's shell (wall time), and the VM cgroup's throttling
 * counters (cpu.stat: periods throttled, time throttled) over both.
 *
 *   node dist/bench/cpu-quota-bench.js     (root: the daemon confines VMs only as root)
 *
 * The daemon runs without networks (--default-network none). Writes docs/benchmarks.md, section `cpu-quota`.
 *
 * CPU_QUOTA_IMAGE=debian-12 (section `cpu-quota-debian`): the same comparison on a Debian boot (1 vCPU, 1 GiB, its
 * cloud-init seed): launch → `NAME login:` on the console, and launch → `cloud-init status --wait` done through the
 * guest agent; throttling over the whole boot. Each round takes minutes under TCG; CPU_QUOTA_ROUNDS=2 is enough.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describeHost, writeSection } from './report.js';
import { ConsoleSession, startDaemon, waitOperation, type TestDaemon } from '../test/helpers/daemon.js';
import { runHangar } from '../test/helpers/cli.js';
import { TINY_PROMPT } from '../src/host/images/tiny.js';

const IMAGE = process.env.CPU_QUOTA_IMAGE ?? 'tiny';
const ROUNDS = Number(process.env.CPU_QUOTA_ROUNDS ?? (IMAGE === 'tiny' ? 3 : 2));
const LOOP = Number(process.env.CPU_QUOTA_LOOP ?? 30000);
const say = (s: string) => process.stdout.write(`cpu-quota: ${s}\n`);

/** The cpu.stat file of the cgroup `pid` is in (v1 cpu controller or v2). */
function cpuStatFile(pid: number): string {
  const mounts = fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' '));
  for (const line of fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n')) {
    const [, ctrls, p] = line.split(':') as [string, string, string];
    const v1 = ctrls.split(',').includes('cpu');
    if (!v1 && ctrls !== '') continue;
    const m = mounts.find(([, , type, opts]) => (v1 ? type === 'cgroup' && opts!.split(',').includes('cpu') : type === 'cgroup2'));
    if (m && fs.existsSync(path.join(m[1]!, p, 'cpu.stat'))) return path.join(m[1]!, p, 'cpu.stat');
  }
  throw new Error(`no cpu cgroup for pid ${pid}`);
}

/** Throttled periods and milliseconds throttled (v1: throttled_time ns; v2: throttled_usec). */
function throttling(file: string): { periods: number; throttled: number; ms: number } {
  const kv = new Map(fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => l.split(' ') as [string, string]));
  const ms = kv.has('throttled_usec') ? Number(kv.get('throttled_usec')) / 1000 : Number(kv.get('throttled_time') ?? 0) / 1e6;
  return { periods: Number(kv.get('nr_periods') ?? 0), throttled: Number(kv.get('nr_throttled') ?? 0), ms };
}

interface Round { allowance: number; bootMs: number; loopMs: number; throttledPeriods: number; periods: number; throttledMs: number; accel: string }

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A Debian round: boot = launch → the login prompt, loop = launch → cloud-init done (the agent's `cloud-init status --wait`). */
async function debianRound(d: TestDaemon, allowance: number, n: number): Promise<Round> {
  const name = `cqd-${allowance}-${n}`;
  const limit = Date.now() + 30 * 60_000;
  const t0 = Date.now();
  const op = await waitOperation(d, await d.request('POST', '/1.0/vms', { name, image: IMAGE, engine: 'qemu', memory: '1G', cpus: 1, network: 'none' }));
  if (op.status !== 'success') throw new Error(`launch: ${JSON.stringify(op)}`);
  const vm = (await d.request('GET', `/1.0/vms/${name}`)).body.metadata as { runtime: { pid: number; accel: string } };
  const stat = cpuStatFile(vm.runtime.pid);
  const s0 = throttling(stat);
  let bootMs = 0;
  while (!bootMs) {
    const log = (await d.request('GET', `/1.0/vms/${name}/logs`)).body;
    if (typeof log === 'string' && log.includes(`${name} login:`)) bootMs = Date.now() - t0;
    else if (Date.now() > limit) throw new Error(`${name}: no login prompt within 30 min`);
    else await sleep(1000);
  }
  for (;;) {
    const r = await runHangar(['exec', name, '--timeout', '1800', '--', 'cloud-init', 'status', '--wait'], { env: d.env, timeoutMs: 1_900_000 });
    if (r.code === 0 && /status: done/.test(r.stdout)) break;
    if (!(r.code === 5 && /AGENT_UNAVAILABLE/.test(r.stderr)) || Date.now() > limit) throw new Error(`${name}: cloud-init status --wait: exit ${r.code} ${r.stdout} ${r.stderr}`);
    await sleep(2000);
  }
  const loopMs = Date.now() - t0;
  const s1 = throttling(stat);
  const stop = await waitOperation(d, await d.request('PUT', `/1.0/vms/${name}/state`, { action: 'stop', force: true }));
  if (stop.status !== 'success') throw new Error(`stop: ${JSON.stringify(stop)}`);
  await waitOperation(d, await d.request('DELETE', `/1.0/vms/${name}`));
  return { allowance, bootMs, loopMs, throttledPeriods: s1.throttled - s0.throttled, periods: s1.periods - s0.periods, throttledMs: Math.round(s1.ms - s0.ms), accel: vm.runtime.accel };
}

async function oneRound(d: TestDaemon, allowance: number, n: number): Promise<Round> {
  if (IMAGE !== 'tiny') return debianRound(d, allowance, n);
  const name = `cq-${allowance}-${n}`;
  const t0 = Date.now();
  const op = await waitOperation(d, await d.request('POST', '/1.0/vms', { name, image: 'tiny', engine: 'qemu', memory: '128M', cpus: 1, network: 'none' }));
  if (op.status !== 'success') throw new Error(`launch: ${JSON.stringify(op)}`);
  const vm = (await d.request('GET', `/1.0/vms/${name}`)).body.metadata as { runtime: { pid: number; accel: string } };
  const stat = cpuStatFile(vm.runtime.pid);
  const s0 = throttling(stat);
  const con = await ConsoleSession.open(d, name);
  await con.waitForPrompt(TINY_PROMPT);
  const bootMs = Date.now() - t0;
  const t1 = Date.now();
  // CPU in the guest's shell, then disk reads (page cache dropped each pass) that keep QEMU's own threads busy too.
  const out = await con.run(`i=0; while [ $i -lt ${LOOP} ]; do i=$((i+1)); done; for k in 1 2 3 4 5; do echo 3 > /proc/sys/vm/drop_caches; `
    + `find / -xdev -type f -exec cat {} + > /dev/null 2>&1; done; echo loop-done-$i`, 600_000);
  const loopMs = Date.now() - t1;
  if (!out.includes(`loop-done-${LOOP}`)) throw new Error(`guest loop: ${out}`);
  const s1 = throttling(stat);
  await con.close();
  const stop = await waitOperation(d, await d.request('PUT', `/1.0/vms/${name}/state`, { action: 'stop', force: true }));
  if (stop.status !== 'success') throw new Error(`stop: ${JSON.stringify(stop)}`);
  await waitOperation(d, await d.request('DELETE', `/1.0/vms/${name}`));
  return { allowance, bootMs, loopMs, throttledPeriods: s1.throttled - s0.throttled, periods: s1.periods - s0.periods, throttledMs: Math.round(s1.ms - s0.ms), accel: vm.runtime.accel };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root: the daemon confines VMs (and so gives them a CPU quota) only as root');
  const daemons = new Map<number, TestDaemon>();
  const rounds: Round[] = [];
  try {
    for (const a of [0, 1]) daemons.set(a, await startDaemon({ env: { ...process.env, HANGAR_VM_CPU_ALLOWANCE: String(a) } }));
    for (let n = 0; n < ROUNDS; n++) {
      for (const a of n % 2 === 0 ? [0, 1] : [1, 0]) {
        const r = await oneRound(daemons.get(a)!, a, n);
        say(JSON.stringify(r));
        rounds.push(r);
      }
    }
  } finally {
    for (const d of daemons.values()) { await d.stop(); fs.rmSync(d.dataDir, { recursive: true, force: true }); }
  }
  const row = (a: number) => {
    const rs = rounds.filter((r) => r.allowance === a);
    return `| vCPUs${a ? ` + ${a} (HANGAR_VM_CPU_ALLOWANCE=${a})` : ' (default)'} | ${median(rs.map((r) => r.bootMs))} | ${median(rs.map((r) => r.loopMs))} | `
      + `${rs.map((r) => `${r.throttledPeriods}/${r.periods}`).join(', ')} | ${rs.map((r) => r.throttledMs).join(', ')} |`;
  };
  const md = IMAGE !== 'tiny' ? [
    `## The VM cgroup's CPU quota and a ${IMAGE} boot (\`cpu-quota-debian\`)`,
    '',
    `Written by \`CPU_QUOTA_IMAGE=${IMAGE} node dist/bench/cpu-quota-bench.js\` (bench/cpu-quota-bench.ts). The ${IMAGE} image on the QEMU engine,`,
    `1 vCPU, 1 GiB, no network, accelerator ${rounds[0]?.accel ?? '?'}, launched through the daemon (confined, its own cgroup) with the CPU quota at exactly`,
    `the vCPUs and at vCPUs + 1, alternating, ${ROUNDS} rounds each. Login: launch request → \`NAME login:\` on the console; cloud-init:`,
    'launch request → `cloud-init status --wait` done (through the guest agent). Throttled: the VM cgroup\'s periods throttled / periods, and ms throttled, from launch to cloud-init done, per round.',
    '',
    '| CPU quota | login (ms, per round) | cloud-init done (ms, per round) | throttled periods | throttled (ms) |',
    '|---|---|---|---|---|',
    ...[0, 1].map((a) => {
      const rs = rounds.filter((r) => r.allowance === a);
      return `| vCPUs${a ? ` + ${a} (HANGAR_VM_CPU_ALLOWANCE=${a})` : ' (default)'} | ${rs.map((r) => r.bootMs).join(', ')} | ${rs.map((r) => r.loopMs).join(', ')} | ${rs.map((r) => `${r.throttledPeriods}/${r.periods}`).join(', ')} | ${rs.map((r) => r.throttledMs).join(', ')} |`;
    }),
  ].join('\n') : [
    '## The VM cgroup\'s CPU quota and a busy guest (`cpu-quota`)',
    '',
    'Written by `node dist/bench/cpu-quota-bench.js` (bench/cpu-quota-bench.ts). The tiny image on the QEMU engine, 1 vCPU, 128 MiB,',
    `accelerator ${rounds[0]?.accel ?? '?'}, launched through the daemon (confined, its own cgroup) with the CPU quota at exactly the vCPUs and at`,
    `vCPUs + 1, alternating, ${ROUNDS} rounds each. Boot: launch request → the shell prompt on the console. Loop: a`,
    `${LOOP}-step shell loop in the guest, then 5 passes of reading every file of its root disk with the page cache dropped (wall time). Throttled: the VM cgroup's periods throttled / periods, and ms throttled, over both, per round.`,
    '',
    '| CPU quota | boot (ms, median) | work (ms, median) | throttled periods | throttled (ms) |',
    '|---|---|---|---|---|',
    row(0),
    row(1),
  ].join('\n');
  const file = writeSection(IMAGE === 'tiny' ? 'cpu-quota' : 'cpu-quota-debian', md);
  process.stdout.write(`${md}\n\nhost: ${describeHost()}\nwritten to ${file}\n`);
}

await main();
