/**
 * The TCP listener's guards, one module at a time: token rules (length,
 * file mode, owner, symlink), the per-address failure limiter (with a fake
 * clock), the loopback rule for plain HTTP, and the periodic pruning of
 * operations.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { AuthFailureLimiter, checkToken, loadOrCreateToken } from '../../src/host/auth.js';
import { isLoopback } from '../../src/host/listen.js';
import { OperationManager } from '../../src/host/operations.js';
import { Store } from '../../src/host/store.js';
import { isHangarError } from '../../src/common/errors.js';

const invalid = (re: RegExp) => (e: unknown) => isHangarError(e) && e.code === 'INVALID_ARGUMENT' && re.test(e.message);

test('tokens: at least 32 printable characters; from the environment or a private file', () => {
  assert.throws(() => checkToken('x', 'T'), invalid(/has 1 characters; at least 32/));
  assert.throws(() => checkToken('a'.repeat(31), 'T'), invalid(/has 31 characters/));
  assert.throws(() => checkToken(`${'a'.repeat(20)} ${'b'.repeat(20)}`, 'T'), invalid(/printable ASCII without spaces/));
  assert.equal(checkToken('a'.repeat(32), 'T'), 'a'.repeat(32));

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-tok-'));
  try {
    assert.throws(() => loadOrCreateToken(dir, { HANGAR_API_TOKEN: 'short' }), invalid(/HANGAR_API_TOKEN has 5 characters/));
    // None yet: made, 64 hex digits, 0600.
    const made = loadOrCreateToken(dir, {});
    assert.match(made, /^[0-9a-f]{64}$/);
    const file = path.join(dir, 'api.token');
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.equal(loadOrCreateToken(dir, {}), made, 'read back, not replaced');
    for (const mode of [0o644, 0o640, 0o604, 0o620]) {
      fs.chmodSync(file, mode);
      assert.throws(() => loadOrCreateToken(dir, {}), invalid(new RegExp(`mode 0${mode.toString(8)}: group or others may read it`)), mode.toString(8));
    }
    fs.chmodSync(file, 0o400);
    assert.equal(loadOrCreateToken(dir, {}), made);
    fs.chmodSync(file, 0o600);
    fs.writeFileSync(file, 'tooshort\n');
    assert.throws(() => loadOrCreateToken(dir, {}), invalid(/api\.token has 8 characters/));
    // A symlink is refused, not followed.
    fs.rmSync(file);
    const real = path.join(dir, 'elsewhere');
    fs.writeFileSync(real, 'b'.repeat(64), { mode: 0o600 });
    fs.symlinkSync(real, file);
    assert.throws(() => loadOrCreateToken(dir, {}), invalid(/symbolic link/));
    // Someone else's file is refused (only testable as root: chown to another uid).
    if (process.getuid?.() === 0) {
      fs.rmSync(file);
      fs.writeFileSync(file, 'c'.repeat(64), { mode: 0o600 });
      fs.chownSync(file, 65534, 65534);
      assert.throws(() => loadOrCreateToken(dir, {}), invalid(/belongs to uid 65534/));
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('failure limiter: 10 failures in a minute block that address (Retry-After counts down); others and time free it', () => {
  let now = 1_000_000;
  const l = new AuthFailureLimiter({ now: () => now });
  for (let i = 0; i < 9; i++) { l.fail('10.0.0.1'); now += 1000; }
  assert.equal(l.blockedFor('10.0.0.1'), 0, 'nine failures: still allowed');
  l.fail('10.0.0.1');
  // The first failure was at 1 000 000; it ages out 60 s later, now is 1 009 000.
  assert.equal(l.blockedFor('10.0.0.1'), 51);
  assert.equal(l.blockedFor('10.0.0.2'), 0, 'another address is not affected');
  now += 50_500;
  assert.equal(l.blockedFor('10.0.0.1'), 1);
  now += 600;
  assert.equal(l.blockedFor('10.0.0.1'), 0, 'the oldest failure left the window');
  // Failures spread out more thinly than 10 a minute never block.
  const slow = new AuthFailureLimiter({ now: () => now });
  for (let i = 0; i < 100; i++) { slow.fail('a'); now += 7000; assert.equal(slow.blockedFor('a'), 0); }
  // Memory is bounded: the least recently failing addresses are forgotten first.
  const small = new AuthFailureLimiter({ now: () => now, maxFailures: 1, maxAddresses: 3 });
  for (const a of ['a', 'b', 'c', 'd']) small.fail(a);
  assert.equal(small.blockedFor('a'), 0, 'forgotten');
  assert.ok(small.blockedFor('d') > 0);
});

test('isLoopback: 127/8 and ::1 only', () => {
  for (const h of ['127.0.0.1', '127.1.2.3', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', 'localhost']) assert.equal(isLoopback(h), true, h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.1', '128.0.0.1', 'example.com', '::2', '']) assert.equal(isLoopback(h), false, h);
});

test('operations are pruned periodically, not only at start; running ones are kept', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-prune-'));
  const store = new Store(dir);
  const ops = new OperationManager(store, pino({ level: 'silent' }));
  try {
    const done = ops.run('quick', [], async () => 1);
    await ops.wait(done.id, 5000);
    let release!: () => void;
    const running = ops.run('slow', [], () => new Promise<void>((r) => { release = r; }));
    assert.equal(ops.list().length, 2);
    // Retention 0: anything finished is old enough. Every 20 ms.
    ops.startPruning(20, 0);
    const end = Date.now() + 5000;
    while (ops.list().length > 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(ops.list().map((o) => o.id), [running.id], 'the finished one went, the running one stayed');
    ops.stopPruning();
    release();
    await ops.wait(running.id, 5000);
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(ops.list().length, 1, 'stopped: nothing pruned any more');
  } finally {
    ops.stopPruning();
    store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
