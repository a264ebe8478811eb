/** The newc cpio writer: what the kernel will unpack, read back entry by entry. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { buildCpio, listCpio } from '../../src/host/images/cpio.js';
import { isHangarError } from '../../src/common/errors.js';

const entries = [
  { type: 'dir' as const, path: 'bin' },
  { type: 'file' as const, path: 'bin/hello', data: Buffer.from('#!/bin/sh\necho hi\n'), mode: 0o755 },
  { type: 'symlink' as const, path: 'bin/sh', target: 'hello' },
  { type: 'chardev' as const, path: 'console', major: 5, minor: 1 },
  { type: 'file' as const, path: 'odd-len', data: Buffer.from('abc') },
];

test('entries read back with their names, types and sizes; 4-byte alignment holds', () => {
  const cpio = buildCpio(entries);
  assert.equal(cpio.length % 4, 0);
  const list = listCpio(cpio);
  assert.deepEqual(list.map((e) => e.name), ['bin', 'bin/hello', 'bin/sh', 'console', 'odd-len']);
  assert.equal(list[0]!.mode, 0o040755);
  assert.equal(list[1]!.mode, 0o100755);
  assert.equal(list[1]!.size, 18);
  assert.equal(list[2]!.mode & 0o170000, 0o120000);
  assert.equal(list[3]!.mode, 0o020600);
  assert.equal(list[4]!.size, 3);
});

test('cpio(1) unpacks our archive to the same content', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-cpio-'));
  try {
    // No device nodes here: cpio(1) would need privileges the test should not rely on.
    const r = spawnSync('cpio', ['-i', '--quiet', '--no-absolute-filenames'], { cwd: dir, input: buildCpio(entries.filter((e) => e.type !== 'chardev')) });
    assert.equal(r.status, 0, String(r.stderr));
    assert.equal(fs.readFileSync(path.join(dir, 'bin/hello'), 'utf8'), '#!/bin/sh\necho hi\n');
    assert.equal(fs.readlinkSync(path.join(dir, 'bin/sh')), 'hello');
    assert.equal(fs.statSync(path.join(dir, 'bin/hello')).mode & 0o777, 0o755);
    assert.equal(fs.readFileSync(path.join(dir, 'odd-len'), 'utf8'), 'abc');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('paths that climb out of the archive are refused', () => {
  assert.throws(() => buildCpio([{ type: 'dir', path: '../etc' }]), (e: unknown) => isHangarError(e) && e.code === 'INVALID_ARGUMENT');
  assert.throws(() => buildCpio([{ type: 'dir', path: '/' }]), (e: unknown) => isHangarError(e) && e.code === 'INVALID_ARGUMENT');
  assert.throws(() => listCpio(Buffer.from('garbage')), (e: unknown) => isHangarError(e) && e.code === 'INVALID_ARGUMENT');
});
