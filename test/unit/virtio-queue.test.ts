import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Virtqueue, VirtqueueError, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../src/vmm/virtio/queue.js';
import { TestMemory } from '../helpers/virtio-fixtures.js';

const MEM = 1 << 20;
const DESC = 0x1000;
const AVAIL = 0x2000;
const USED = 0x3000;
const DATA = 0x10000;

/** A queue of `size` over fresh memory, with helpers to lay out descriptors by hand. */
function setup(size = 8, features = { eventIdx: false, indirect: true }) {
  const mem = new TestMemory(MEM);
  const q = new Virtqueue(0, 256, mem);
  q.configure({ size, descAddr: BigInt(DESC), driverAddr: BigInt(AVAIL), deviceAddr: BigInt(USED) }, features);
  let availIdx = 0;
  const desc = (i: number, addr: number | bigint, len: number, flags: number, next = 0, table = DESC) => {
    mem.writeU64(table + 16 * i, BigInt(addr));
    mem.writeU32(table + 16 * i + 8, len);
    mem.writeU16(table + 16 * i + 12, flags);
    mem.writeU16(table + 16 * i + 14, next);
  };
  const publish = (head: number) => {
    mem.writeU16(AVAIL + 4 + 2 * (availIdx % size), head);
    availIdx = (availIdx + 1) & 0xffff;
    mem.writeU16(AVAIL + 2, availIdx);
  };
  return { mem, q, desc, publish };
}

function reasonOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof VirtqueueError, `expected VirtqueueError, got ${String(e)}`);
    return String(e.details?.reason);
  }
  assert.fail('expected a VirtqueueError');
}

test('walks a chain into readable and writable streams that span descriptors', () => {
  const { mem, q, desc, publish } = setup();
  mem.bytes.set([1, 2, 3], DATA);
  mem.bytes.set([4, 5], DATA + 0x100);
  desc(0, DATA, 3, VIRTQ_DESC_F_NEXT, 5);
  desc(5, DATA + 0x100, 2, VIRTQ_DESC_F_NEXT, 2);
  desc(2, DATA + 0x200, 4, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 3);
  desc(3, DATA + 0x300, 4, VIRTQ_DESC_F_WRITE);
  publish(0);
  assert.equal(q.pending(), 1);
  const c = q.pop()!;
  assert.equal(c.head, 0);
  assert.equal(c.readableLength, 5);
  assert.equal(c.writableLength, 8);
  const got = new Uint8Array(4);
  assert.equal(c.read(1, got), 4);
  assert.deepEqual([...got], [2, 3, 4, 5]);
  assert.equal(c.write(2, Uint8Array.of(9, 9, 9, 9, 9, 9, 9)), 6);
  assert.deepEqual([...mem.bytes.subarray(DATA + 0x200, DATA + 0x204)], [0, 0, 9, 9]);
  assert.deepEqual([...mem.bytes.subarray(DATA + 0x300, DATA + 0x304)], [9, 9, 9, 9]);
  assert.equal(q.pop(), null);
});

test('used ring: element then index, and NO_INTERRUPT suppresses interrupts', () => {
  const { mem, q, desc, publish } = setup();
  desc(0, DATA, 16, VIRTQ_DESC_F_WRITE);
  publish(0);
  q.pushUsed(q.pop()!.head, 16);
  assert.equal(mem.readU16(USED + 2), 1);
  assert.equal(mem.readU32(USED + 4), 0);
  assert.equal(mem.readU32(USED + 8), 16);
  assert.equal(q.needsInterrupt(), true);
  assert.equal(q.needsInterrupt(), false, 'nothing new since the last decision');
  mem.writeU16(AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
  publish(0);
  q.pushUsed(q.pop()!.head, 1);
  assert.equal(q.needsInterrupt(), false);
});

test('event index: interrupt only when used_event is crossed, and avail_event follows us', () => {
  const size = 8;
  const { mem, q, desc, publish } = setup(size, { eventIdx: true, indirect: false });
  desc(0, DATA, 16, VIRTQ_DESC_F_WRITE);
  const usedEventAt = AVAIL + 4 + 2 * size;
  mem.writeU16(usedEventAt, 2); // driver wants to hear when entry #2 is used (the third)
  for (let i = 0; i < 3; i++) publish(0);
  q.pushUsed(q.pop()!.head, 0);
  assert.equal(q.needsInterrupt(), false);
  q.pushUsed(q.pop()!.head, 0);
  assert.equal(q.needsInterrupt(), false);
  q.pushUsed(q.pop()!.head, 0);
  assert.equal(q.needsInterrupt(), true);
  assert.equal(mem.readU16(USED + 4 + 8 * size), 3, 'avail_event = next index we will read');
});

test('available index wraps around 65535 without losing chains', () => {
  const { q, desc, publish } = setup(4, { eventIdx: false, indirect: false });
  desc(0, DATA, 8, VIRTQ_DESC_F_WRITE);
  let n = 0;
  for (let i = 0; i < 65540; i++) {
    publish(0);
    const c = q.pop();
    assert.ok(c);
    q.pushUsed(c.head, 8);
    n++;
  }
  assert.equal(n, 65540);
  assert.equal(q.state().lastAvail, 65540 & 0xffff);
});

test('indirect table is followed, flags of the referring descriptor ignored', () => {
  const { mem, q, desc, publish } = setup();
  const table = DATA + 0x1000;
  desc(0, DATA, 2, VIRTQ_DESC_F_NEXT, 1, table);
  desc(1, DATA + 0x40, 3, VIRTQ_DESC_F_WRITE, 0, table);
  mem.bytes.set([7, 8], DATA);
  desc(4, table, 32, VIRTQ_DESC_F_INDIRECT);
  publish(4);
  const c = q.pop()!;
  assert.equal(c.head, 4);
  assert.equal(c.readableLength, 2);
  assert.equal(c.writableLength, 3);
});

test('hostile chains are refused with a named reason, never a crash', () => {
  const cases: Array<[string, (s: ReturnType<typeof setup>) => void]> = [
    ['buffer-outside-memory', ({ desc, publish }) => { desc(0, MEM - 4, 8, 0); publish(0); }],
    ['buffer-outside-memory', ({ desc, publish }) => { desc(0, DATA, 0xffffffff, VIRTQ_DESC_F_WRITE); publish(0); }],
    ['buffer-outside-memory', ({ desc, publish }) => { desc(0, 0xfffffffffffffff0n, 0x20, 0); publish(0); }],
    ['chain-loop', ({ desc, publish }) => { desc(0, DATA, 1, VIRTQ_DESC_F_NEXT, 1); desc(1, DATA, 1, VIRTQ_DESC_F_NEXT, 0); publish(0); }],
    ['chain-loop', ({ desc, publish }) => { desc(3, DATA, 1, VIRTQ_DESC_F_NEXT, 3); publish(3); }],
    ['next-index', ({ desc, publish }) => { desc(0, DATA, 1, VIRTQ_DESC_F_NEXT, 8); publish(0); }],
    ['head-index', ({ publish }) => { publish(9); }],
    ['avail-index', ({ mem }) => { mem.writeU16(AVAIL + 2, 9); }],
    ['readable-after-writable', ({ desc, publish }) => { desc(0, DATA, 1, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1); desc(1, DATA, 1, 0); publish(0); }],
    ['indirect-nested', ({ desc, publish }) => { desc(0, DATA + 0x1000, 16, VIRTQ_DESC_F_INDIRECT); desc(0, DATA + 0x2000, 16, VIRTQ_DESC_F_INDIRECT, 0, DATA + 0x1000); publish(0); }],
    ['indirect-next', ({ desc, publish }) => { desc(0, DATA + 0x1000, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1); publish(0); }],
    ['indirect-length', ({ desc, publish }) => { desc(0, DATA + 0x1000, 17, VIRTQ_DESC_F_INDIRECT); publish(0); }],
    ['indirect-length', ({ desc, publish }) => { desc(0, DATA + 0x1000, 0x10000000, VIRTQ_DESC_F_INDIRECT); publish(0); }],
    ['indirect-outside-memory', ({ desc, publish }) => { desc(0, MEM - 16, 32, VIRTQ_DESC_F_INDIRECT); publish(0); }],
    ['chain-loop', ({ desc, publish }) => {
      const t = DATA + 0x1000;
      desc(0, DATA, 1, VIRTQ_DESC_F_NEXT, 1, t);
      desc(1, DATA, 1, VIRTQ_DESC_F_NEXT, 0, t);
      desc(0, t, 32, VIRTQ_DESC_F_INDIRECT);
      publish(0);
    }],
  ];
  for (const [reason, arrange] of cases) {
    const s = setup();
    arrange(s);
    assert.equal(reasonOf(() => s.q.pop()), reason);
  }
});

test('indirect descriptors are refused unless negotiated', () => {
  const { q, desc, publish } = setup(8, { eventIdx: false, indirect: false });
  desc(0, DATA + 0x1000, 16, VIRTQ_DESC_F_INDIRECT);
  publish(0);
  assert.equal(reasonOf(() => q.pop()), 'indirect-not-negotiated');
});

test('ring layout is checked when the queue is configured', () => {
  const mem = new TestMemory(MEM);
  const q = new Virtqueue(1, 256, mem);
  const f = { eventIdx: false, indirect: false };
  const cfg = { size: 8, descAddr: BigInt(DESC), driverAddr: BigInt(AVAIL), deviceAddr: BigInt(USED) };
  assert.equal(reasonOf(() => q.configure({ ...cfg, size: 6 }, f)), 'queue-size');
  assert.equal(reasonOf(() => q.configure({ ...cfg, size: 512 }, f)), 'queue-size');
  assert.equal(reasonOf(() => q.configure({ ...cfg, size: 0 }, f)), 'queue-size');
  assert.equal(reasonOf(() => q.configure({ ...cfg, descAddr: BigInt(DESC + 8) }, f)), 'ring-alignment');
  assert.equal(reasonOf(() => q.configure({ ...cfg, deviceAddr: BigInt(MEM - 16) }, f)), 'ring-outside-memory');
  assert.equal(reasonOf(() => q.configure({ ...cfg, descAddr: 1n << 62n }, f)), 'ring-outside-memory');
  assert.equal(q.ready, false);
  q.configure(cfg, f);
  assert.equal(q.ready, true);
});
