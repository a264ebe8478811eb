/**
 * virtio-blk end to end: the ring-3 test guest guests/virtio-blk.c runs
 * under the real hangar-vmm, reads the whole disk, writes a pattern, and
 * the host checks both against the backing file.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { buildGuest, field, fnv1a64, guestConfig, guestTestsUnavailable, runVmm, tempDir } from '../helpers/vmm.js';

const skip = guestTestsUnavailable() ?? false;
const dir = tempDir('virtio-blk-e2e');
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const DISK = 4 << 20;
const WSECTOR = 100;
const SEED = 7;

function pattern(): Buffer {
  const b = Buffer.alloc(8192);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + SEED) & 0xff;
  return b;
}
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

test('guest reads the disk (hash matches the file) and its writes land in the file', { skip }, async () => {
  const kernel = buildGuest('virtio-blk');
  const disk = path.join(dir, 'rw.img');
  const content = randomBytes(DISK);
  fs.writeFileSync(disk, content);
  const r = await runVmm(guestConfig(kernel, {
    bootArgs: `vblk.wsector=${WSECTOR} vblk.seed=${SEED}`,
    drives: [{ drive_id: 'vda', path_on_host: disk, serial: 'HANGAR-E2E-1' }],
  }), dir);
  assert.equal(r.code, 0, `exit ${r.code}\n${r.stdout}\n${r.stderr}`);
  const out = r.stdout;
  assert.match(out, /vblk: done/);
  assert.equal(field(out, 'vblk: capacity=', 'ro'), '0');
  assert.match(out, new RegExp(`vblk: capacity=${DISK / 512} `));
  assert.match(out, /vblk: id=HANGAR-E2E-1\r?\n/);
  assert.equal(field(out, 'vblk: ', 'read-hash'), fnv1a64(content));
  assert.equal(field(out, 'vblk: write', 'status'), '0');
  assert.match(out, /vblk: write status=0 flush status=0/);
  assert.match(out, /vblk: readback match=1/);
  assert.match(out, /vblk: oob status=1/, 'a read past the end is an I/O error');
  assert.match(out, /vblk: irq reads=8 irqs=(\d+)/);
  assert.ok(Number(/irqs=(\d+)/.exec(out)![1]) >= 8, 'every interrupt-driven request completed with an interrupt');

  const after = fs.readFileSync(disk);
  const at = WSECTOR * 512;
  assert.equal(sha(after.subarray(at, at + 8192)), sha(pattern()), 'the written sectors hold the pattern');
  assert.equal(sha(after.subarray(0, at)), sha(content.subarray(0, at)), 'sectors before are untouched');
  assert.equal(sha(after.subarray(at + 8192)), sha(content.subarray(at + 8192)), 'sectors after are untouched');
});

test('read-only drive: guest sees RO, its write fails with IOERR, the file is unchanged', { skip }, async () => {
  const kernel = buildGuest('virtio-blk');
  const disk = path.join(dir, 'ro.img');
  const content = randomBytes(DISK);
  fs.writeFileSync(disk, content);
  const r = await runVmm(guestConfig(kernel, {
    bootArgs: `vblk.wsector=${WSECTOR} vblk.seed=${SEED}`,
    drives: [{ drive_id: 'vdb', path_on_host: disk, is_read_only: true }],
  }), dir);
  assert.equal(r.code, 0, `exit ${r.code}\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /vblk: capacity=\d+ ro=1/);
  assert.match(r.stdout, /vblk: id=vdb\r?\n/, 'the serial defaults to the drive id');
  assert.equal(field(r.stdout, 'vblk: ', 'read-hash'), fnv1a64(content));
  assert.match(r.stdout, /vblk: write status=1 /);
  assert.doesNotMatch(r.stdout, /readback/);
  assert.equal(sha(fs.readFileSync(disk)), sha(content));
});
