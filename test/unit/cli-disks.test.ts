/** `--disk` values and `hangar disk attach` arguments become the API's disk requests (src/cli/commands/disk.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attachRequest, diskRow, launchDisks, parseDiskArg } from '../../src/cli/commands/disk.js';
import { launchRequest } from '../../src/cli/commands/vm.js';
import { buildProgram } from '../../src/cli/program.js';

const G = 1024 ** 3;

test('launch --disk: SIZE sizes the root disk, NAME=SIZE makes a volume, NAME=POOL/VOLUME and NAME=VOLUME name existing ones', () => {
  assert.deepEqual(launchDisks(['20G', 'data=50G', 'logs=fast/logs1,ro', 'scratch=vol7,serial=S-1', 'big=100G,pool=fast']), {
    rootSize: 20 * G,
    disks: [
      { name: 'data', size: 50 * G },
      { name: 'logs', volume: 'fast/logs1', readOnly: true },
      { name: 'scratch', volume: 'vol7', serial: 'S-1' },
      { name: 'big', size: 100 * G, pool: 'fast' },
    ],
  });
  assert.deepEqual(launchDisks(['default/50G']), { disks: [{ volume: 'default/50G' }] });
  assert.deepEqual(launchRequest('debian-12', 'web', { start: true, disk: ['8G'] }), { name: 'web', image: 'debian-12', rootSize: 8 * G });
});

test('bad --disk values are refused with a message that says what to write', () => {
  const cases: Array<[string[], RegExp]> = [
    [['20G', '30G'], /given twice/],
    [['20G,ro'], /root disk takes no options/],
    [['data='], /nothing after "="/],
    [['=5G'], /name before "=" is empty/],
    [['myvol'], /is not a size/],
    [['data=5G,fast'], /unknown option "fast"/],
    [[''], /expected SIZE/],
  ];
  for (const [vals, msg] of cases) assert.throws(() => launchDisks(vals), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT' && msg.test(e.message), vals.join(' '));
});

test('disk attach: a bare SIZE is a new volume; flags add name, ro, serial, pool', () => {
  assert.deepEqual(attachRequest('10G', {}), { size: 10 * G });
  assert.deepEqual(attachRequest('pool/v', { name: 'data', readOnly: true, serial: 'X' }), { volume: 'pool/v', name: 'data', readOnly: true, serial: 'X' });
  assert.deepEqual(attachRequest('data=1G', { pool: 'fast' }), { name: 'data', size: G, pool: 'fast' });
  assert.throws(() => attachRequest('a=1G', { name: 'b' }), /named twice/);
  assert.deepEqual(parseDiskArg('d=1M'), { disk: { name: 'd', size: 1024 * 1024 }, bare: false });
});

test('disk list rows; the command tree has disk attach|detach|list', () => {
  assert.deepEqual(diskRow({ name: 'root', volume: 'default/w-root', readOnly: false, owned: true, format: 'qcow2', sizeBytes: 20 * G, serial: 'root' }), ['root', 'default/w-root (own)', '20G', 'qcow2', 'rw', 'root']);
  const disk = buildProgram().commands.find((c) => c.name() === 'disk');
  assert.deepEqual(disk?.commands.map((c) => c.name()).sort(), ['attach', 'detach', 'list']);
});
