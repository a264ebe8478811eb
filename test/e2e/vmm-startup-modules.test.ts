/**
 * hangar-vmm answers its control API having loaded only what the API needs:
 * the machine side (KVM and libc through koffi, the builder, boot loaders,
 * devices, virtio, snapshots), the logging library and TypeBox load after the
 * first answer (src/vmm/main.ts), so a process start costs about what Node's
 * own start costs (docs/vmm.md, "Start-up"). A test-only preload
 * (test/helpers/module-load-recorder.ts) writes every module the VMM loads to
 * a file, and a mark when the first answer is written; this checks what
 * precedes the mark, and that InstanceStart then loads the machine and runs a
 * guest. No durations are asserted: bench/vmm-bench.ts measures them.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { api, bootGuest, buildGuest, ConsoleClient, kvmUsable, ROOT, startVmm } from '../helpers/vmm.js';
import { FIRST_ANSWER_MARK } from '../helpers/module-load-recorder.js';

const skip = kvmUsable ? false : 'no usable /dev/kvm';
const RECORDER = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'helpers', 'module-load-recorder.js');
let firstInsnElf = '';

before(() => {
  if (skip) return;
  firstInsnElf = buildGuest('first-insn');
});

/** A module URL or CommonJS request as the recorder wrote it, relative to the project (dist/src/vmm/api.js). */
function rel(line: string): string {
  return line.startsWith('file://') ? path.relative(ROOT, fileURLToPath(line)) : line;
}

/**
 * Modules that have no business on the way to the first answer. Three small ones under
 * src/kvm and src/vmm/virtio import nothing and are there on purpose: main.ts records
 * the descriptors it inherits (--kvm-fd, --tap-fd) and reads the seccomp mode with them.
 */
const IMPORTS_NOTHING = ['dist/src/kvm/inherited-fd.js', 'dist/src/kvm/seccomp-mode.js', 'dist/src/vmm/virtio/inherited-taps.js'];
function machineSide(m: string): boolean {
  if (IMPORTS_NOTHING.includes(m)) return false;
  return /^dist\/src\/kvm\//.test(m)
    || /^dist\/src\/vmm\/(virtio|devices|boot|snapshot)\//.test(m)
    || /^dist\/src\/vmm\/(builder|machine|memory|device-manager|bus|irq|layout|pagewalk|vcpu-[a-z-]+)\.js$/.test(m)
    || /(^|\/)node_modules\/(koffi|@koromix|typebox|pino)\//.test(m)
    || /^cjs:(@koromix\/|.*koffi|pino)/.test(m);
}

test('the control API answers before the machine, the FFI, the logger or TypeBox load; InstanceStart loads them (not TypeBox) and runs a guest', { skip }, async () => {
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-vmm-modules-'));
  const log = path.join(logDir, 'modules.txt');
  const vmm = await startVmm([], { nodeArgs: ['--import', RECORDER], env: { ...process.env, HANGAR_TEST_MODULE_LOG: log } });
  try {
    const r = await api(vmm.apiSock, 'GET', '/');
    assert.equal(r.status, 200, vmm.stderr());
    assert.deepEqual(r.body, { app_name: 'hangar-vmm', id: 'vm', state: 'Not started', vmm_version: '0.1.0' });

    const lines = () => fs.readFileSync(log, 'utf8').split('\n').filter(Boolean).map(rel);
    const all = lines();
    const mark = all.indexOf(FIRST_ANSWER_MARK);
    assert.ok(mark > 0, 'the recorder marked the first answer');
    const early = all.slice(0, mark);
    // The recorder sees the modules the API path does load (a check that it records at all).
    for (const m of ['dist/src/vmm/main.js', 'dist/src/vmm/api.js', 'dist/src/vmm/controller.js', 'dist/src/common/private-socket.js']) {
      assert.ok(early.includes(m), `${m} is loaded before the first answer`);
    }
    assert.deepEqual(early.filter(machineSide), [], 'loaded before the first API answer, though only the machine needs them');

    // The machine loads on demand: a full InstanceStart still boots a guest (its first instruction exits to the VMM).
    const con = await ConsoleClient.connect(vmm.consoleSock);
    await bootGuest(vmm, firstInsnElf);
    await con.waitFor('first-insn ready\n');
    const later = lines().slice(mark + 1);
    for (const m of ['dist/src/vmm/builder.js', 'dist/src/kvm/kvm.js', 'dist/src/vmm/virtio/index.js', 'node_modules/koffi/index.js', 'node_modules/pino/pino.js']) {
      assert.ok(later.includes(m), `${m} is loaded after the first answer (the recorder sees lazy loads too)`);
    }
    // Nor does the machine need TypeBox (~200 modules on the way to the first guest instruction): the name rules it
    // checks are in src/api/name-rules.ts, the schemas as plain JSON. Only GET /openapi.json loads it.
    assert.deepEqual(later.filter((m) => /(^|\/)node_modules\/typebox\//.test(m)), [], 'TypeBox loaded by InstanceStart');
    const metrics = (await api(vmm.apiSock, 'GET', '/metrics')).body as { state: string; vm: { vcpus: Array<{ firstExitReason: string; firstExitAddr: number }> } };
    assert.equal(metrics.state, 'Running');
    assert.equal(metrics.vm.vcpus[0]!.firstExitReason, 'IO');
    assert.equal(metrics.vm.vcpus[0]!.firstExitAddr, 0x80);
    con.write('\n');
    assert.deepEqual(await vmm.exited, { code: 0, signal: null });
    con.close();
  } finally {
    await vmm.cleanup();
    fs.rmSync(logDir, { recursive: true, force: true });
  }
});
