/**
 * ioctls are repeated when a signal interrupted them (src/kvm/libc.ts): V8's
 * profiler (SIGPROF) made KVM_CREATE_VM fail with EINTR under `--cpu-prof`.
 * errno is set through koffi, as a real interrupted call leaves it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import koffi from 'koffi';
import { retryingEintr } from '../../src/kvm/libc.js';

const EINTR = 4;
const EAGAIN = 11;

test('a call interrupted by signals is made again until it gives an answer', () => {
  let calls = 0;
  const call = retryingEintr((x: number) => {
    calls++;
    if (calls < 3) { koffi.errno(EINTR); return -1; }
    return x * 2;
  });
  assert.equal(call(21), 42);
  assert.equal(calls, 3);
});

test('any other failure is handed back at once, with its errno', () => {
  let calls = 0;
  const call = retryingEintr(() => { calls++; koffi.errno(EAGAIN); return -1; });
  assert.equal(call(), -1);
  assert.equal(calls, 1);
  assert.equal(koffi.errno(), EAGAIN);
});
