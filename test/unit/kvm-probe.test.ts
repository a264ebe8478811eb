/**
 * probeKvm() against this host's real /dev/kvm: it never throws, and its
 * answer is consistent (absent ⇒ not present; present ⇒ a ring-0 loop time,
 * and kind agrees with fullSystem).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { probeKvm, EMULATED_THRESHOLD_MS } from '../../src/kvm/probe.js';
import { Kvm } from '../../src/kvm/kvm.js';
import { KvmError } from '../../src/kvm/errors.js';

test('probeKvm classifies this host consistently', async () => {
  const p = await probeKvm();
  assert.equal(typeof p.detail, 'string');
  if (!fs.existsSync('/dev/kvm')) {
    assert.deepEqual([p.present, p.fullSystem, p.kind], [false, false, 'absent']);
    return;
  }
  assert.equal(p.present, true);
  assert.equal(p.fullSystem, p.kind === 'hardware');
  if (p.ring0LoopMs !== undefined) assert.equal(p.kind === 'hardware', p.ring0LoopMs <= EMULATED_THRESHOLD_MS);
});

test('KVM errors are values naming the ioctl and errno', { skip: fs.existsSync('/dev/kvm') ? false : 'no /dev/kvm' }, () => {
  assert.throws(() => Kvm.open('/dev/null-does-not-exist'), (e: unknown) => e instanceof KvmError && e.errnoName === 'ENOENT' && e.code === 'UNAVAILABLE');
  const kvm = Kvm.open();
  try {
    const vm = kvm.createVm();
    try {
      // Slot memory at a host address that is not mapped: KVM refuses it (EFAULT or EINVAL).
      assert.throws(() => vm.setUserMemoryRegion(0, 0, 4096, 1), (e: unknown) => e instanceof KvmError && e.op === 'KVM_SET_USER_MEMORY_REGION' && /^E[A-Z]+$/.test(e.errnoName));
    } finally {
      vm.close();
    }
  } finally {
    kvm.close();
  }
});

test('eventfds wake the event loop: each signal burst runs the callback', async () => {
  const { createEventFd, watchEventFd, signalEventFd } = await import('../../src/kvm/eventfd.js');
  const { libc } = await import('../../src/kvm/libc.js');
  const fd = createEventFd();
  let n = 0;
  const w = watchEventFd(fd, () => { n++; });
  try {
    signalEventFd(fd);
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(n, 1);
    signalEventFd(fd);
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(n, 2);
  } finally {
    w.close();
    libc.close(fd);
  }
});
