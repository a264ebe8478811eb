/**
 * VM process isolation, through the real daemon: a VM of each engine runs
 * as its own unprivileged uid, with no capabilities, no_new_privs, a seccomp
 * filter and a cgroup of its own with the limits the daemon set; stopping it
 * removes the cgroup and gives the uid back. A guest that fills its memory
 * past the cgroup's limit is killed alone and reported as crashed with the
 * reason, while the daemon and another VM carry on.
 *
 * The memory test runs the tiny QEMU guest on a second daemon that gives VMs
 * no allowance above guest RAM (HANGAR_VM_MEMORY_OVERHEAD_MIB=0): QEMU boots
 * within the limit, and the guest writing a large file into a tmpfs makes
 * QEMU back more guest pages than fit beside its own memory.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startDaemon, waitOperation, ConsoleSession, type TestDaemon } from '../helpers/daemon.js';
import { runHangar, expectOk } from '../helpers/cli.js';
import { buildGuest, kvmUsable } from '../helpers/vmm.js';
import { TINY_PROMPT } from '../../src/host/images/tiny.js';
import { CLAIM_DIR } from '../../src/engines/sandbox/identity.js';
import { DEFAULT_OVERHEAD_MIB } from '../../src/engines/sandbox/sandbox.js';

const asRoot = process.getuid?.() === 0;
const skip = asRoot ? false : 'needs root (the daemon confines VMs only as root)';
/** Guest RAM of the QEMU VM that fills its memory (also its whole limit), and how much it writes. */
const OOM_GUEST_MIB = 384;
const OOM_FILL_MIB = 320;

let d: TestDaemon;

before(async () => {
  if (!asRoot) return;
  d = await startDaemon();
});

/** Force-stops every VM of a daemon through it (so it cleans up their cgroups), then ends the daemon. */
async function shutDown(on: TestDaemon | undefined): Promise<void> {
  if (!on) return;
  try {
    const list = (await on.request('GET', '/1.0/vms')).body.metadata as Array<{ name: string; state: string } | string>;
    for (const item of list ?? []) {
      const name = typeof item === 'string' ? item.split('/').pop()! : item.name;
      if ((await vm(name, on))?.state === 'running') await stop(name, on).catch(() => {});
    }
  } catch { /* the daemon is gone: its cleanup below still ends the processes */ }
  await on.cleanup();
}

after(async () => {
  await shutDown(d);
});

interface ProcStatus { uid: number[]; capEff: string; capPrm: string; capBnd: string; capAmb: string; noNewPrivs: string; seccomp: string }

function procStatus(pid: number): ProcStatus {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const f = (k: string): string => {
    const m = new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(s);
    assert.ok(m, `/proc/${pid}/status has no ${k}`);
    return m[1]!.trim();
  };
  return { uid: f('Uid').split(/\s+/).map(Number), capEff: f('CapEff'), capPrm: f('CapPrm'), capBnd: f('CapBnd'), capAmb: f('CapAmb'), noNewPrivs: f('NoNewPrivs'), seccomp: f('Seccomp') };
}

/** controller list → cgroup path, from /proc/<pid>/cgroup. */
function procCgroups(pid: number | 'self'): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n')) {
    const [, ctrls, p] = line.split(':');
    m.set(ctrls!, p!);
  }
  return m;
}

/** Where a controller's (or v2's) folder for `cgPath` is mounted. */
function cgroupDir(ctrl: string, cgPath: string): string {
  for (const line of fs.readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, dir, type, opts] = line.split(' ');
    if (ctrl === '' && type === 'cgroup2') return path.join(dir!, cgPath);
    if (type === 'cgroup' && opts!.split(',').includes(ctrl)) return path.join(dir!, cgPath);
  }
  throw new Error(`no mount for ${ctrl}`);
}

const v2 = (() => {
  const v1Mem = fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[2] === 'cgroup' && l.split(' ')[3]!.split(',').includes('memory'));
  return !v1Mem;
})();

/** The VM's cgroup folders (per controller on v1), checked to be its own and named after the VM. */
function vmCgroupDirs(pid: number, vmId: string): { memory: string; pids: string; cpu: string } {
  const mine = procCgroups('self');
  const its = procCgroups(pid);
  const pick = (ctrl: string): string => {
    if (v2) return its.get('')!;
    for (const [k, v] of its) if (k.split(',').includes(ctrl)) return v;
    throw new Error(`VM process has no ${ctrl} cgroup`);
  };
  const out: Record<string, string> = {};
  for (const ctrl of ['memory', 'pids', 'cpu']) {
    const p = pick(ctrl);
    assert.ok(p.endsWith(`/vm-${vmId}`), `${ctrl} cgroup ${p} is not the VM's own`);
    const own = v2 ? mine.get('') : [...mine].find(([k]) => k.split(',').includes(ctrl))?.[1];
    assert.notEqual(p, own, `the VM shares the daemon's ${ctrl} cgroup`);
    out[ctrl] = cgroupDir(v2 ? '' : ctrl, p);
  }
  return out as { memory: string; pids: string; cpu: string };
}

const read = (f: string): string => fs.readFileSync(f, 'utf8').trim();

function assertConfined(pid: number, what: string): void {
  const st = procStatus(pid);
  assert.ok(st.uid.every((u) => u !== 0), `${what}: runs as uid ${st.uid.join('/')}`);
  assert.equal(st.capEff, '0000000000000000', `${what}: CapEff`);
  assert.equal(st.capPrm, '0000000000000000', `${what}: CapPrm`);
  assert.equal(st.capBnd, '0000000000000000', `${what}: CapBnd`);
  assert.equal(st.capAmb, '0000000000000000', `${what}: CapAmb`);
  assert.equal(st.noNewPrivs, '1', `${what}: NoNewPrivs`);
  assert.equal(st.seccomp, '2', `${what}: Seccomp (2 = filter)`);
}

/** The ring-3 echo test guest as the image "echo" on the main daemon (imported once). */
async function ensureEchoImage(): Promise<void> {
  if ((await d.request('GET', '/1.0/images/echo')).status === 200) return;
  expectOk(await runHangar(['image', 'import', 'echo', '--kernel', buildGuest('echo')], { env: d.env, timeoutMs: 60_000 }), 'image import');
}

async function vm(name: string, on = d): Promise<any> {
  return (await on.request('GET', `/1.0/vms/${name}`)).body.metadata;
}

async function launch(body: Record<string, unknown>, on = d): Promise<any> {
  const op = await waitOperation(on, await on.request('POST', '/1.0/vms', body));
  assert.equal(op.status, 'success', JSON.stringify(op));
  const v = await vm(String(body.name), on);
  assert.equal(v.state, 'running');
  return v;
}

async function stop(name: string, on = d): Promise<void> {
  const op = await waitOperation(on, await on.request('PUT', `/1.0/vms/${name}/state`, { action: 'stop', force: true }));
  assert.equal(op.status, 'success', JSON.stringify(op));
}

async function waitForState(name: string, state: string, limitMs: number, on = d): Promise<any> {
  const end = Date.now() + limitMs;
  let v = await vm(name, on);
  while (v.state !== state && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 250));
    v = await vm(name, on);
  }
  assert.equal(v.state, state, JSON.stringify(v));
  return v;
}

function assertCleanedUp(dirs: string[], uid: number, runDir: string): void {
  for (const dir of dirs) assert.equal(fs.existsSync(dir), false, `cgroup ${dir} was left behind`);
  assert.equal(fs.existsSync(path.join(CLAIM_DIR, String(uid))), false, `uid ${uid} is still claimed`);
  const st = fs.statSync(runDir);
  assert.equal(st.uid, 0);
  assert.equal(st.mode & 0o7777, 0o700, 'the runDir is the daemon\'s alone again');
}

test('a QEMU VM runs unprivileged, filtered, in its own cgroup with its limits; stop cleans up', { skip, timeout: 300_000 }, async () => {
  const v = await launch({ name: 'iso-q', image: 'tiny', engine: 'qemu', memory: '128M', cpus: 1 });
  const pid: number = v.runtime.pid;
  assert.match(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]!, /qemu-system-x86_64$/, 'the process is QEMU itself, not a wrapper');
  assertConfined(pid, 'qemu');
  const uid = procStatus(pid).uid[0]!;
  const dirs = vmCgroupDirs(pid, v.id);
  // Guest RAM plus the engine's default allowance for the accelerator the daemon chose.
  const limit = (128 + DEFAULT_OVERHEAD_MIB[v.runtime.accel === 'kvm' ? 'qemu-kvm' : 'qemu-tcg']) * 2 ** 20;
  if (v2) {
    assert.equal(Number(read(path.join(dirs.memory, 'memory.max'))), limit);
    assert.equal(read(path.join(dirs.cpu, 'cpu.max')), '100000 100000');
    assert.equal(read(path.join(dirs.pids, 'pids.max')), '512');
  } else {
    assert.equal(Number(read(path.join(dirs.memory, 'memory.limit_in_bytes'))), limit);
    assert.equal(read(path.join(dirs.cpu, 'cpu.cfs_quota_us')), '100000');
    assert.equal(read(path.join(dirs.pids, 'pids.max')), '512');
  }
  // The guest still works: the console answers.
  const con = await ConsoleSession.open(d, 'iso-q');
  await con.waitForPrompt(TINY_PROMPT);
  assert.match(await con.run('echo confined-$((6*7))'), /confined-42/);
  await con.close();

  await stop('iso-q');
  assertCleanedUp(Object.values(dirs), uid, path.join(d.dataDir, 'vms', 'iso-q'));
});

test('a micro VM (hangar-vmm) runs unprivileged, seccomp-filtered, in its own cgroup', { skip: skip || (kvmUsable ? false : 'needs /dev/kvm'), timeout: 300_000 }, async () => {
  await ensureEchoImage();
  const env = { ...d.env };
  const v = await launch({ name: 'iso-m', image: 'echo', engine: 'micro', memory: '128M', cpus: 2 });
  const pid: number = v.runtime.pid;
  const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  assert.ok(argv.some((a) => a.endsWith(path.join('vmm', 'main.js'))), `the process is hangar-vmm itself: ${argv.join(' ')}`);
  assertConfined(pid, 'hangar-vmm');
  const uid = procStatus(pid).uid[0]!;
  const dirs = vmCgroupDirs(pid, v.id);
  assert.equal(read(path.join(dirs.cpu, v2 ? 'cpu.max' : 'cpu.cfs_quota_us')), v2 ? '200000 100000' : '200000', 'CPU quota = 2 vCPUs');
  assert.equal(Number(read(path.join(dirs.memory, v2 ? 'memory.max' : 'memory.limit_in_bytes'))), (128 + DEFAULT_OVERHEAD_MIB.micro) * 2 ** 20);
  // The guest runs: its echo comes back through the console (vCPU threads under the filter).
  const r = expectOk(await runHangar(['console', 'iso-m', '--until', 'echo: confined', '--timeout', '30'], { env, input: 'confined\n', timeoutMs: 60_000 }), 'console');
  assert.match(r.stdout, /echo: confined/);
  // Pause and resume still work with the filter on.
  for (const action of ['pause', 'resume']) {
    const op = await waitOperation(d, await d.request('PUT', '/1.0/vms/iso-m/state', { action }));
    assert.equal(op.status, 'success', JSON.stringify(op));
  }
  assert.equal((await vm('iso-m')).state, 'running');
  assert.ok(fs.existsSync(`/proc/${pid}`), 'hangar-vmm survived pause/resume under seccomp');

  // A restarted daemon adopts the VM and still cleans up after it when it ends.
  await d.kill9();
  await d.restart();
  assert.equal((await vm('iso-m')).state, 'running');
  assert.equal((await vm('iso-m')).runtime.pid, pid);
  await stop('iso-m');
  assertCleanedUp(Object.values(dirs), uid, path.join(d.dataDir, 'vms', 'iso-m'));
});

test('a VM that died while the daemon was down leaves no cgroup once the daemon is back', { skip: skip || (kvmUsable ? false : 'needs /dev/kvm'), timeout: 300_000 }, async () => {
  await ensureEchoImage();
  const v = await launch({ name: 'iso-d', image: 'echo', engine: 'micro', memory: '128M', cpus: 1 });
  const pid: number = v.runtime.pid;
  const uid = procStatus(pid).uid[0]!;
  const dirs = vmCgroupDirs(pid, v.id);
  await d.kill9();
  process.kill(pid, 'SIGKILL');
  while (fs.existsSync(`/proc/${pid}`)) await new Promise((r) => setTimeout(r, 50));
  assert.ok(Object.values(dirs).every((dir) => fs.existsSync(dir)), 'with no daemon, nobody has cleaned up yet');
  await d.restart();
  const after = await vm('iso-d');
  assert.notEqual(after.state, 'running');
  assertCleanedUp(Object.values(dirs), uid, path.join(d.dataDir, 'vms', 'iso-d'));
});

test('a guest that fills its memory past the cgroup limit is killed alone and reported as crashed', { skip, timeout: 400_000 }, async (t) => {
  const tight = await startDaemon({ env: { HANGAR_VM_MEMORY_OVERHEAD_MIB: '0' } });
  t.after(() => shutDown(tight));
  // A bystander on the same daemon that must be unaffected (its guest uses little of its RAM).
  const other = await launch({ name: 'iso-other', image: 'tiny', engine: 'qemu', memory: `${OOM_GUEST_MIB}M`, cpus: 1 }, tight);
  const v = await launch({ name: 'iso-oom', image: 'tiny', engine: 'qemu', memory: `${OOM_GUEST_MIB}M`, cpus: 1 }, tight);
  const pid: number = v.runtime.pid;
  const dirs = vmCgroupDirs(pid, v.id);
  const con = await ConsoleSession.open(tight, 'iso-oom');
  await con.waitForPrompt(TINY_PROMPT);
  const rss = /VmRSS:\s*(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  t.diagnostic(`QEMU RSS after boot: ${Math.round(Number(rss) / 1024)} MiB; limit ${OOM_GUEST_MIB} MiB`);
  // A tmpfs as big as guest RAM, filled: every page the guest writes is a page QEMU must back.
  con.send(`mkdir -p /fill && mount -t tmpfs -o size=${OOM_GUEST_MIB}m fill /fill && dd if=/dev/zero of=/fill/f bs=1M count=${OOM_FILL_MIB}\n`);
  const crashed = await waitForState('iso-oom', 'crashed', 240_000, tight);
  assert.equal(crashed.runtime.lastExit.reason, 'crashed');
  assert.match(crashed.runtime.lastExit.detail, new RegExp(`killed by the kernel: memory limit of ${OOM_GUEST_MIB} MiB exceeded`));
  await con.close();
  for (const dir of Object.values(dirs)) assert.equal(fs.existsSync(dir), false, `cgroup ${dir} was left behind`);

  // The daemon answers and the other VM still runs, its console alive.
  assert.equal((await tight.request('GET', '/1.0')).status, 200);
  assert.equal((await vm('iso-other', tight)).state, 'running');
  assert.ok(fs.existsSync(`/proc/${other.runtime.pid}`));
  const c2 = await ConsoleSession.open(tight, 'iso-other');
  await c2.waitForPrompt(TINY_PROMPT);
  assert.match(await c2.run('echo still-$((1+1))'), /still-2/);
  await c2.close();
  await stop('iso-other', tight);
});
