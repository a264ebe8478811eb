/**
 * Bounded console logs with a real daemon and a real QEMU guest (the tiny
 * image), the log capped at 2 files of 64 KiB: a guest printing far more
 * keeps both files within the cap and `GET /logs` ends with its newest
 * output; output the guest prints while the daemon is stopped is in the log
 * afterwards; the log writer outlives the daemon, ends with the VM, and its
 * death does not stop the guest.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startDaemon, waitOperation, ConsoleSession, type TestDaemon } from '../helpers/daemon.js';
import { TINY_PROMPT } from '../../src/host/images/tiny.js';

const CAP = 64 * 1024;
let d: TestDaemon;

before(async () => { d = await startDaemon({ env: { HANGAR_CONSOLE_LOG_SIZE: '64K', HANGAR_CONSOLE_LOG_FILES: '2' } }); });
after(async () => { await d?.cleanup(); });

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

/** The pid of the log writer for this log file: the process whose arguments name it (this test's own data directory). */
function writerPid(logFile: string): number | null {
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
      if (argv[0]?.endsWith('hangar-conlog') && argv[1] === logFile) return Number(e);
    } catch { /* gone */ }
  }
  return null;
}

async function until(what: string, ok: () => boolean, ms = 120_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function logSizes(dir: string): Record<string, number> {
  return Object.fromEntries(fs.readdirSync(dir).filter((f) => f.startsWith('console.log')).map((f) => [f, fs.statSync(path.join(dir, f)).size]));
}

test('qemu: the console log stays within its cap, keeps the newest output, and is written while the daemon is down', { timeout: 600_000 }, async () => {
  const op = await waitOperation(d, await d.request('POST', '/1.0/vms', { name: 'chatty', image: 'tiny', memory: '128M', engine: 'qemu' }));
  assert.equal(op.status, 'success', JSON.stringify(op));
  const runDir = path.join(d.dataDir, 'vms', 'chatty');
  const logFile = path.join(runDir, 'console.log');
  let con = await ConsoleSession.open(d, 'chatty');
  await con.waitForPrompt(TINY_PROMPT);

  // About 290 KB of numbered lines: more than four times the whole cap.
  await con.run('seq -w 1 40000 | sed "s/^/chatty-line-/"', 300_000);
  const sizes = logSizes(runDir);
  assert.deepEqual(Object.keys(sizes).sort(), ['console.log', 'console.log.1']);
  for (const [f, n] of Object.entries(sizes)) assert.ok(n <= CAP, `${f} is ${n} bytes, over the ${CAP}-byte cap`);
  const logs = await d.request('GET', '/1.0/vms/chatty/logs');
  assert.equal(logs.status, 200);
  const text = String(logs.body);
  assert.match(text, /chatty-line-40000\r?\n/, 'the newest output is there');
  assert.doesNotMatch(text, /chatty-line-00001\r?\n/, 'the oldest output was rotated away');
  // Across both files: more than one file's worth comes back, in order.
  assert.ok(text.length > CAP, `logs returned ${text.length} bytes`);
  // Across both files, in order, no gap at the boundary. (QEMU logs a byte again when its console
  // socket was momentarily full and it retries that byte, so a line may carry a doubled character:
  // such a line is not matched below, hence the allowance of 10%; a lost rotated file would be a third.)
  const nums = [...text.matchAll(/chatty-line-(\d{5})\r?\n/g)].map((m) => Number(m[1]));
  assert.equal(nums[nums.length - 1], 40000);
  for (let i = 1; i < nums.length; i++) assert.ok(nums[i]! > nums[i - 1]!, `line ${nums[i]} after ${nums[i - 1]}`);
  const span = 40000 - nums[0]! + 1;
  assert.ok(span > 4000, `the log holds lines ${nums[0]}..40000`);
  assert.ok(nums.length >= span * 0.9, `${span - nums.length} of ${span} lines missing`);

  // The writer is its own process: it outlives the daemon, and the guest's output while the daemon is down is kept.
  const writer = writerPid(logFile);
  assert.ok(writer !== null, 'a log writer runs for the VM');
  // Run (not just sent): the shell has taken the line before the daemon goes, so no input is in flight.
  await con.run('(sleep 15; echo "while-down-$((6*7))") & true', 120_000);
  await con.close();
  await d.stop();
  assert.ok(alive(writer), 'the log writer survives the daemon');
  await until('the guest\'s output reaching the log with the daemon stopped', () => fs.readFileSync(logFile, 'utf8').includes('while-down-42'));
  await d.restart();
  const after = await d.request('GET', '/1.0/vms/chatty/logs?tail=50');
  assert.match(String(after.body), /while-down-42/);

  // Its death does not block the guest: QEMU's log writes fail and the console still answers.
  process.kill(writer, 'SIGKILL');
  await until('the writer to end', () => !alive(writer), 10_000);
  con = await ConsoleSession.open(d, 'chatty');
  await con.waitForPrompt(TINY_PROMPT);
  await con.run('seq 1 20000 > /dev/console', 300_000);
  assert.match(await con.run('echo "still-$((6*7))"'), /still-42/);
  await con.close();
});

test('qemu: the log writer ends when the VM does', { timeout: 300_000 }, async () => {
  const op = await waitOperation(d, await d.request('POST', '/1.0/vms', { name: 'brief', image: 'tiny', memory: '128M', engine: 'qemu' }));
  assert.equal(op.status, 'success', JSON.stringify(op));
  const logFile = path.join(d.dataDir, 'vms', 'brief', 'console.log');
  const writer = writerPid(logFile);
  assert.ok(writer !== null && alive(writer));
  const stop = await waitOperation(d, await d.request('PUT', '/1.0/vms/brief/state', { action: 'stop', force: true }));
  assert.equal(stop.status, 'success', JSON.stringify(stop));
  await until('the writer to end with its VM', () => !alive(writer), 30_000);
});
