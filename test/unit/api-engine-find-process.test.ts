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
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { pino } from 'pino';
import { QemuEngine } from '../../src/engines/qemu/engine.js';
import { MicroEngine, microRunFiles } from '../../src/engines/micro/engine.js';
import { buildQemuArgs, runFiles } from '../../src/engines/qemu/cmdline.js';
import { processAlive, readPidFile } from '../../src/engines/base/procfs.js';
import type { EngineVmConfig } from '../../src/engines/engine.js';
import { NESTED_KVM } from '../helpers/engines.js';

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
  const engine = new QemuEngine({ logger: pino({ level: 'silent' }), kvm: async () => NESTED_KVM });
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
  const engine = new MicroEngine({ logger: pino({ level: 'silent' }), vmmMain: script, kvm: async () => NESTED_KVM });
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

/** A QMP server on `socket` that answers like a running QEMU: greeting, capabilities, query-status. */
function fakeQmp(t: { after(fn: () => void): void }, socket: string): Promise<void> {
  const server = net.createServer((c) => {
    c.write(`${JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] } })}\r\n`);
    let buf = '';
    c.on('data', (d) => {
      buf += d.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl)) as { execute: string; id?: unknown };
        buf = buf.slice(nl + 1);
        const ret = msg.execute === 'query-status' ? { running: true, status: 'running' } : {};
        c.write(`${JSON.stringify({ return: ret, id: msg.id })}\r\n`);
      }
    });
    c.on('error', () => {});
  });
  t.after(() => server.close());
  return new Promise((r) => server.listen(socket, () => r()));
}

test('qemu: a data directory with a comma: find, adopt and kill agree that the VM\'s QEMU is ours', async (t) => {
  // QEMU option values double their commas, so the argv holds "path=/x,,y/qmp.sock":
  // every check must look for what QEMU really got, or a restarted daemon kills a VM it should adopt.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar,comma-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const runDir = path.join(dir, 'vms', 'a');
  fs.mkdirSync(runDir, { recursive: true });
  const files = runFiles(runDir);
  const engine = new QemuEngine({ logger: pino({ level: 'silent' }), kvm: async () => NESTED_KVM });
  const cfg = config(runDir);

  // A stand-in started with the very argv the engine gives QEMU for this VM.
  const argv = buildQemuArgs({ ...cfg, name: 'vm' });
  assert.ok(argv.some((a) => a.includes(',,')), 'the argv holds the doubled comma');
  const fake = idle(t, argv);
  const fakePid = await started(fake, 'qmp.sock');
  fs.writeFileSync(files.pidFile, `${fakePid}\n`);
  await fakeQmp(t, files.qmpSocket);

  assert.equal(await engine.findProcess(cfg), fakePid, 'findProcess: ours');
  const handle = await engine.adopt(cfg, fakePid);
  assert.ok(handle, 'adopt: ours too (it must not give up on the process findProcess reported)');
  assert.equal(await handle.queryState(), 'running');
  const gone = exited(fake);
  await handle.kill();
  await gone;
  assert.equal(fake.signalCode, 'SIGKILL', 'the handle\'s kill reached the process');
});
