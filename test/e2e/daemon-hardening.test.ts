/**
 * What a real daemon does to its files at start: a data directory left open
 * by an older Hangar is tightened (0700, its database and log 0600), the
 * Unix socket is 0600, work folders a crashed daemon left behind are
 * removed (only Hangar's, only stale ones), and the image policy (import
 * folder 0700, quota) is what GET /1.0 reports.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { tryBuildLock } from '../../src/host/images/build-lock.js';

let d: TestDaemon | undefined;
const imageDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-hard-img-'));

after(async () => {
  await d?.cleanup();
  fs.rmSync(imageDir, { recursive: true, force: true });
});

const mode = (p: string): number => fs.statSync(p).mode & 0o777;

test('start: data directory tightened, socket private, stale work folders removed, image policy reported', async () => {
  d = await startDaemon({ env: { HANGAR_IMAGE_DIR: imageDir }, args: ['--image-quota', '3G'] });
  const dir = d.dataDir;
  assert.equal(mode(dir), 0o700);
  for (const f of ['hangar.db', 'hangard.log']) assert.equal(mode(path.join(dir, f)), 0o600, `${f} on a fresh start`);
  assert.equal(mode(d.socket), 0o600);
  const info = (await d.request('GET', '/1.0')).body.metadata;
  assert.deepEqual(info.images, { quotaBytes: 3 * 2 ** 30, usedBytes: 0, importDirs: [path.join(dir, 'import')] });
  assert.equal(mode(path.join(dir, 'import')), 0o700);
  await d.stop();

  // As an older Hangar (or a careless operator) left it.
  fs.chmodSync(dir, 0o755);
  for (const f of ['hangar.db', 'hangard.log']) fs.chmodSync(path.join(dir, f), 0o644);
  // Left by a daemon that crashed mid-import and mid-build.
  const store = path.join(dir, 'local-images');
  fs.mkdirSync(path.join(store, '.import-guest-Ab12Cd'), { recursive: true });
  fs.writeFileSync(path.join(store, '.import-guest-Ab12Cd', 'kernel'), 'half a kernel');
  fs.mkdirSync(path.join(store, 'notes-of-the-operator'));
  fs.mkdirSync(path.join(imageDir, '.build-tiny-Zz9Yy8'));
  // A build another live process is running right now (it holds the lock: this test process).
  fs.mkdirSync(path.join(imageDir, '.build-tiny-Live01'));
  const held = tryBuildLock(path.join(imageDir, 'tiny.lock'));
  assert.ok(held);
  fs.mkdirSync(path.join(imageDir, '.build-unknown-Aa1111'));
  await d.restart();
  assert.equal(mode(dir), 0o700);
  for (const f of ['hangar.db', 'hangard.log']) assert.equal(mode(path.join(dir, f)), 0o600, `${f} after the restart`);
  assert.equal(fs.existsSync(path.join(store, '.import-guest-Ab12Cd')), false, 'the stale import folder is gone');
  assert.equal(fs.existsSync(path.join(store, 'notes-of-the-operator')), true);
  assert.equal(fs.existsSync(path.join(imageDir, '.build-tiny-Live01')), true, 'a build with a live lock holder is kept');
  assert.equal(fs.existsSync(path.join(imageDir, '.build-tiny-Zz9Yy8')), true, 'while tiny.lock is held, no tiny build folder is touched');
  assert.equal(fs.existsSync(path.join(imageDir, '.build-unknown-Aa1111')), true, 'not an image Hangar builds');
  await d.stop();

  // The lock holder is gone: now both tiny build folders are stale.
  held.release();
  await d.restart();
  assert.equal(fs.existsSync(path.join(imageDir, '.build-tiny-Live01')), false);
  assert.equal(fs.existsSync(path.join(imageDir, '.build-tiny-Zz9Yy8')), false);
  assert.equal(fs.existsSync(path.join(imageDir, '.build-unknown-Aa1111')), true);
  assert.match(fs.readFileSync(path.join(dir, 'hangard.log'), 'utf8'), /removed work folders a previous daemon left behind/);
});
