import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSize, formatSize } from '../../src/common/sizes.js';
import { HangarError } from '../../src/common/errors.js';

test('parseSize reads binary units', () => {
  assert.equal(parseSize('512M'), 512 * 1024 ** 2);
  assert.equal(parseSize('2G'), 2 * 1024 ** 3);
  assert.equal(parseSize('1.5GiB'), 1.5 * 1024 ** 3);
  assert.equal(parseSize('1048576'), 1048576);
  assert.equal(parseSize('4k'), 4096);
  assert.equal(parseSize(4096), 4096);
});

test('parseSize rejects everything else with INVALID_ARGUMENT', () => {
  for (const bad of ['12XB', 'M', '-1G', '1e3', '', '1 G', '0.5', '0.1K']) {
    assert.throws(() => parseSize(bad), (e: unknown) => e instanceof HangarError && e.code === 'INVALID_ARGUMENT', bad);
  }
  assert.throws(() => parseSize(-1), HangarError);
  assert.throws(() => parseSize(1.5), HangarError);
});

test('formatSize round-trips through parseSize', () => {
  for (const n of [4096, 128 * 1024 ** 2, 3 * 1024 ** 3, 1024 ** 4]) assert.equal(parseSize(formatSize(n)), n);
  assert.equal(formatSize(512 * 1024 ** 2), '512M');
  assert.equal(formatSize(100), '100B');
});
