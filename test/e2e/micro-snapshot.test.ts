/**
 * The micro engine's snapshot hooks, for the daemon to build on: a
 * MicroVmHandle writes a snapshot of its VM (pausing it, and resuming it
 * unless told to leave it paused), and MicroEngine.restore() starts a fresh
 * hangar-vmm in a new runDir that carries on from the snapshot.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { EngineVmConfig } from '../../src/engines/engine.js';
import { MicroEngine } from '../../src/engines/micro/index.js';
import { createLogger } from '../../src/common/log.js';
import { probeKvm } from '../../src/kvm/probe.js';
import { buildGuest, guestTestsUnavailable } from '../helpers/vmm.js';

const skip = guestTestsUnavailable() ?? false;
const logger = createLogger('test', 'silent');
const pids = new Set<number>();
const dirs: string[] = [];
after(() => {
  for (const pid of pids) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function vmConfig(name: string, kernel: string): EngineVmConfig {
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), `hangar-micro-snap-${name}-`));
  dirs.push(runDir);
  return {
    id: `id-${name}`, name, cpus: 1, memoryBytes: 32 * 2 ** 20, boot: { kernel, cmdline: 'console=ttyS0' },
    disks: [], nics: [], accel: 'kvm', runDir, consoleLog: path.join(runDir, 'console.log'),
  };
}

async function logShows(file: string, re: RegExp, ms = 15_000): Promise<string> {
  const end = Date.now() + ms;
  for (;;) {
    const text = fs.existsSync(file) ? fs.readFileSync(file, 'latin1') : '';
    if (re.test(text)) return text;
    if (Date.now() > end) throw new Error(`${file} never showed ${re}; saw ${text.slice(-500)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The numbers of every complete "tick N" line, in order. A pause can stop the guest mid-line, so the
 * last line of a console log may be "tick 1" of what the restored guest finishes as "729": not a tick.
 */
const ticks = (text: string) => [...text.matchAll(/^tick (\d+)(?=\r?\n)/gm)].map((m) => Number(m[1]));

test('a micro-engine VM is snapshotted through its handle and restored by the engine in a new hangar-vmm', { skip }, async () => {
  const elf = buildGuest('counter');
  const eng = new MicroEngine({ logger, kvm: probeKvm });
  const a = vmConfig('a', elf);
  const h = await eng.start(a);
  pids.add(h.pid);
  await logShows(a.consoleLog, /^tick 3\r?\n/m);
  const files = { snapshotPath: path.join(a.runDir, 'snap'), memFilePath: path.join(a.runDir, 'mem') };
  // A running VM is paused for the snapshot and runs on afterwards.
  await h.snapshot(files);
  assert.equal(await h.queryState(), 'running');
  const t1 = ticks(await logShows(a.consoleLog, /^tick \d+\r?\n/m)).at(-1)!;
  await logShows(a.consoleLog, new RegExp(`^tick ${t1 + 2}\\r?\\n`, 'm'));
  // Left paused: the console stops where the snapshot is. (A second snapshot goes to new files:
  // the first ones now belong to the daemon, and a confined VMM cannot replace them.)
  files.snapshotPath += '2';
  files.memFilePath += '2';
  await h.snapshot(files, { leavePaused: true });
  assert.equal(await h.queryState(), 'paused');
  await new Promise((r) => setTimeout(r, 100));
  const at = ticks(fs.readFileSync(a.consoleLog, 'latin1')).at(-1)!;
  await h.kill();

  const b = vmConfig('b', elf);
  const r = await eng.restore(b, files);
  pids.add(r.pid);
  assert.equal(await r.queryState(), 'running');
  const text = await logShows(b.consoleLog, new RegExp(`^tick ${at + 3}\\r?\\n`, 'm'));
  assert.equal(text.includes('counter start'), false, 'restored, not booted');
  const first = ticks(text)[0]!;
  assert.ok(first > at && first <= at + 2, `the count continues from ${at} (first tick after restore: ${first})`);
  await r.kill();
});
