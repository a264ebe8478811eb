/**
 * The engine base both engines use: spawnVmProcess (detached, own session,
 * output to the log, exec failures handled) and the one isOurs check.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnVmProcess } from '../../src/engines/base/spawn.js';
import { findOurProcess, isOurs, killOurProcess, type VmProcessIdentity } from '../../src/engines/base/identity.js';
import { processAlive } from '../../src/engines/base/procfs.js';

function tmpdir(t: { after(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-base-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Field 6 of /proc/<pid>/stat: the session id. */
function sessionOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]);
}

test('spawnVmProcess: its own session, stdout and stderr appended to the log (0600), stdin empty', async (t) => {
  const dir = tmpdir(t);
  const log = path.join(dir, 'vm.log');
  fs.writeFileSync(log, 'earlier run\n', { mode: 0o600 });
  const script = 'process.stdout.write("out\\n"); process.stderr.write("err\\n"); let n = 0; process.stdin.on("data", (d) => n += d.length); process.stdin.on("end", () => { process.stdout.write(`stdin ${n}\\n`); setInterval(() => {}, 1000); });';
  const child = spawnVmProcess({ command: process.execPath, args: ['-e', script], logFile: log });
  t.after(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
  assert.ok(child.pid);
  while (!fs.readFileSync(log, 'utf8').includes('stdin')) await new Promise((r) => setTimeout(r, 20));
  assert.equal(sessionOf(child.pid), child.pid, 'a session leader: signals to the daemon\'s group do not reach it');
  const text = fs.readFileSync(log, 'utf8');
  assert.ok(text.startsWith('earlier run\n'), 'appended, not truncated');
  assert.match(text, /out\n/);
  assert.match(text, /err\n/);
  assert.match(text, /stdin 0\n/);
  assert.equal(fs.statSync(log).mode & 0o777, 0o600);
});

test('spawnVmProcess: a program that cannot be executed has no pid and does not throw an unhandled error', async (t) => {
  const dir = tmpdir(t);
  const child = spawnVmProcess({ command: path.join(dir, 'no-such-program'), args: [], logFile: path.join(dir, 'vm.log') });
  assert.equal(child.pid, undefined);
  // The 'error' event comes a moment later; unhandled, it would fail this test as an uncaught exception.
  await new Promise((r) => setTimeout(r, 300));
});

test('isOurs / findOurProcess / killOurProcess: one check; a pid whose argv does not match is never reported or killed', async (t) => {
  const dir = tmpdir(t);
  const mark = path.join(dir, 'vm-a.sock');
  const ours = spawnVmProcess({ command: process.execPath, args: ['-e', 'setInterval(() => {}, 1000)', '--', mark], logFile: path.join(dir, 'a.log') });
  const other = spawnVmProcess({ command: process.execPath, args: ['-e', 'setInterval(() => {}, 1000)', '--', `${mark}.other`], logFile: path.join(dir, 'b.log') });
  t.after(() => { for (const c of [ours, other]) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL'); });
  const id: VmProcessIdentity = { pidFile: path.join(dir, 'vm.pid'), matches: (argv) => argv.includes(mark) };
  for (;;) {
    try { if (fs.readFileSync(`/proc/${ours.pid}/cmdline`, 'utf8').includes(mark) && fs.readFileSync(`/proc/${other.pid}/cmdline`, 'utf8').includes(mark)) break; } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(isOurs(ours.pid!, id), true);
  assert.equal(isOurs(other.pid!, id), false, 'a look-alike whose argument only starts like ours');
  fs.writeFileSync(id.pidFile, `${other.pid}\n`);
  assert.equal(findOurProcess(id), null, 'the pid file names someone else (pid reuse)');
  assert.equal(findOurProcess(id, ours.pid), ours.pid, 'the hint');
  assert.equal(await killOurProcess(other.pid!, id), true, 'not ours: nothing to kill');
  assert.ok(processAlive(other.pid!), 'and it was left alone');
  const gone = new Promise((r) => ours.once('exit', r));
  assert.equal(await killOurProcess(ours.pid!, id), true);
  await gone;
  assert.equal(ours.signalCode, 'SIGKILL');
  assert.equal(isOurs(ours.pid!, id), false, 'a dead process is not ours');
});
