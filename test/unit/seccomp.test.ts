/**
 * hangar-vmm's seccomp filter (src/kvm/seccomp.ts): the BPF program, checked
 * with a reference interpreter, and the real thing in a child process: once
 * installed, every thread (also one started before) is filtered, allowed
 * calls work, and a call off the list kills the process with SIGSYS.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { buildFilter, runFilter, syscallNumbers, VMM_SYSCALLS, X86_64_SYSCALLS, SECCOMP_RET_ALLOW, SECCOMP_RET_KILL_PROCESS } from '../../src/kvm/seccomp.js';
import { seccompModeFromEnv } from '../../src/kvm/seccomp-mode.js';
import { projectRoot } from '../../src/common/paths.js';

const prog = buildFilter(syscallNumbers(VMM_SYSCALLS));
const AUDIT_ARCH_I386 = 0x40000003;

test('the filter allows exactly the listed calls on x86-64', () => {
  const allowed = new Set(syscallNumbers(VMM_SYSCALLS));
  for (let nr = 0; nr < 460; nr++) {
    if (nr === X86_64_SYSCALLS.clone || nr === X86_64_SYSCALLS.clone3) continue;
    assert.equal(runFilter(prog, nr), allowed.has(nr) ? SECCOMP_RET_ALLOW : SECCOMP_RET_KILL_PROCESS, `call ${nr}`);
  }
  assert.ok(allowed.size > 40, 'a real list, not an empty one');
});

test('calls that would let a compromised VMM escape are not on the list', () => {
  const forbidden = ['execve', 'execveat', 'ptrace', 'process_vm_writev', 'process_vm_readv', 'init_module', 'finit_module', 'mount',
    'setuid', 'setgid', 'socket', 'connect', 'bind', 'fork', 'vfork', 'kexec_load', 'bpf', 'perf_event_open', 'userfaultfd', 'keyctl', 'unshare', 'setns', 'chmod', 'chown'];
  for (const name of forbidden) assert.ok(!VMM_SYSCALLS.includes(name), `${name} is allowed`);
  for (const nr of [59, 322, 101, 310, 175, 313, 165, 105, 41, 42, 57, 58, 246, 321, 298, 323, 250, 272, 308]) {
    assert.equal(runFilter(prog, nr), SECCOMP_RET_KILL_PROCESS, `call ${nr}`);
  }
});

test('clone makes threads only; clone3 answers ENOSYS so the C library falls back to clone', () => {
  const CLONE_THREAD = 0x10000;
  const threadFlags = 0x3d0f00; // what glibc's pthread_create passes: VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|...
  assert.equal(runFilter(prog, X86_64_SYSCALLS.clone!, undefined, threadFlags), SECCOMP_RET_ALLOW);
  assert.equal(runFilter(prog, X86_64_SYSCALLS.clone!, undefined, threadFlags & ~CLONE_THREAD), SECCOMP_RET_KILL_PROCESS, 'a new process');
  assert.equal(runFilter(prog, X86_64_SYSCALLS.clone!, undefined, 17 /* SIGCHLD: fork() */), SECCOMP_RET_KILL_PROCESS);
  assert.equal(runFilter(prog, X86_64_SYSCALLS.clone3!), 0x00050000 | 38);
});

test('another architecture or an x32 call number is killed, even for an allowed number', () => {
  assert.equal(runFilter(prog, X86_64_SYSCALLS.read!, AUDIT_ARCH_I386), SECCOMP_RET_KILL_PROCESS);
  assert.equal(runFilter(prog, 0x40000000 | X86_64_SYSCALLS.read!), SECCOMP_RET_KILL_PROCESS);
  assert.equal(runFilter(prog, X86_64_SYSCALLS.read!), SECCOMP_RET_ALLOW);
});

test('unknown names and oversize lists are refused', () => {
  assert.throws(() => syscallNumbers(['read', 'no_such_call']), /unknown x86-64 system call "no_such_call"/);
  assert.throws(() => buildFilter(Array.from({ length: 300 }, (_, i) => i)), /too many/);
});

test('HANGAR_VMM_SECCOMP selects the mode; nonsense is an error', () => {
  assert.equal(seccompModeFromEnv({}), 'enforce');
  assert.equal(seccompModeFromEnv({ HANGAR_VMM_SECCOMP: '1' }), 'enforce');
  assert.equal(seccompModeFromEnv({ HANGAR_VMM_SECCOMP: '0' }), 'off');
  assert.equal(seccompModeFromEnv({ HANGAR_VMM_SECCOMP: 'trace' }), 'trace');
  assert.throws(() => seccompModeFromEnv({ HANGAR_VMM_SECCOMP: 'yes' }), /must be 1, 0 or trace/);
});

/** Runs `body` in a fresh Node process after a worker thread has started and the filter is on. */
function filteredChild(body: string): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
  const mod = path.join(projectRoot(), 'dist', 'src', 'kvm', 'seccomp.js');
  const script = `
    import fs from 'node:fs';
    import { Worker } from 'node:worker_threads';
    const { installSeccomp } = await import(${JSON.stringify(mod)});
    const w = new Worker('setInterval(() => {}, 1000)', { eval: true });
    await new Promise((r) => w.once('online', r));
    installSeccomp('enforce');
    ${body}
    await w.terminate();
  `;
  return spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
}

test('installed for real: every thread is filtered and allowed work goes on', () => {
  const r = filteredChild(`
    const tasks = fs.readdirSync('/proc/self/task');
    const modes = tasks.map((t) => /Seccomp:\\s*(\\d)/.exec(fs.readFileSync('/proc/self/task/' + t + '/status', 'utf8'))[1]);
    // A thread started under the filter (clone3 → ENOSYS → clone with CLONE_THREAD) works too.
    const late = new Worker('import { parentPort } from "node:worker_threads"; parentPort.postMessage(6 * 7);', { eval: true });
    const answer = await new Promise((r) => late.once('message', r));
    process.stdout.write(JSON.stringify({ threads: tasks.length, modes, answer }));
  `);
  assert.equal(r.status, 0, `child failed: ${r.stderr}`);
  const out = JSON.parse(r.stdout) as { threads: number; modes: string[]; answer: number };
  assert.equal(out.answer, 42, 'a worker started after the filter ran');
  assert.ok(out.threads > 2, 'the child had several threads');
  assert.deepEqual([...new Set(out.modes)], ['2'], 'every thread (including the worker started before) is filtered');
});

test('installed for real: a call off the list kills the process with SIGSYS', () => {
  const r = filteredChild(`fs.mkdirSync('/tmp/hangar-seccomp-${process.pid}'); process.stdout.write('survived');`);
  assert.equal(r.signal, 'SIGSYS', `status ${r.status}, stderr ${r.stderr}`);
  assert.doesNotMatch(r.stdout, /survived/);
  assert.equal(fs.existsSync(`/tmp/hangar-seccomp-${process.pid}`), false);
});

test('installed for real: starting a program is impossible (the process dies, nothing runs)', () => {
  const marker = `/tmp/hangar-seccomp-exec-${process.pid}`;
  const r = filteredChild(`
    const { spawnSync } = await import('node:child_process');
    spawnSync('/bin/sh', ['-c', 'echo ran > ${marker}']);
    process.stdout.write('survived');
  `);
  assert.equal(r.signal, 'SIGSYS', `status ${r.status}, stderr ${r.stderr}`);
  assert.equal(fs.existsSync(marker), false, 'the program ran');
});
