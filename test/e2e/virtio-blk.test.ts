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

/**
 * Where the request queue is served: on the vCPU thread that takes the notify exit (the
 * default, src/vmm/virtio/blk-fast.ts; interrupts raised there and the status registers answered
 * there too, interrupt-state.ts — or handed to the device thread), on the device thread, or on
 * an I/O thread woken by an ioeventfd (blk-iothread.ts). The same guest must see the same disk each way.
 */
const SERVING: Array<[string, Record<string, string>]> = [
  ['the vCPU thread', {}],
  ['the vCPU thread, with its interrupts raised and acknowledged on the device thread', { HANGAR_VIRTIO_IRQ_FAST: '0' }],
  ['the device thread', { HANGAR_VIRTIO_BLK_FAST: '0' }],
  ['an I/O thread', { HANGAR_VIRTIO_BLK_IOTHREAD: '1' }],
];

for (const [where, env] of SERVING) test(`guest reads the disk (hash matches the file) and its writes land in the file — queue served on ${where}`, { skip }, async () => {
  const kernel = buildGuest('virtio-blk');
  const disk = path.join(dir, 'rw.img');
  const content = randomBytes(DISK);
  fs.writeFileSync(disk, content);
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  let r: Awaited<ReturnType<typeof runVmm>>;
  try {
    r = await runVmm(guestConfig(kernel, {
      bootArgs: `vblk.wsector=${WSECTOR} vblk.seed=${SEED}`,
      drives: [{ drive_id: 'vda', path_on_host: disk, serial: 'HANGAR-E2E-1' }],
    }), dir);
  } finally {
    for (const [k, v] of Object.entries(saved)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }
  }
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
  const irqs = Number(/irqs=(\d+)/.exec(out)![1]);
  // An I/O thread completes requests while the guest runs on, so two interrupts may merge into
  // one (as virtio allows); the other two raise each one before the guest resumes.
  if (env.HANGAR_VIRTIO_BLK_IOTHREAD) assert.ok(irqs >= 1, 'interrupt-driven requests raised interrupts');
  else assert.ok(irqs >= 8, 'every interrupt-driven request completed with an interrupt');

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
