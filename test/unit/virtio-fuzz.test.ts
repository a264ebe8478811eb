/**
 * Randomised hostile drivers: after a normal setup, the descriptor table and
 * available ring are filled with random (but seeded, so reproducible)
 * values biased towards plausible ones, and the queue is kicked. Whatever
 * comes out, the transport must not throw, a read-only disk must not change,
 * and the device must end either broken (DEVICE_NEEDS_RESET) or with every
 * posted chain returned.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { REG, STATUS, VirtioMmioDevice, type VirtioDevice } from '../../src/vmm/virtio/mmio.js';
import { VirtioBlock } from '../../src/vmm/virtio/blk.js';
import { VirtioRng } from '../../src/vmm/virtio/rng.js';
import { VirtioNet, type FrameBackend } from '../../src/vmm/virtio/net.js';
import { RecordingIrq, TestDriver, TestMemory } from '../helpers/virtio-fixtures.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-virtio-fuzz-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const disk = path.join(dir, 'ro.img');
fs.writeFileSync(disk, randomBytes(64 * 1024));
const diskHash = createHash('sha256').update(fs.readFileSync(disk)).digest('hex');

/** xorshift64*: a small seeded generator so a failure can be replayed from its seed. */
function rng(seed: number) {
  let s = BigInt(seed) | 1n;
  return (n: number): number => {
    s ^= s >> 12n;
    s ^= (s << 25n) & 0xffffffffffffffffn;
    s ^= s >> 27n;
    return Number(((s * 2685821657736338717n) & 0xffffffffffffffffn) >> 11n) % n;
  };
}

const MEM = 256 * 1024;
const SIZE = 8;

class SinkBackend implements FrameBackend {
  inbox: Uint8Array[] = [];
  recv(buf: Uint8Array): number | null { const f = this.inbox.shift(); if (!f) return null; buf.set(f.subarray(0, buf.length)); return Math.min(f.length, buf.length); }
  send(): boolean { return true; }
  watch(): void {}
  unwatch(): void {}
  close(): void {}
}

function fuzzOne(seed: number, make: () => VirtioDevice, queues: number): void {
  const r = rng(seed);
  const mem = new TestMemory(MEM);
  const model = make();
  const dev = new VirtioMmioDevice(model, mem, new RecordingIrq());
  const drv = new TestDriver(dev, mem);
  drv.start(queues, SIZE, (f) => (r(2) ? f : f & ~(1n << 29n)));
  const addr = (): bigint => {
    switch (r(16)) {
      case 0: return BigInt(r(MEM));                       // anywhere in RAM
      case 1: return BigInt(MEM - r(64));                  // at the very end
      case 2: return BigInt(r(2 ** 30)) * 4096n;           // far beyond RAM
      case 3: return 0xffffffffffffff00n + BigInt(r(256)); // wraps around 2^64
      default: return BigInt(0x20000 + r(0x10000));        // data area
    }
  };
  const len = (): number => (r(8) ? [1, 16, 512, 4096, r(8192)][r(5)]! : [0, 0xffffffff, r(70000), r(2 ** 32)][r(4)]!);
  const flags = (): number => (r(8) ? r(4) : r(8)); // mostly NEXT/WRITE, sometimes INDIRECT
  for (let qi = 0; qi < queues; qi++) {
    const q = drv.queues[qi]!;
    for (let i = 0; i < SIZE; i++) {
      drv.writeDesc(qi, i, { addr: addr(), len: len(), flags: flags(), next: r(16) ? r(SIZE) : r(0x10000) }, q.desc);
    }
    // Sometimes point one descriptor at a random indirect table in the data area.
    if (r(4) === 0) {
      const table = 0x30000 + 16 * r(64);
      for (let i = 0; i < 4; i++) drv.writeDesc(qi, i, { addr: addr(), len: len(), flags: flags(), next: r(6) }, table);
      drv.writeDesc(qi, r(SIZE), { addr: BigInt(table), len: 16 * (1 + r(6)), flags: 4 | (r(2) ? 1 : 0), next: r(SIZE) });
    }
    const posted = r(16) ? 1 + r(SIZE) : r(0x10000);
    for (let i = 0; i < Math.min(posted, SIZE); i++) mem.writeU16(q.avail + 4 + 2 * i, r(32) ? r(SIZE) : r(0x10000));
    mem.writeU16(q.avail + 2, posted & 0xffff);
  }
  assert.doesNotThrow(() => {
    for (let qi = 0; qi < queues; qi++) drv.kick(qi);
    if (model instanceof VirtioNet) {
      (model.backend as SinkBackend).inbox.push(randomBytes(r(3000)));
      model.receive();
    }
  }, `seed ${seed}`);
  const broken = (drv.read(REG.STATUS) & STATUS.DEVICE_NEEDS_RESET) !== 0;
  if (!broken) {
    // Every chain the driver posted on the queues we kicked came back (receive may wait for frames).
    for (let qi = model instanceof VirtioNet ? 1 : 0; qi < queues; qi++) {
      const q = drv.queues[qi]!;
      assert.equal(mem.readU16(q.used + 2), mem.readU16(q.avail + 2), `seed ${seed}: queue ${qi} used index`);
    }
  } else {
    assert.ok(dev.lastError?.details?.reason, `seed ${seed}: a broken device says why`);
  }
  dev.close();
}

test('random hostile rings against virtio-blk (read-only disk stays intact)', () => {
  for (let seed = 1; seed <= 400; seed++) fuzzOne(seed, () => new VirtioBlock({ id: 'fz', path: disk, readOnly: true }), 1);
  assert.equal(createHash('sha256').update(fs.readFileSync(disk)).digest('hex'), diskHash);
});

test('random hostile rings against virtio-rng', () => {
  for (let seed = 1000; seed < 1400; seed++) fuzzOne(seed, () => new VirtioRng(), 1);
});

test('random hostile rings against virtio-net', () => {
  for (let seed = 2000; seed < 2400; seed++) fuzzOne(seed, () => new VirtioNet({ id: 'fz', mac: '52:54:00:00:00:01' }, new SinkBackend()), 2);
});
