/**
 * Fuzzing virtio-mmio register sequences: a hostile driver writes random
 * values of random sizes at random register offsets (biased towards the
 * real registers, in orders that half follow the init sequence: status
 * bits, feature words, queue selection, ring addresses inside and outside
 * RAM, QUEUE_READY, notifies, interrupt acks, config space) and reads
 * between them, against virtio-blk on a read-only disk, virtio-net on a
 * frame sink and virtio-rng. No access may throw out of the transport, the
 * identification registers keep their values, and the read-only disk stays
 * byte-identical. Seeds are fixed; HANGAR_FUZZ_SCALE=N runs N times as many.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { REG, VirtioMmioDevice, type VirtioDevice } from '../../src/vmm/virtio/mmio.js';
import { VirtioBlock } from '../../src/vmm/virtio/blk.js';
import { VirtioNet, type FrameBackend } from '../../src/vmm/virtio/net.js';
import { VirtioRng } from '../../src/vmm/virtio/rng.js';
import { RecordingIrq, TestMemory } from '../helpers/virtio-fixtures.js';
import { forSeeds, type Rng } from '../helpers/fuzz.js';

const MEM = 256 * 1024;
let dir = '';
let disk = '';
let diskHash = '';
const sha = (p: string) => createHash('sha256').update(fs.readFileSync(p)).digest('hex');

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-mmio-fuzz-'));
  disk = path.join(dir, 'ro.img');
  fs.writeFileSync(disk, Buffer.alloc(64 * 1024, 0x5a));
  diskHash = sha(disk);
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

class SinkBackend implements FrameBackend {
  recv(): number | null { return null; }
  send(): boolean { return true; }
  watch(): void {}
  unwatch(): void {}
  close(): void {}
}

const REGS = Object.values(REG);

function offset(r: Rng): number {
  switch (r.int(8)) {
    case 0: return r.int(0x1000);                 // anywhere in the slot
    case 1: return 0x100 + r.int(0x100);          // device config space
    case 2: return r.pick(REGS) + 1 + r.int(3);   // unaligned, inside a register
    default: return r.pick(REGS);
  }
}

function value(r: Rng, size: number): Uint8Array {
  const d = new Uint8Array(size);
  const dv = new DataView(d.buffer);
  switch (r.int(6)) {
    case 0: d.fill(0xff); break;
    case 1: if (size >= 4) dv.setUint32(0, r.int(MEM + 0x1000), true); else d[0] = r.u32() & 0xff; break; // an address near RAM
    case 2: if (size >= 4) dv.setUint32(0, r.pick([0, 1, 2, 4, 8, 0x80, 0x40, 0xf, 0x8f]), true); else d[0] = r.int(16); break; // status bits, small values
    default: for (let i = 0; i < size; i++) d[i] = r.u32() & 0xff;
  }
  return d;
}

const MAGIC = 0x74726976; // "virt"

function fuzzOne(r: Rng, make: () => VirtioDevice): void {
  const mem = new TestMemory(MEM);
  const dev = new VirtioMmioDevice(make(), mem, new RecordingIrq());
  const word = (off: number): number => { const d = new Uint8Array(4); dev.mmioRead(off, d); return new DataView(d.buffer).getUint32(0, true); };
  try {
    for (let i = 0; i < 400; i++) {
      const size = r.pick([4, 4, 4, 1, 2, 8]);
      const off = offset(r);
      if (r.int(4) === 0) dev.mmioRead(off, new Uint8Array(size));
      else dev.mmioWrite(off, value(r, size));
    }
    assert.equal(word(REG.MAGIC), MAGIC, 'magic register unchanged');
    assert.equal(word(REG.VERSION), 2, 'virtio-mmio version 2');
  } finally {
    dev.close();
  }
}

test('random register sequences against virtio-blk (read-only disk unchanged)', async () => {
  await forSeeds(0xb1c0, 150, (r) => fuzzOne(r, () => new VirtioBlock({ id: 'fz', path: disk, readOnly: true })));
  assert.equal(sha(disk), diskHash);
});

test('random register sequences against virtio-net', async () => {
  await forSeeds(0x2e70, 150, (r) => fuzzOne(r, () => new VirtioNet({ id: 'fz', mac: '02:00:00:00:00:01' }, new SinkBackend())));
});

test('random register sequences against virtio-rng', async () => {
  await forSeeds(0x5ee0, 150, (r) => fuzzOne(r, () => new VirtioRng()));
});
