/**
 * Bounded console logs: the rotating file hangar-vmm writes, the C writer
 * (hangar-conlog) QEMU writes through, and reading the newest output back
 * across the rotated files. Each writer gets far more than its cap.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RotatingFile } from '../../src/common/console-log/rotating-file.js';
import { consoleLogLimitFromEnv, readConsoleLogTail, DEFAULT_CONSOLE_LOG_LIMIT } from '../../src/common/console-log/limits.js';
import { startConsoleLogWriter } from '../../src/engines/console-log/writer.js';

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-conlog-'));
}

/** Numbered lines, so order and completeness can be checked: "line 000001\n" ... */
function lines(from: number, to: number): Buffer {
  let s = '';
  for (let i = from; i <= to; i++) s += `line ${String(i).padStart(6, '0')}\n`;
  return Buffer.from(s);
}

function sizes(dir: string): Record<string, number> {
  return Object.fromEntries(fs.readdirSync(dir).filter((f) => f.startsWith('console.log')).map((f) => [f, fs.statSync(path.join(dir, f)).size]));
}

/** The log read back must be the newest lines, complete and in order, ending with the last one written. */
function assertNewestLines(text: string, last: number): void {
  const got = text.split('\n').filter((l) => l.length > 0);
  // The oldest kept line may be cut at a file boundary: skip it.
  const whole = got.slice(1);
  assert.ok(whole.length > 10, `kept ${whole.length} lines`);
  const first = Number(whole[0]!.slice(5));
  assert.deepEqual(whole, Array.from({ length: last - first + 1 }, (_, i) => `line ${String(first + i).padStart(6, '0')}`));
}

test('defaults and the daemon setting: 2 files of 8 MiB; HANGAR_CONSOLE_LOG_SIZE/FILES; bad values refused', () => {
  assert.deepEqual(DEFAULT_CONSOLE_LOG_LIMIT, { fileBytes: 8 * 1024 * 1024, files: 2 });
  assert.deepEqual(consoleLogLimitFromEnv({}), DEFAULT_CONSOLE_LOG_LIMIT);
  assert.deepEqual(consoleLogLimitFromEnv({ HANGAR_CONSOLE_LOG_SIZE: '64K', HANGAR_CONSOLE_LOG_FILES: '3' }), { fileBytes: 65536, files: 3 });
  assert.throws(() => consoleLogLimitFromEnv({ HANGAR_CONSOLE_LOG_SIZE: '1' }), /at least 4096 bytes/);
  assert.throws(() => consoleLogLimitFromEnv({ HANGAR_CONSOLE_LOG_FILES: '1' }), /2\.\.10/);
});

test('hangar-vmm\'s rotating log stays within its cap and keeps the newest output', () => {
  const dir = tmp();
  try {
    const file = path.join(dir, 'console.log');
    const log = new RotatingFile(file, { fileBytes: 10_000, files: 2 });
    // 100 000 lines (1.2 MB) in pieces of varied size, as UART flushes come.
    const all = lines(1, 100_000);
    for (let at = 0, n = 1; at < all.length; at += n, n = (n * 7) % 3001 + 1) log.write(all.subarray(at, at + n));
    log.close();
    const s = sizes(dir);
    assert.deepEqual(Object.keys(s).sort(), ['console.log', 'console.log.1']);
    for (const [f, n] of Object.entries(s)) assert.ok(n <= 10_000, `${f} is ${n} bytes`);
    assert.equal(s['console.log.1'], 10_000);
    assertNewestLines(readConsoleLogTail(file, 1 << 20).toString(), 100_000);
    // A reopened log (a restarted VMM) continues the file it finds and still rotates.
    const again = new RotatingFile(file, { fileBytes: 10_000, files: 2 });
    again.write(lines(100_001, 101_000));
    again.close();
    for (const n of Object.values(sizes(dir))) assert.ok(n <= 10_000);
    assertNewestLines(readConsoleLogTail(file, 1 << 20).toString(), 101_000);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('reading across the rotated files returns the last bytes asked for, oldest first', () => {
  const dir = tmp();
  try {
    const file = path.join(dir, 'console.log');
    fs.writeFileSync(`${file}.1`, 'older\n');
    fs.writeFileSync(file, 'newer\n');
    assert.equal(readConsoleLogTail(file, 100).toString(), 'older\nnewer\n');
    assert.equal(readConsoleLogTail(file, 8).toString(), 'r\nnewer\n');
    assert.equal(readConsoleLogTail(path.join(dir, 'none.log'), 100).length, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** Writes all of `data` into a pipe fd, waiting while it is full (it is non-blocking in Node's hands). */
async function writeAll(fd: number, data: Buffer): Promise<void> {
  let at = 0;
  while (at < data.length) {
    try {
      at += fs.writeSync(fd, data, at, Math.min(65536, data.length - at));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}

async function waitGone(pid: number): Promise<void> {
  for (;;) {
    try { process.kill(pid, 0); } catch { return; }
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('hangar-conlog: bounded and rotated, newest output kept, ends when the writing side closes', { timeout: 120_000 }, async () => {
  const dir = tmp();
  try {
    const file = path.join(dir, 'console.log');
    const pipe = startConsoleLogWriter(file, { fileBytes: 16_384, files: 2 }, dir);
    await writeAll(pipe.writeFd, lines(1, 200_000));
    // QEMU exiting closes the last write end: the writer sees end-of-file and exits.
    pipe.closeWriteEnd();
    await waitGone(pipe.writerPid);
    const s = sizes(dir);
    assert.deepEqual(Object.keys(s).sort(), ['console.log', 'console.log.1']);
    for (const [f, n] of Object.entries(s)) assert.ok(n <= 16_384, `${f} is ${n} bytes`);
    assertNewestLines(readConsoleLogTail(file, 1 << 20).toString(), 200_000);
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith('.fifo')), [], 'the FIFO the pipe came from is gone');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('hangar-conlog dying never blocks the writing side: writes fail with EPIPE', { timeout: 60_000 }, async () => {
  const dir = tmp();
  try {
    const pipe = startConsoleLogWriter(path.join(dir, 'console.log'), { fileBytes: 16_384, files: 2 }, dir);
    process.kill(pipe.writerPid, 'SIGKILL');
    await waitGone(pipe.writerPid);
    // QEMU ignores SIGPIPE, as Node does: a write to the dead reader's pipe returns EPIPE at once.
    assert.throws(() => fs.writeSync(pipe.writeFd, Buffer.alloc(4096)), { code: 'EPIPE' });
    pipe.closeWriteEnd();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
