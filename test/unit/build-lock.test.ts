/**
 * The image build lock (src/host/images/build-lock.ts), with real files and
 * real processes: at most one holder at any moment however many processes
 * contend, and a lock is free exactly when no live process holds it — what
 * the file says (a dead builder's pid, a pid since reused, nothing) does not
 * matter.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { buildLockHeld, tryBuildLock } from '../../src/host/images/build-lock.js';

const ts = fileURLToPath(import.meta.url).endsWith('.ts');
const lockModule = new URL(`../../src/host/images/build-lock.${ts ? 'ts' : 'js'}`, import.meta.url).href;

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-build-lock-'));
}

/** Runs ES module code in another Node process with the lock module imported as `m`. */
function node(code: string, stdio: 'pipe' | 'inherit' = 'pipe'): ChildProcess {
  const src = `const m = await import(${JSON.stringify(lockModule)}); const fs = await import('node:fs');\n${code}`;
  return spawn(process.execPath, [...(ts ? ['--import', 'tsx'] : []), '--input-type=module', '-e', src], { stdio: ['pipe', stdio, 'inherit'] });
}

async function output(child: ChildProcess): Promise<string> {
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += String(d); });
  const [code] = (await once(child, 'exit')) as [number | null];
  assert.equal(code, 0, `child exited with ${code}: ${out}`);
  return out;
}

/** A child that takes the lock, says "held", and keeps it until killed. */
async function holder(lock: string): Promise<ChildProcess> {
  const child = node(`const l = m.tryBuildLock(${JSON.stringify(lock)}); console.log(l ? 'held' : 'busy'); setInterval(() => {}, 1000);`);
  const [line] = (await once(child.stdout!, 'data')) as [Buffer];
  assert.equal(String(line).trim(), 'held');
  return child;
}

test('a held lock is refused to everyone else, and freed when its holder dies (even by SIGKILL)', async () => {
  const dir = tempDir();
  const lock = path.join(dir, 'img.lock');
  try {
    const child = await holder(lock);
    assert.equal(buildLockHeld(lock), true);
    assert.equal(tryBuildLock(lock), null);
    child.kill('SIGKILL');
    await once(child, 'exit');
    assert.equal(buildLockHeld(lock), false);
    const mine = tryBuildLock(lock);
    assert.ok(mine, 'a dead holder\'s lock is taken at once');
    assert.equal(buildLockHeld(lock), true, 'held by this process');
    assert.equal(tryBuildLock(lock), null, 'not twice, not even by the same process');
    mine.release();
    assert.equal(buildLockHeld(lock), false);
    assert.deepEqual(fs.readdirSync(dir), [], 'a release leaves no file behind');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a lock file nobody holds is free whatever it says: a dead pid, a live unrelated pid, nothing', () => {
  const dir = tempDir();
  const lock = path.join(dir, 'img.lock');
  try {
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    // process.pid: alive, like a dead builder's pid reused after a reboot, but not holding the lock.
    for (const text of [String(dead), String(process.pid), '']) {
      fs.writeFileSync(lock, text);
      assert.equal(buildLockHeld(lock), false, `lock file saying ${JSON.stringify(text)}`);
      const l = tryBuildLock(lock);
      assert.ok(l, `lock file saying ${JSON.stringify(text)} is taken`);
      l.release();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('processes contending for a lock (a stale one at first) never hold it two at a time', { timeout: 120_000 }, async () => {
  const dir = tempDir();
  const lock = path.join(dir, 'img.lock');
  const inside = path.join(dir, 'inside');
  const go = path.join(dir, 'go');
  const PROCESSES = 4;
  const ROUNDS = 40;
  try {
    fs.writeFileSync(lock, String(spawnSync(process.execPath, ['-e', '']).pid!));
    // Each round: take the lock (retrying at once, like a waiting builder but faster), mark the
    // critical section with an exclusive create, yield, unmark, release.
    const children = Array.from({ length: PROCESSES }, () => node(`
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      while (!fs.existsSync(${JSON.stringify(go)})) await sleep(2);
      let overlaps = 0;
      for (let i = 0; i < ${ROUNDS}; i++) {
        let l;
        while (!(l = m.tryBuildLock(${JSON.stringify(lock)}))) await new Promise((r) => setImmediate(r));
        let marked = false;
        try { fs.writeFileSync(${JSON.stringify(inside)}, String(process.pid), { flag: 'wx' }); marked = true; } catch { overlaps++; }
        await sleep(1);
        if (marked) fs.rmSync(${JSON.stringify(inside)});
        l.release();
      }
      console.log(JSON.stringify({ overlaps }));`));
    const results = children.map(output);
    fs.writeFileSync(go, '');
    const overlaps = (await Promise.all(results)).map((o) => (JSON.parse(o.trim()) as { overlaps: number }).overlaps);
    assert.deepEqual(overlaps, new Array(PROCESSES).fill(0), 'times a process found another one inside');
    assert.deepEqual(fs.readdirSync(dir), ['go'], 'no lock left behind');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
