/**
 * The virtio-mmio interrupt status in shared memory (src/vmm/virtio/interrupt-state.ts): the
 * transport on the device thread and a second VirtioInterruptState over the same words, as a
 * vCPU thread holds it, must agree on the status and never leave the line at the wrong level —
 * including when both change it at once from two threads.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { INT_CONFIG, INT_VRING, REG, VirtioMmioDevice } from '../../src/vmm/virtio/mmio.js';
import { VirtioInterruptState, type LineDriver } from '../../src/vmm/virtio/interrupt-state.js';
import { VirtioRng } from '../../src/vmm/virtio/rng.js';
import { RecordingIrq, TestDriver, TestMemory } from '../helpers/virtio-fixtures.js';

/** A line that records every change it is asked for. */
class Line implements LineDriver {
  level = false;
  sets: boolean[] = [];
  pulses = 0;
  set(level: boolean): void { this.sets.push(level); this.level = level; }
  pulse(): void { this.pulses++; }
}

test('level: the line goes up once, stays up while any bit is pending, drops when the last is acknowledged', () => {
  const line = new Line();
  const st = new VirtioInterruptState(line, false);
  st.raise(INT_VRING);
  st.raise(INT_VRING);
  assert.deepEqual(line.sets, [true], 'a second raise while high drives nothing');
  st.raise(INT_CONFIG);
  st.ack(INT_VRING);
  assert.equal(st.status, INT_CONFIG);
  assert.equal(line.level, true, 'the config bit still pends');
  st.ack(INT_CONFIG);
  assert.equal(st.status, 0);
  assert.deepEqual(line.sets, [true, false]);
  st.ack(INT_VRING);
  assert.deepEqual(line.sets, [true, false], 'acknowledging nothing pending drives nothing');
  assert.equal(st.raised, 3);
  st.assign(INT_VRING);
  assert.equal(line.level, true, 'a restored pending bit raises the line');
  st.assign(0);
  assert.equal(line.level, false, 'a reset lowers it');
});

test('edge: every raise pulses; acknowledging drives nothing', () => {
  const line = new Line();
  const st = new VirtioInterruptState(line, true);
  st.raise(INT_VRING);
  st.raise(INT_VRING);
  st.ack(INT_VRING);
  assert.equal(line.pulses, 2);
  assert.deepEqual(line.sets, []);
  assert.equal(st.status, 0);
});

/** The transport, plus a second view of its interrupt state as a vCPU thread builds it from irqShare(). */
function rig() {
  const mem = new TestMemory(1 << 20);
  const irq = Object.assign(new RecordingIrq(), { vmFd: -1 });
  const dev = new VirtioMmioDevice(new VirtioRng(), mem, irq);
  const drv = new TestDriver(dev, mem);
  const share = dev.irqShare(0xd0000000);
  assert.ok(share, 'a line other threads may drive gives a share');
  // The same physical line: the vCPU side drives the RecordingIrq too.
  const vcpu = new VirtioInterruptState({ set: (l) => irq.set(l), pulse: () => irq.pulse() }, share.edge, share.words);
  return { dev, drv, irq, vcpu, share };
}

test('an ACK answered on a vCPU thread lowers the line, and the device thread\'s next interrupt raises it again', () => {
  const r = rig();
  r.drv.start(1, 16);
  r.dev.fastPathUsed();
  assert.equal(r.irq.level, true);
  assert.equal(r.vcpu.status, INT_VRING, 'the vCPU side reads what the device thread set');
  r.vcpu.ack(r.vcpu.status);
  r.vcpu.countFast('ack');
  assert.equal(r.irq.level, false);
  assert.equal(r.drv.read(REG.INTERRUPT_STATUS), 0, 'the device thread reads what the vCPU side cleared');
  // A line that cached its own level on the device thread would think it is still high here and lose this one.
  r.dev.fastPathUsed();
  assert.equal(r.irq.level, true);
  assert.equal(r.irq.raises, 2);
  // An interrupt raised on the vCPU side is acknowledged through the device thread's registers.
  r.drv.ackInterrupts();
  r.vcpu.raise(INT_VRING);
  assert.equal(r.drv.read(REG.INTERRUPT_STATUS), INT_VRING);
  assert.equal(r.drv.ackInterrupts(), INT_VRING);
  assert.equal(r.irq.level, false);
  const m = r.dev.metrics();
  assert.equal(m.interrupts, 3, 'interrupts from both sides are counted');
  assert.equal(m.interrupt_acks_on_vcpu, 1);
  r.dev.close();
});

test('snapshot and restore carry the shared status; a reset clears it and drops the line', () => {
  const r = rig();
  r.drv.start(1, 16);
  r.vcpu.raise(INT_VRING);
  const snap = r.dev.snapshot();
  assert.equal(snap.interruptStatus, INT_VRING);
  r.drv.write(REG.STATUS, 0);
  assert.equal(r.vcpu.status, 0);
  assert.equal(r.irq.level, false);

  const fresh = rig();
  fresh.dev.restore(snap);
  assert.equal(fresh.vcpu.status, INT_VRING, 'restored into the shared words');
  assert.equal(fresh.irq.level, true, 'and the line raised to match');
});

test('HANGAR_VIRTIO_IRQ_FAST=0, or a line only the device thread may drive, gives no share', () => {
  const mem = new TestMemory(1 << 20);
  assert.equal(new VirtioMmioDevice(new VirtioRng(), mem, new RecordingIrq()).irqShare(0xd0000000), undefined);
  process.env.HANGAR_VIRTIO_IRQ_FAST = '0';
  try {
    const irq = Object.assign(new RecordingIrq(), { vmFd: -1 });
    assert.equal(new VirtioMmioDevice(new VirtioRng(), mem, irq).irqShare(0xd0000000), undefined);
  } finally {
    delete process.env.HANGAR_VIRTIO_IRQ_FAST;
  }
});

/**
 * Two threads at once (until the line has changed 300 times, at most 3 s): this thread raises, a worker acknowledges, each through its own
 * view. Both drive one line (a shared word). Whoever drives it holds the lock, so while a change
 * is under way (a while: an ioctl takes time) the status must agree with the level being set —
 * a raise slipping in while the line is being lowered is exactly a lost interrupt. Every
 * disagreement, and every change to the level the line already had, is counted.
 */
test('raises and ACKs racing on two threads never leave the line disagreeing with the status', async () => {
  // Until the line has changed 300 times (enough interleaving to matter), at most 3 s on a busy host.
  const CHANGES = 300;
  const MAX_MS = 3000;
  const words = new SharedArrayBuffer(8 * 4);
  const lineWords = new Int32Array(new SharedArrayBuffer(3 * 4)); // [level, violations, changes]
  const gate = new Int32Array(new SharedArrayBuffer(3 * 4)); // [worker ready, go, stop]
  // The same driver on both threads (its source goes to the worker as text).
  const driverSource = `(lw, status) => ({
    set(level) {
      const v = level ? 1 : 0;
      if (Atomics.exchange(lw, 0, v) === v) Atomics.add(lw, 1, 1);
      Atomics.add(lw, 2, 1);
      const end = performance.now() + 0.02;
      do { if ((Atomics.load(status, 1) !== 0 ? 1 : 0) !== v) Atomics.add(lw, 1, 1); } while (performance.now() < end);
    },
    pulse() { throw new Error('level line'); },
  })`;
  const makeDriver = (0, eval)(driverSource) as (lw: Int32Array, status: Int32Array) => LineDriver;
  const mod = new URL('../../src/vmm/virtio/interrupt-state.js', import.meta.url).href;
  const worker = new Worker(`
    const { workerData, parentPort } = require('node:worker_threads');
    import(workerData.mod).then(({ VirtioInterruptState }) => {
      const makeDriver = ${driverSource};
      const st = new VirtioInterruptState(makeDriver(new Int32Array(workerData.line), new Int32Array(workerData.words)), false, workerData.words);
      const gate = new Int32Array(workerData.gate);
      Atomics.store(gate, 0, 1);
      Atomics.notify(gate, 0);
      while (Atomics.load(gate, 1) === 0) Atomics.wait(gate, 1, 0);
      while (Atomics.load(gate, 2) === 0) st.ack(1);
      parentPort.postMessage('done');
    });
  `, { eval: true, workerData: { mod, words, line: lineWords.buffer, gate: gate.buffer } });
  const st = new VirtioInterruptState(makeDriver(lineWords, new Int32Array(words)), false, words);
  const done = new Promise((resolve, reject) => { worker.once('message', resolve); worker.once('error', reject); });
  // Both loops start together: wait until the worker is ready, then open the gate.
  while (Atomics.load(gate, 0) === 0) await new Promise((r) => setTimeout(r, 5));
  Atomics.store(gate, 1, 1);
  Atomics.notify(gate, 1);
  const until = performance.now() + MAX_MS;
  while (Atomics.load(lineWords, 2) < CHANGES && performance.now() < until) st.raise(1);
  Atomics.store(gate, 2, 1);
  await done;
  await worker.terminate();
  assert.equal(Atomics.load(lineWords, 1), 0, 'the line was never driven against the status, nor to the level it had');
  assert.equal(Atomics.load(lineWords, 0), st.status !== 0 ? 1 : 0, 'the line matches the status');
  assert.ok(Atomics.load(lineWords, 2) >= 20, `the two threads did interleave (${Atomics.load(lineWords, 2)} line changes)`);
});
