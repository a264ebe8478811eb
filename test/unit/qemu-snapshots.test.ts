/**
 * The QMP side of snapshots against a scripted QMP peer: disks found by
 * -blockdev node name or -drive BlockBackend, jobs polled to their end and
 * dismissed, QEMU's error passed on, disk-only snapshots as one transaction;
 * and the -loadvm argument. Real QEMU runs these in snapshots-qemu.test.ts
 * and snapshots-daemon.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { finishJob, nodeNames, qemuSnapshotControl, type QmpExecutor } from '../../src/engines/qemu/snapshots.js';
import { buildQemuArgs } from '../../src/engines/qemu/cmdline.js';
import type { EngineVmConfig } from '../../src/engines/engine.js';

const BLOCKDEV = [
  { device: '', qdev: '/machine/peripheral/dev-disk-root/virtio-backend', inserted: { 'node-name': 'disk-root', image: { snapshots: [{ name: 's1', 'vm-state-size': 1000 }] } } },
  { device: '', inserted: { 'node-name': 'disk-data' } },
];
const DRIVE = [{ device: 'disk-data', inserted: { 'node-name': '#block147' } }];

/** A QMP peer that answers from a script and records every command. */
function peer(blocks: unknown[], jobs: Array<Array<Record<string, unknown>>> = []): QmpExecutor & { calls: Array<[string, unknown]> } {
  const calls: Array<[string, unknown]> = [];
  return {
    calls,
    async execute<T>(command: string, args?: Record<string, unknown>): Promise<T> {
      calls.push([command, args]);
      if (command === 'query-block') return blocks as T;
      if (command === 'query-jobs') return (jobs.length > 1 ? jobs.shift()! : jobs[0] ?? []) as T;
      return {} as T;
    },
  };
}

test('disks are found by their -blockdev node name or their -drive BlockBackend', async () => {
  assert.deepEqual(await nodeNames(peer(BLOCKDEV), ['data', 'root']), ['disk-data', 'disk-root']);
  assert.deepEqual(await nodeNames(peer(DRIVE), ['data']), ['#block147']);
  await assert.rejects(nodeNames(peer(BLOCKDEV), ['nope']), /no disk "nope"/);
  const list = await qemuSnapshotControl(peer(BLOCKDEV)).list(['root', 'data']);
  assert.deepEqual(list.get('root'), [{ name: 's1', vmStateBytes: 1000 }]);
  assert.deepEqual(list.get('data'), []);
});

test('a job is polled until it concludes, then dismissed; its error is passed on', async () => {
  const qmp = peer(BLOCKDEV, [
    [{ id: 'j1', status: 'running', 'current-progress': 0, 'total-progress': 1 }],
    [{ id: 'j1', status: 'concluded', 'current-progress': 1, 'total-progress': 1, error: 'No space left' }],
  ]);
  await assert.rejects(qemuSnapshotControl(qmp).save('s2', { disks: ['root', 'data'], vmstateDisk: 'root' }, 'j1'), /No space left/);
  const save = qmp.calls.find(([c]) => c === 'snapshot-save');
  assert.deepEqual(save?.[1], { 'job-id': 'j1', tag: 's2', vmstate: 'disk-root', devices: ['disk-root', 'disk-data'] });
  assert.ok(qmp.calls.some(([c, a]) => c === 'job-dismiss' && (a as { id: string }).id === 'j1'), 'the concluded job is dismissed');
  assert.deepEqual(await finishJob(peer(BLOCKDEV, [[]]), 'gone', 1000), { found: false });
});

test('a disk-only snapshot of a running VM is one transaction over every disk', async () => {
  const qmp = peer(BLOCKDEV);
  await qemuSnapshotControl(qmp).saveDisksOnly('d1', ['root', 'data']);
  const tx = qmp.calls.find(([c]) => c === 'transaction');
  assert.deepEqual(tx?.[1], { actions: [
    { type: 'blockdev-snapshot-internal-sync', data: { device: 'disk-root', name: 'd1' } },
    { type: 'blockdev-snapshot-internal-sync', data: { device: 'disk-data', name: 'd1' } },
  ] });
});

test('a start from a snapshot adds -loadvm; a bad name is refused', () => {
  const c: EngineVmConfig = {
    id: 'x', name: 'vm', cpus: 1, memoryBytes: 256 * 2 ** 20, boot: { kernel: '/k' }, disks: [], nics: [], accel: 'tcg',
    runDir: '/run/x', consoleLog: '/run/x/console.log',
  };
  assert.equal(buildQemuArgs(c).includes('-loadvm'), false);
  const args = buildQemuArgs({ ...c, loadSnapshot: 'mem1' });
  assert.equal(args[args.indexOf('-loadvm') + 1], 'mem1');
  assert.throws(() => buildQemuArgs({ ...c, loadSnapshot: '1,x' }), /snapshot name/);
});
