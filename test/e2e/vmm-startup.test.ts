/**
 * hangar-vmm's start-up timestamps (GET /metrics timing_ms and the vCPU's
 * first exit): with guests/first-insn.c, whose very first instruction is an
 * `out` to port 0x80, the boot vCPU's first exit is that port write, and the
 * timestamps come in the order things happen. Only the order is asserted;
 * the durations are benchmark figures (bench/vmm-bench.ts).
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { api, bootGuest, buildGuest, ConsoleClient, kvmUsable, startVmm } from '../helpers/vmm.js';

const skip = kvmUsable ? false : 'no usable /dev/kvm';
let firstInsnElf = '';

before(() => {
  if (skip) return;
  firstInsnElf = buildGuest('first-insn');
});

interface Timing { instance_start: number | null; run_start: number | null; first_vcpu_entry: number | null; first_guest_exit: number | null; first_console_byte: number | null }
interface Metrics { timing_ms: Timing; vm?: { vcpus: Array<{ pioExits: number; firstExitReason: string | null; firstExitAddr: number | null }> } }

test('metrics record InstanceStart and the first guest instruction, in order', { skip }, async () => {
  const vmm = await startVmm();
  try {
    let m = (await api(vmm.apiSock, 'GET', '/metrics')).body as Metrics;
    assert.deepEqual(m.timing_ms, { instance_start: null, run_start: null, first_vcpu_entry: null, first_guest_exit: null, first_console_byte: null, snapshot_load: null, snapshot_modules_ready: null, snapshot_restored: null, snapshot_loaded: null });

    const con = await ConsoleClient.connect(vmm.consoleSock);
    await bootGuest(vmm, firstInsnElf);
    await con.waitFor('first-insn ready\n');
    m = (await api(vmm.apiSock, 'GET', '/metrics')).body as Metrics;
    const t = m.timing_ms;
    // A booted (not restored) VM records every boot mark; the snapshot-load marks stay null.
    for (const k of ['instance_start', 'run_start', 'first_vcpu_entry', 'first_guest_exit', 'first_console_byte'] as const) assert.equal(typeof t[k], 'number', `${k} is recorded`);
    for (const k of ['snapshot_load', 'snapshot_modules_ready', 'snapshot_restored', 'snapshot_loaded']) assert.equal((t as unknown as Record<string, unknown>)[k], null, `${k} stays null without a snapshot load`);
    assert.ok(t.instance_start! >= 0);
    assert.ok(t.run_start! >= t.instance_start!, 'vCPUs released after InstanceStart');
    assert.ok(t.first_vcpu_entry! >= t.run_start!, 'first KVM_RUN after the release');
    assert.ok(t.first_guest_exit! >= t.first_vcpu_entry!, 'first exit after the first entry');
    assert.ok(t.first_console_byte! >= t.first_guest_exit!, 'console output after the first instruction');
    const v0 = m.vm!.vcpus[0]!;
    assert.equal(v0.firstExitReason, 'IO', 'the first exit is the guest\'s first instruction, a port write');
    assert.equal(v0.firstExitAddr, 0x80);
    assert.ok(v0.pioExits > 1, 'the guest went on past its first instruction');

    con.write('\n');
    assert.deepEqual(await vmm.exited, { code: 0, signal: null });
    con.close();
  } finally {
    await vmm.cleanup();
  }
});
