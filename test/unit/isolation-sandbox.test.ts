/**
 * The sandbox module on its own (src/engines/sandbox/): the wrapper really
 * joins the cgroup (a file standing in for cgroup.procs) with the pid that
 * then becomes the VM binary, and that binary runs with the VM's ids, no
 * capabilities and no_new_privs; secrets stay out of its environment; the
 * OOM verdict follows the cgroup's memory files; only a record root wrote
 * is trusted.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { DEFAULT_CPU_ALLOWANCE, limitsFor, loadVmSandbox, type SandboxRecord } from '../../src/engines/sandbox/sandbox.js';
import { createCgroup, procsFiles, removeCgroup } from '../../src/engines/sandbox/cgroup.js';
import { grantRead } from '../../src/engines/sandbox/access.js';

const asRoot = process.getuid?.() === 0;
const skip = asRoot ? false : 'needs root (setpriv, chown)';
const UID = 0x77000000 + 4242;

function makeSandbox(kind: 'v1' | 'v2', memoryFiles: Record<string, string>): { dir: string; procs: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-sbx-'));
  const cg = path.join(dir, 'cg');
  fs.mkdirSync(cg);
  for (const [f, text] of Object.entries(memoryFiles)) fs.writeFileSync(path.join(cg, f), text);
  const procs = path.join(cg, 'cgroup.procs');
  fs.writeFileSync(procs, '');
  const rec: SandboxRecord = {
    uid: UID, gid: UID, groups: [], runDir: dir,
    cgroup: { kind, dirs: [cg], memoryDir: cg },
    limits: { memoryBytes: 300 * 2 ** 20, pidsMax: 512, cpus: 1 },
    lent: [],
  };
  fs.writeFileSync(path.join(dir, 'sandbox.json'), JSON.stringify(rec), { mode: 0o600 });
  return { dir, procs };
}

test('the wrapper joins the cgroup, then the VM binary runs unprivileged under the same pid', { skip }, () => {
  const { dir, procs } = makeSandbox('v1', {});
  try {
    const sb = loadVmSandbox(dir);
    assert.ok(sb);
    process.env.HANGAR_TEST_API_TOKEN = 'secret-value';
    const w = sb.wrap('/bin/sh', ['-c', 'echo pid=$$; grep -E "^(Uid|Gid|Groups|CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs):" /proc/self/status; env']);
    delete process.env.HANGAR_TEST_API_TOKEN;
    assert.equal(w.cmd, '/bin/sh');
    const r = spawnSync(w.cmd, w.args, { env: w.env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const joined = fs.readFileSync(procs, 'utf8').trim();
    assert.equal(r.stdout.match(/^pid=(\d+)$/m)?.[1], joined, 'the pid written to cgroup.procs is the VM binary\'s');
    assert.match(r.stdout, new RegExp(`^Uid:\\s+${UID}\\s+${UID}\\s+${UID}\\s+${UID}$`, 'm'));
    assert.match(r.stdout, new RegExp(`^Gid:\\s+${UID}\\s`, 'm'));
    for (const cap of ['CapEff', 'CapPrm', 'CapBnd', 'CapAmb']) assert.match(r.stdout, new RegExp(`^${cap}:\\s+0000000000000000$`, 'm'), cap);
    assert.match(r.stdout, /^NoNewPrivs:\s+1$/m);
    assert.doesNotMatch(r.stdout, /secret-value/, 'a token-like variable reached the VM process');
    assert.match(r.stdout, /^PATH=/m, 'the rest of the environment is passed on');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the wrapper refuses to run the VM binary when it cannot join the cgroup', { skip }, () => {
  const { dir, procs } = makeSandbox('v1', {});
  try {
    const sb = loadVmSandbox(dir)!;
    fs.rmSync(path.dirname(procs), { recursive: true });
    const marker = path.join(dir, 'ran');
    const w = sb.wrap('/bin/sh', ['-c', `touch ${marker}`]);
    const r = spawnSync(w.cmd, w.args, { env: w.env, encoding: 'utf8' });
    assert.equal(r.status, 125);
    assert.equal(fs.existsSync(marker), false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('OOM verdict: a SIGKILL with an OOM kill in the memory files becomes crashed with the limit', { skip }, () => {
  const cases: Array<[kind: 'v1' | 'v2', files: Record<string, string>, oom: boolean]> = [
    ['v1', { 'memory.oom_control': 'oom_kill_disable 0\nunder_oom 0\noom_kill 1\n' }, true],
    ['v1', { 'memory.oom_control': 'oom_kill_disable 0\nunder_oom 0\noom_kill 0\n' }, false],
    ['v1', { 'memory.oom_control': 'oom_kill_disable 0\nunder_oom 1\n' }, true],
    ['v2', { 'memory.events': 'low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n' }, true],
    ['v2', { 'memory.events': 'low 0\nhigh 0\nmax 12\noom 0\noom_kill 0\n' }, false],
  ];
  for (const [kind, files, oom] of cases) {
    const { dir } = makeSandbox(kind, files);
    try {
      const sb = loadVmSandbox(dir)!;
      const raw = { reason: 'crashed' as const, detail: 'QEMU died from SIGKILL without a shutdown', exitCode: null, signal: 'SIGKILL' };
      const e = sb.explain(raw, false);
      if (oom) assert.deepEqual(e, { ...raw, detail: 'killed by the kernel: memory limit of 300 MiB exceeded' }, JSON.stringify(files));
      else assert.deepEqual(e, raw, JSON.stringify(files));
      // A kill the daemon asked for stays a kill, whatever the counters say.
      const asked = { reason: 'killed' as const, detail: 'killed on request', exitCode: null, signal: 'SIGKILL' };
      assert.deepEqual(sb.explain(asked, true), asked);
      // SIGSYS is the seccomp filter's doing, and says so.
      const sys = sb.explain({ reason: 'killed', detail: 'hangar-vmm was killed by SIGSYS', exitCode: null, signal: 'SIGSYS' }, false);
      assert.equal(sys.reason, 'crashed');
      assert.match(sys.detail ?? '', /seccomp filter/);
      // A clean power-off is never an OOM.
      const off = { reason: 'poweroff' as const, exitCode: 0, signal: null };
      assert.deepEqual(sb.explain(off, false), off);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('only a sandbox record root wrote is trusted', { skip }, () => {
  const { dir } = makeSandbox('v1', {});
  try {
    assert.ok(loadVmSandbox(dir));
    fs.chownSync(path.join(dir, 'sandbox.json'), UID, UID);
    assert.equal(loadVmSandbox(dir), null, 'a record the VM could have written');
    fs.chownSync(path.join(dir, 'sandbox.json'), 0, 0);
    fs.writeFileSync(path.join(dir, 'sandbox.json'), JSON.stringify({ runDir: '/elsewhere', cgroup: { dirs: [] }, lent: [] }));
    assert.equal(loadVmSandbox(dir), null, 'a record for another runDir');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** A folder tree standing in for a cgroup mount (plain files take the writes). */
function fakeMount(): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-cgfake-'));
  fs.writeFileSync(path.join(root, 'cgroup.subtree_control'), 'cpu\n');
  return root;
}

test('cgroup v2: controllers enabled down to the parent, limits written in the leaf, removed again', () => {
  const root = fakeMount();
  try {
    const parent = path.join(root, 'hangar.slice');
    const set = createCgroup({ kind: 'v2', root, parents: [parent] }, 'vm-abc', { memoryBytes: 512 * 2 ** 20, pidsMax: 100, cpus: 2 });
    const leaf = path.join(parent, 'vm-abc');
    assert.deepEqual(set, { kind: 'v2', dirs: [leaf], memoryDir: leaf });
    assert.equal(fs.readFileSync(path.join(root, 'cgroup.subtree_control'), 'utf8'), '+memory +pids', 'only the missing controllers');
    assert.equal(fs.readFileSync(path.join(parent, 'cgroup.subtree_control'), 'utf8'), '+memory +pids +cpu');
    const r = (f: string): string => fs.readFileSync(path.join(leaf, f), 'utf8');
    assert.equal(r('memory.max'), String(512 * 2 ** 20));
    assert.equal(r('pids.max'), '100');
    assert.equal(r('cpu.max'), '200000 100000');
    assert.deepEqual(procsFiles(set), [path.join(leaf, 'cgroup.procs')]);
    // cgroupfs folders hold only kernel files; here the written ones must go first.
    for (const f of fs.readdirSync(leaf)) fs.rmSync(path.join(leaf, f));
    assert.equal(removeCgroup(set), true);
    assert.equal(fs.existsSync(leaf), false);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('cgroup v1: one folder per controller, each with its own limit files', () => {
  const mounts = ['memory', 'pids', 'cpu'].map((c) => path.join(fakeMount(), 'daemon', 'hangar'));
  try {
    const set = createCgroup({ kind: 'v1', parents: mounts }, 'vm-abc', { memoryBytes: 300 * 2 ** 20, pidsMax: 64, cpus: 1.5 });
    const [mem, pids, cpu] = set.dirs as [string, string, string];
    assert.equal(set.memoryDir, mem);
    assert.equal(fs.readFileSync(path.join(mem, 'memory.limit_in_bytes'), 'utf8'), String(300 * 2 ** 20));
    assert.equal(fs.readFileSync(path.join(pids, 'pids.max'), 'utf8'), '64');
    assert.equal(fs.readFileSync(path.join(cpu, 'cpu.cfs_period_us'), 'utf8'), '100000');
    assert.equal(fs.readFileSync(path.join(cpu, 'cpu.cfs_quota_us'), 'utf8'), '150000');
    assert.equal(procsFiles(set).length, 3);
  } finally {
    for (const m of mounts) fs.rmSync(path.dirname(path.dirname(m)), { recursive: true, force: true });
  }
});

test('CPU quota: the vCPUs by default; HANGAR_VM_CPU_ALLOWANCE adds CPUs for the VM process\'s own threads', () => {
  assert.equal(DEFAULT_CPU_ALLOWANCE, 0);
  assert.equal(limitsFor({ engine: 'qemu', accel: 'tcg', cpus: 1, memoryBytes: 2 ** 27 }).cpus, 1);
  assert.equal(limitsFor({ engine: 'micro', accel: 'kvm', cpus: 4, memoryBytes: 2 ** 27 }).cpus, 4);
  process.env.HANGAR_VM_CPU_ALLOWANCE = '1';
  try {
    assert.equal(limitsFor({ engine: 'qemu', accel: 'kvm', cpus: 2, memoryBytes: 2 ** 27 }).cpus, 3, 'one CPU more');
    process.env.HANGAR_VM_CPU_ALLOWANCE = '-1';
    assert.throws(() => limitsFor({ engine: 'qemu', accel: 'kvm', cpus: 2, memoryBytes: 2 ** 27 }), /HANGAR_VM_CPU_ALLOWANCE/);
  } finally {
    delete process.env.HANGAR_VM_CPU_ALLOWANCE;
  }
});

test('a cgroup name that is not a plain name is refused', () => {
  assert.throws(() => createCgroup({ kind: 'v1', parents: ['/nonexistent'] }, '../escape', { memoryBytes: 1, pidsMax: 16, cpus: 1 }), /not a plain name/);
});

test('file access: folders and images inside the daemon\'s trees are opened to the group; nothing outside is changed', { skip }, () => {
  const top = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-acc-'));
  try {
    const data = path.join(top, 'data');
    const img = path.join(data, 'images', 'x');
    fs.mkdirSync(img, { recursive: true, mode: 0o700 });
    fs.chmodSync(data, 0o700);
    const kernel = path.join(img, 'vmlinuz');
    fs.writeFileSync(kernel, 'k', { mode: 0o600 });
    const outside = path.join(top, 'private');
    fs.mkdirSync(outside, { mode: 0o700 });
    const foreign = path.join(outside, 'vmlinuz');
    fs.writeFileSync(foreign, 'k', { mode: 0o600 });
    fs.chmodSync(top, 0o700);
    const GROUP = 4321;
    const ctx = { groupGid: GROUP, vmGid: UID, trees: [data] };
    // `top` is outside the trees and others cannot pass it: refused, and left as it was.
    assert.throws(() => grantRead(kernel, ctx), /cannot pass through/);
    assert.equal(fs.statSync(top).mode & 0o777, 0o700);
    fs.chmodSync(top, 0o711);
    grantRead(kernel, ctx);
    for (const d of [data, path.join(data, 'images'), img]) {
      const st = fs.statSync(d);
      assert.equal(st.gid, GROUP, d);
      assert.equal(st.mode & 0o777, 0o710, `${d}: search only, no listing`);
    }
    const k = fs.statSync(kernel);
    assert.deepEqual([k.uid, k.gid, k.mode & 0o777], [0, GROUP, 0o640]);
    // A file outside the trees is never re-permissioned.
    assert.throws(() => grantRead(foreign, { ...ctx, trees: [data] }), /cannot pass through|cannot read/);
    assert.deepEqual([fs.statSync(foreign).gid, fs.statSync(foreign).mode & 0o777], [0, 0o600]);
    assert.equal(fs.statSync(outside).mode & 0o777, 0o700);
  } finally {
    fs.rmSync(top, { recursive: true, force: true });
  }
});
