/**
 * `hangar copy SRC[/SNAPSHOT] NEW` and snapshot names as the CLI checks
 * them before any request (the daemon checks them again).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HangarError } from '../../src/common/errors.js';
import { checkSnapshotName, parseCopySource, snapshotRow } from '../../src/cli/commands/snapshot.js';

test('copy sources: VM or VM/SNAPSHOT, each part checked', () => {
  assert.deepEqual(parseCopySource('web1'), { vm: 'web1' });
  assert.deepEqual(parseCopySource('web1/before-upgrade'), { vm: 'web1', snapshot: 'before-upgrade' });
  for (const bad of ['Web1', 'web1/', 'web1/1', 'web1/a/b', '/snap']) {
    assert.throws(() => parseCopySource(bad), (e: unknown) => e instanceof HangarError && e.code === 'INVALID_ARGUMENT', bad);
  }
  assert.throws(() => checkSnapshotName('42'), /starting with a letter/);
});

test('a snapshot row says whether it holds memory and how much', () => {
  const row = snapshotRow({ name: 's', vm: 'v', createdAt: '2026-11-29T22:00:00.000Z', memory: true, vmState: 'running', disks: [{ name: 'root', volume: 'default/v-root' }, { name: 'data', volume: 'default/v-data' }], vmStateBytes: 96 * 2 ** 20 });
  assert.equal(row[0], 's');
  assert.equal(row[2], 'yes (96M)');
  assert.equal(row[4], 'root,data');
});
