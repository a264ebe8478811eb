/**
 * hangard that cannot start says why in one line, the error's own message
 * and code, and exits non-zero; nothing of its logger's set-up (pino's file
 * destination, "sonic boom is not ready yet") comes after it. The failure is
 * recorded in hangard.log too, and a normal stop loses no line of the log.
 * Real hangard processes (dist/src/host/main.js) on data directories of the
 * test's own; no VM is started.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { projectRoot } from '../../src/common/paths.js';
import { startDaemon } from '../helpers/daemon.js';

const MAIN = path.join(projectRoot(), 'dist', 'src', 'host', 'main.js');

/** Runs hangard on its own data directory until it exits (it should, at once); stderr is a pipe, not a terminal. */
function startFails(dataDir: string, args: string[] = []): { code: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, '--data-dir', dataDir, '--socket', path.join(dataDir, 'hangard.sock'), '--default-network', 'none', ...args], {
    encoding: 'utf8', timeout: 30_000,
    env: { ...process.env, HANGAR_DATA_DIR: dataDir, HANGAR_IMAGE_DIR: process.env.HANGAR_IMAGE_DIR ?? path.join(projectRoot(), '.cache', 'images') },
  });
  return { code: r.status, stderr: r.stderr };
}

function withDataDir(fn: (dir: string) => void | Promise<void>): () => Promise<void> {
  return async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-test-start-'));
    try { await fn(dir); } finally { fs.rmSync(dir, { recursive: true, force: true }); }
  };
}

test('a database that is not one: the SQLite error and its code, alone, exit 1, and in hangard.log', { timeout: 60_000 }, withDataDir((dir) => {
  // Fails right after the log destination is made (the store opens next), before it could have opened its file.
  fs.writeFileSync(path.join(dir, 'hangar.db'), Buffer.alloc(8192, 0x5a), { mode: 0o600 });
  const r = startFails(dir);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'hangard: file is not a database (SQLITE_NOTADB)\n', 'exactly the real error');
  assert.doesNotMatch(r.stderr, /sonic boom/i);
  const last = JSON.parse(fs.readFileSync(path.join(dir, 'hangard.log'), 'utf8').trim().split('\n').at(-1)!) as { msg: string; level: number; err: { code: string; message: string } };
  assert.equal(last.msg, 'start-up failed');
  assert.equal(last.level, 60, 'fatal');
  assert.deepEqual([last.err.code, last.err.message], ['SQLITE_NOTADB', 'file is not a database']);
}));

test('an unknown log level: named, with the levels there are, exit 1', { timeout: 60_000 }, withDataDir((dir) => {
  const r = startFails(dir, ['--log-level', 'chatty']);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'hangard: --log-level wants one of trace, debug, info, warn, error, fatal, silent, got "chatty" (INVALID_ARGUMENT)\n');
}));

test('a normal stop: the log ends with "hangard stopped"', { timeout: 60_000 }, withDataDir(async (dir) => {
  const d = await startDaemon({ dataDir: dir });
  try {
    assert.equal((await d.request('GET', '/1.0')).status, 200);
  } finally {
    await d.stop();
  }
  const lines = fs.readFileSync(path.join(dir, 'hangard.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { msg: string });
  assert.ok(lines.some((l) => l.msg === 'hangard ready'));
  assert.equal(lines.at(-1)!.msg, 'hangard stopped', 'the last line written before exit is there');
}));
