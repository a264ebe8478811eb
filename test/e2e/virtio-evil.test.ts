/**
 * A hostile guest (guests/virtio-evil.c) breaks the virtqueue rules against
 * virtio-blk one way at a time under the real hangar-vmm: the device must
 * answer each with DEVICE_NEEDS_RESET, the VMM must stay up and log what
 * happened, the backing file must stay untouched, and after a reset the
 * device must work again.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { buildGuest, guestConfig, guestTestsUnavailable, runVmm, tempDir } from '../helpers/vmm.js';

const skip = guestTestsUnavailable() ?? false;
const dir = tempDir('virtio-evil-e2e');
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const CASES: Array<[string, string]> = [
  ['outside-memory', 'buffer-outside-memory'],
  ['straddles-end', 'buffer-outside-memory'],
  ['oversized-length', 'buffer-outside-memory'],
  ['chain-loop', 'chain-loop'],
  ['next-index', 'next-index'],
  ['head-index', 'head-index'],
  ['avail-index', 'avail-index'],
  ['indirect-loop', 'chain-loop'],
  ['ring-outside-memory', 'ring-outside-memory'],
];

test('malformed rings and chains break the device, not the VMM; a reset recovers it', { skip }, async () => {
  const kernel = buildGuest('virtio-evil');
  const disk = path.join(dir, 'disk.img');
  const content = randomBytes(1 << 20);
  fs.writeFileSync(disk, content);
  const r = await runVmm(guestConfig(kernel, { drives: [{ drive_id: 'vda', path_on_host: disk }] }), dir);
  assert.equal(r.code, 0, `the guest ran to its end and powered off\n${r.stdout}\n${r.stderr}`);
  for (const [name] of CASES) assert.match(r.stdout, new RegExp(`evil: ${name} needs_reset=1`), name);
  assert.match(r.stdout, /evil: fuzz survived magic=74726976/);
  assert.match(r.stdout, /evil: recovered status=0/);
  assert.match(r.stdout, /evil: done/);

  // The VMM said what happened, with the rule that was broken.
  const reasons = r.stderr.split('\n').filter((l) => l.includes('device broken by the guest')).map((l) => (JSON.parse(l) as { error: { details: { reason: string } } }).error.details.reason);
  assert.deepEqual(reasons, CASES.map(([, reason]) => reason));
  assert.equal(createHash('sha256').update(fs.readFileSync(disk)).digest('hex'), createHash('sha256').update(content).digest('hex'));
});
