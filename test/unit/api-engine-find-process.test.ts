/**
 * How the engines find a VM process the daemon may not know the pid of
 * (findProcess) and end it (killProcess), with real processes: stand-ins
 * whose command lines look like this VM's QEMU / hangar-vmm, and a stranger
 * whose pid the pid file names (as after pid reuse) which must never be
 * reported or killed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { pino } from 'pino';
import { QemuEngine } from '../../src/engines/qemu/engine.js';
import { MicroEngine, microRunFiles } from '../../src/engines/micro/engine.js';
import { runFiles } from '../../src/engines/qemu/cmdline.js';
import { processAlive, readPidFile } from '../../src/engines/qemu/procfs.js';
import type { EngineVmConfig } from '../../src/engines/engine.js';

const IDLE = 'setInterval(() => {}, 1 << 30)';

function config(runDir: string): EngineVmConfig {
  return {
    id: 'id', name: 'vm', cpus: 1, memoryBytes: 128 << 20, boot: { kernel: '/k' }, disks: [], nics: [],
    accel: 'tcg', runDir, consoleLog: path.join(runDir, 'console.log'),
  };
}

/** Spawns an idle node process with these extra arguments; killed (by pid) when the test ends. */
function idle(t: { after(fn: () => void): void }, args: string[], script?: string): ChildProcess {
  const c = spawn(process.execPath, script ? [script, ...args] : ['-e', IDLE, '--', ...args], { stdio: 'ignore' });
  t.after(() => { if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL'); });
  return c;
}

/** Resolves once Node has seen the child end (it reaps it). */
function exited(c: ChildProcess): Promise<void> {
  return c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise((r) => c.once('exit', () => r()));
}

async function started(c: ChildProcess, mark: string): Promise<number> {
  // Wait until /proc shows the final argv (right after fork it is still ours).
  for (;;) {
    if (c.exitCode !== null || c.signalCode !== null) throw new Error(`stand-in process ended early (${c.exitCode ?? c.signalCode})`);
    try { if (fs.readFileSync(`/proc/${c.pid}/cmdline`, 'utf8').includes(mark)) return c.pid!; } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('readPidFile: one positive integer, or null', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-pidfile-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const f = path.join(dir, 'x.pid');
  assert.equal(readPidFile(f), null);
  for (const [text, want] of [['1234\n', 1234], [' 42 ', 42], ['0\n', null], ['-5', null], ['12a', null], ['', null], ['1\n2\n', null], ['99999999999', null]] as const) {
    fs.writeFileSync(f, text);
    assert.equal(readPidFile(f), want, JSON.stringify(text));
  }
});

test('qemu: findProcess trusts a pid only when its cmdline names this VM\'s QMP socket; killProcess spares strangers', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-find-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const runDir = path.join(dir, 'vms', 'a');
  fs.mkdirSync(runDir, { recursive: true });
  const files = runFiles(runDir);
  const engine = new QemuEngine({ logger: pino({ level: 'silent' }) });
  const cfg = config(runDir);

  const fake = idle(t, ['-chardev', `socket,id=qmp,path=${files.qmpSocket},server=on,wait=off`]);
  const fakePid = await started(fake, files.qmpSocket);
  // Another VM's QEMU (runDir .../a2, whose path starts like ours) and a plain stranger.
  const other = idle(t, ['-chardev', `socket,id=qmp,path=${path.join(dir, 'vms', 'a2', 'qmp.sock')},server=on`]);
  const otherPid = await started(other, 'a2');
  const stranger = idle(t, ['stranger']);
  const strangerPid = await started(stranger, 'stranger');

  assert.equal(await engine.findProcess(cfg), null, 'no pid file, no hint');
  fs.writeFileSync(files.pidFile, `${strangerPid}\n`);
  assert.equal(await engine.findProcess(cfg), null, 'a pid file naming a stranger (pid reuse)');
  fs.writeFileSync(files.pidFile, `${otherPid}\n`);
  assert.equal(await engine.findProcess(cfg), null, 'a pid file naming another VM\'s QEMU');
  assert.equal(await engine.findProcess(cfg, strangerPid), null, 'a hint naming a stranger');
  fs.writeFileSync(files.pidFile, `${fakePid}\n`);
  assert.equal(await engine.findProcess(cfg), fakePid, 'the pid file');
  assert.equal(await engine.findProcess(cfg, strangerPid), fakePid, 'a wrong hint falls back to the pid file');
  assert.equal(await engine.findProcess(cfg, fakePid), fakePid, 'the hint');

  assert.equal(await engine.killProcess(cfg, strangerPid), true, 'not ours: reported as not running here');
  assert.equal(await engine.killProcess(cfg, otherPid), true);
  assert.ok(processAlive(strangerPid) && processAlive(otherPid), 'strangers are left alone');
  const gone = exited(fake);
  assert.equal(await engine.killProcess(cfg, fakePid), true);
  await gone;
  assert.equal(fake.signalCode, 'SIGKILL');
  assert.equal(await engine.findProcess(cfg), null, 'a dead pid is no process');
});

test('micro: findProcess reads vmm.pid and checks for hangar-vmm with this VM\'s control socket', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-find-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const runDir = path.join(dir, 'vms', 'm');
  fs.mkdirSync(runDir, { recursive: true });
  const files = microRunFiles(runDir);
  assert.equal(files.pidFile, path.join(runDir, 'vmm.pid'));
  // A stand-in for dist/src/vmm/main.js: what findProcess checks is the script path and --api-sock.
  const script = path.join(dir, 'dist', 'src', 'vmm', 'main.js');
  fs.mkdirSync(path.dirname(script), { recursive: true });
  fs.writeFileSync(script, `${IDLE};\n`);
  const engine = new MicroEngine({ logger: pino({ level: 'silent' }), vmmMain: script });
  const cfg = config(runDir);

  const vmm = idle(t, ['--api-sock', files.apiSocket], script);
  const vmmPid = await started(vmm, files.apiSocket);
  const lookalike = idle(t, ['--api-sock', files.apiSocket]); // names the socket, but is no hangar-vmm
  const lookalikePid = await started(lookalike, files.apiSocket);

  assert.equal(await engine.findProcess(cfg), null);
  fs.writeFileSync(files.pidFile, `${lookalikePid}\n`);
  assert.equal(await engine.findProcess(cfg), null);
  fs.writeFileSync(files.pidFile, `${vmmPid}\n`);
  assert.equal(await engine.findProcess(cfg), vmmPid);
  assert.equal(await engine.killProcess(cfg, lookalikePid), true);
  assert.ok(processAlive(lookalikePid));
  const gone = exited(vmm);
  assert.equal(await engine.killProcess(cfg, vmmPid), true);
  await gone;
  assert.equal(await engine.findProcess(cfg), null);
});
