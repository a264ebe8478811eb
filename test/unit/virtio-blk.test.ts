import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { REG, STATUS, VirtioMmioDevice } from '../../src/vmm/virtio/mmio.js';
import { VirtioBlock, VIRTIO_BLK_F, VIRTIO_BLK_S, VIRTIO_BLK_T } from '../../src/vmm/virtio/blk.js';
import { DATA_BASE, RecordingIrq, TestDriver, TestMemory } from '../helpers/virtio-fixtures.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-virtio-blk-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const DISK_BYTES = 1 << 20;
const HDR = DATA_BASE;
const BUF = DATA_BASE + 0x1000;
const STATUS_AT = DATA_BASE + 0x100;

function sha(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

let n = 0;
function rig(opts: { readOnly?: boolean; serial?: string } = {}) {
  const file = path.join(dir, `disk${n++}.img`);
  const content = randomBytes(DISK_BYTES);
  fs.writeFileSync(file, content);
  const mem = new TestMemory(4 << 20);
  const blk = new VirtioBlock({ id: 'vda', path: file, ...opts });
  const dev = new VirtioMmioDevice(blk, mem, new RecordingIrq());
  const drv = new TestDriver(dev, mem);
  drv.start(1, 16);
  /** Posts one request; returns [status byte, used length]. */
  const request = (type: number, sector: bigint, data: Array<{ addr: number; len: number }>, opt: { statusLen?: number } = {}): [number, number] => {
    mem.writeU32(HDR, type);
    mem.writeU32(HDR + 4, 0);
    mem.writeU64(HDR + 8, sector);
    const statusLen = opt.statusLen ?? 1;
    mem.bytes.fill(0xee, STATUS_AT, STATUS_AT + 16);
    const write = type !== VIRTIO_BLK_T.OUT;
    drv.addChain(0, [
      { addr: HDR, len: 16 },
      ...data.map((d) => ({ ...d, write })),
      ...(statusLen > 0 ? [{ addr: STATUS_AT, len: statusLen, write: true }] : []),
    ]);
    drv.kick(0);
    const used = drv.takeUsed(0);
    assert.equal(used.length, 1);
    return [mem.bytes[STATUS_AT + statusLen - 1]!, used[0]!.len];
  };
  return { file, content, mem, blk, dev, drv, request, close: () => dev.close() };
}

test('capacity, seg_max, blk_size in config; FLUSH offered, RO only when read-only', () => {
  const r = rig();
  const cfg = new DataView(r.drv.readConfig(0, 24).buffer);
  assert.equal(cfg.getBigUint64(0, true), BigInt(DISK_BYTES / 512));
  assert.equal(cfg.getUint32(12, true), 254);
  assert.equal(cfg.getUint32(20, true), 512);
  const f = r.drv.deviceFeatures();
  assert.ok(f & (1n << VIRTIO_BLK_F.FLUSH));
  assert.equal(f & (1n << VIRTIO_BLK_F.RO), 0n);
  r.close();
  const ro = rig({ readOnly: true });
  assert.ok(ro.drv.deviceFeatures() & (1n << VIRTIO_BLK_F.RO));
  ro.close();
});

test('IN reads sectors into buffers split across descriptors (checksum against the file)', () => {
  const r = rig();
  const [st, len] = r.request(VIRTIO_BLK_T.IN, 3n, [{ addr: BUF, len: 1024 }, { addr: BUF + 0x10000, len: 3072 }]);
  assert.equal(st, VIRTIO_BLK_S.OK);
  assert.equal(len, 4096 + 1);
  const got = Buffer.concat([r.mem.slice(BUF, 1024), r.mem.slice(BUF + 0x10000, 3072)]);
  assert.equal(sha(got), sha(r.content.subarray(3 * 512, 3 * 512 + 4096)));
  r.close();
});

test('OUT writes sectors to the file; a later IN reads them back', () => {
  const r = rig();
  const data = randomBytes(8192);
  r.mem.bytes.set(data, BUF);
  const [st, len] = r.request(VIRTIO_BLK_T.OUT, 100n, [{ addr: BUF, len: 4096 }, { addr: BUF + 4096, len: 4096 }]);
  assert.equal(st, VIRTIO_BLK_S.OK);
  assert.equal(len, 1);
  const onDisk = fs.readFileSync(r.file);
  assert.equal(sha(onDisk.subarray(100 * 512, 100 * 512 + 8192)), sha(data));
  assert.equal(sha(onDisk.subarray(0, 100 * 512)), sha(r.content.subarray(0, 100 * 512)), 'bytes before untouched');
  assert.equal(sha(onDisk.subarray(100 * 512 + 8192)), sha(r.content.subarray(100 * 512 + 8192)), 'bytes after untouched');
  r.mem.bytes.fill(0, BUF + 0x20000, BUF + 0x22000);
  assert.equal(r.request(VIRTIO_BLK_T.IN, 100n, [{ addr: BUF + 0x20000, len: 8192 }])[0], VIRTIO_BLK_S.OK);
  assert.equal(sha(r.mem.slice(BUF + 0x20000, 8192)), sha(data));
  assert.equal(r.dev.metrics().write_bytes, 8192);
  r.close();
});

test('FLUSH succeeds; GET_ID returns the serial padded with zeros', () => {
  const r = rig({ serial: 'HANGAR-SERIAL-1' });
  assert.deepEqual(r.request(VIRTIO_BLK_T.FLUSH, 0n, []), [VIRTIO_BLK_S.OK, 1]);
  r.mem.bytes.fill(0xaa, BUF, BUF + 20);
  const [st, len] = r.request(VIRTIO_BLK_T.GET_ID, 0n, [{ addr: BUF, len: 20 }]);
  assert.equal(st, VIRTIO_BLK_S.OK);
  assert.equal(len, 21);
  const id = Buffer.from(r.mem.slice(BUF, 20));
  assert.equal(id.toString('ascii').replace(/\0+$/, ''), 'HANGAR-SERIAL-1');
  assert.equal(id[19], 0);
  r.close();
});

test('read-only drive: OUT fails with IOERR and the file is unchanged; IN works', () => {
  const r = rig({ readOnly: true });
  r.mem.bytes.fill(0x55, BUF, BUF + 512);
  assert.equal(r.request(VIRTIO_BLK_T.OUT, 0n, [{ addr: BUF, len: 512 }])[0], VIRTIO_BLK_S.IOERR);
  assert.equal(sha(fs.readFileSync(r.file)), sha(r.content));
  assert.equal(r.request(VIRTIO_BLK_T.IN, 0n, [{ addr: BUF, len: 512 }])[0], VIRTIO_BLK_S.OK);
  assert.equal(sha(r.mem.slice(BUF, 512)), sha(r.content.subarray(0, 512)));
  r.close();
});

test('requests outside the disk or of partial sectors fail with IOERR; unknown types with UNSUPP', () => {
  const r = rig();
  const last = BigInt(DISK_BYTES / 512);
  assert.equal(r.request(VIRTIO_BLK_T.IN, last, [{ addr: BUF, len: 512 }])[0], VIRTIO_BLK_S.IOERR, 'one past the end');
  assert.equal(r.request(VIRTIO_BLK_T.IN, last - 1n, [{ addr: BUF, len: 1024 }])[0], VIRTIO_BLK_S.IOERR, 'straddles the end');
  assert.equal(r.request(VIRTIO_BLK_T.IN, last - 1n, [{ addr: BUF, len: 512 }])[0], VIRTIO_BLK_S.OK, 'the last sector');
  assert.equal(r.request(VIRTIO_BLK_T.OUT, 0xffffffffffffffffn, [{ addr: BUF, len: 512 }])[0], VIRTIO_BLK_S.IOERR, 'sector near 2^64');
  assert.equal(r.request(VIRTIO_BLK_T.IN, 0n, [{ addr: BUF, len: 100 }])[0], VIRTIO_BLK_S.IOERR, 'not whole sectors');
  assert.equal(r.request(99, 0n, [])[0], VIRTIO_BLK_S.UNSUPP);
  assert.equal(sha(fs.readFileSync(r.file)), sha(r.content));
  assert.equal(r.dev.metrics().broken, 0, 'request errors do not break the device');
  r.close();
});

test('a request with no writable status byte is handed back untouched; the device keeps working', () => {
  const r = rig();
  const [, len] = r.request(VIRTIO_BLK_T.OUT, 0n, [{ addr: BUF, len: 512 }], { statusLen: 0 });
  assert.equal(len, 0);
  assert.equal(sha(fs.readFileSync(r.file)), sha(r.content));
  assert.equal(r.request(VIRTIO_BLK_T.FLUSH, 0n, [])[0], VIRTIO_BLK_S.OK);
  r.close();
});

test('the status byte is the last byte of the writable area', () => {
  const r = rig();
  const [st, len] = r.request(VIRTIO_BLK_T.FLUSH, 0n, [], { statusLen: 4 });
  assert.equal(st, VIRTIO_BLK_S.OK);
  assert.equal(len, 1);
  assert.deepEqual([...r.mem.slice(STATUS_AT, 4)].slice(0, 3), [0xee, 0xee, 0xee]);
  r.close();
});

test('a data descriptor pointing outside guest memory breaks the device without touching the file', () => {
  const r = rig();
  r.mem.writeU32(HDR, VIRTIO_BLK_T.IN);
  r.mem.writeU64(HDR + 8, 0n);
  r.drv.addChain(0, [{ addr: HDR, len: 16 }, { addr: (4 << 20) - 256, len: 512, write: true }, { addr: STATUS_AT, len: 1, write: true }]);
  r.drv.kick(0);
  assert.ok(r.drv.read(REG.STATUS) & STATUS.DEVICE_NEEDS_RESET);
  assert.equal(r.dev.lastError?.details?.reason, 'buffer-outside-memory');
  assert.equal(sha(fs.readFileSync(r.file)), sha(r.content));
  r.close();
});

test('a missing backing file is a NOT_FOUND error; a bad serial INVALID_ARGUMENT', () => {
  assert.throws(() => new VirtioBlock({ id: 'x', path: path.join(dir, 'nope.img') }), { code: 'NOT_FOUND' });
  const file = path.join(dir, 'small.img');
  fs.writeFileSync(file, Buffer.alloc(4096));
  assert.throws(() => new VirtioBlock({ id: 'x', path: file, serial: 'x'.repeat(21) }), { code: 'INVALID_ARGUMENT' });
});
