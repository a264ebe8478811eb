/**
 * hangar-vmm boots ring-3 test guests (guests/*.c) on the real /dev/kvm:
 * serial output, interrupt-driven serial input, every vCPU reporting in,
 * and the ways a guest can end (power off, reset, panic, emulation failure),
 * each with its exit code and reason.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { VMM_EXIT } from '../../src/vmm/exit-codes.js';
import { probeKvm } from '../../src/kvm/probe.js';
import os from 'node:os';
import path from 'node:path';
import { api, bootGuest, buildGuest, ConsoleClient, kvmUsable, makeBzImage, startVmm } from '../helpers/vmm.js';

const skip = kvmUsable ? false : 'no usable /dev/kvm';
const elf: Record<string, string> = {};

before(() => {
  if (skip) return;
  for (const g of ['hello', 'echo', 'smp', 'emulfail', 'triplefault']) elf[g] = buildGuest(g);
});

test('serial output from ring 3, our command line, guest power off → exit 0', { skip }, async () => {
  const vmm = await startVmm();
  try {
    const con = await ConsoleClient.connect(vmm.consoleSock);
    await bootGuest(vmm, elf.hello!, { bootArgs: 'console=ttyS0 hangar.test=hello-42' });
    const { code } = await vmm.exited;
    assert.equal(code, VMM_EXIT.POWEROFF);
    await con.waitFor('bye\n');
    assert.match(con.text, /hello from hangar guest on cpu 0 of 1/);
    assert.match(con.text, /cmdline: console=ttyS0 hangar\.test=hello-42\n/);
    assert.match(con.text, /ram: 64 MiB/);
    assert.match(con.text, /mmio unclaimed read: 0xffffffff/);
    // The console log file got the same bytes even though a client was attached.
    assert.match(fs.readFileSync(vmm.consoleLog, 'latin1'), /hello from hangar guest/);
    assert.match(vmm.stderr(), /poweroff: guest powered off/);
    assert.deepEqual(JSON.parse(fs.readFileSync(vmm.exitFile, 'utf8')).reason, 'poweroff');
    con.close();
  } finally {
    await vmm.cleanup();
  }
});

test('bzImage boot path: the same guest wrapped as a bzImage boots through the 64-bit entry at +0x200', { skip }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-bz-'));
  const bz = path.join(dir, 'hello.bzImage');
  makeBzImage(elf.hello!, bz);
  const vmm = await startVmm();
  try {
    const con = await ConsoleClient.connect(vmm.consoleSock);
    await bootGuest(vmm, bz, { bootArgs: 'console=ttyS0 via=bzimage' });
    assert.equal((await vmm.exited).code, VMM_EXIT.POWEROFF);
    await con.waitFor('bye\n');
    assert.match(con.text, /cmdline: console=ttyS0 via=bzimage\n/);
    con.close();
  } finally {
    await vmm.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('interrupt-driven serial input: the guest echoes lines it received through IRQ 4', { skip }, async () => {
  const vmm = await startVmm();
  try {
    const con = await ConsoleClient.connect(vmm.consoleSock);
    await bootGuest(vmm, elf.echo!);
    await con.waitFor('echo ready\n');
    con.write('hello hangar\n');
    await con.waitFor(/echo: hello hangar \(irqs [1-9]\d*\)/);
    con.write('second line\n');
    await con.waitFor(/echo: second line/);
    const m = await api(vmm.apiSock, 'GET', '/metrics');
    const serial = (m.body as { vm: { devices: { serial0: { rxBytes: number; interrupts: number } } } }).vm.devices.serial0;
    assert.equal(serial.rxBytes, 'hello hangar\nsecond line\n'.length);
    assert.ok(serial.interrupts >= 2, `expected receive interrupts, got ${serial.interrupts}`);
    con.write('poweroff\n');
    assert.equal((await vmm.exited).code, VMM_EXIT.POWEROFF);
    con.close();
  } finally {
    await vmm.cleanup();
  }
});

test('guest reset through the i8042 (0xFE on port 0x64) → exit 3, reason reboot', { skip }, async () => {
  const vmm = await startVmm();
  try {
    const con = await ConsoleClient.connect(vmm.consoleSock);
    await bootGuest(vmm, elf.echo!);
    await con.waitFor('echo ready\n');
    con.write('reset\n');
    assert.equal((await vmm.exited).code, VMM_EXIT.REBOOT);
    assert.match(vmm.stderr(), /reboot: guest reset through the i8042 controller/);
    con.close();
  } finally {
    await vmm.cleanup();
  }
});

test('guest triple fault (empty IDT, #UD in ring 0) → KVM_EXIT_SHUTDOWN → exit 3, reason reboot', { skip }, async () => {
  const vmm = await startVmm();
  try {
    const con = await ConsoleClient.connect(vmm.consoleSock);
    await bootGuest(vmm, elf.triplefault!);
    assert.equal((await vmm.exited).code, VMM_EXIT.REBOOT);
    await con.waitFor('about to triple fault\n');
    assert.doesNotMatch(con.text, /still alive/);
    assert.match(vmm.stderr(), /reboot: guest triple fault or shutdown \(KVM_EXIT_SHUTDOWN\)/);
    con.close();
  } finally {
    await vmm.cleanup();
  }
});

test('guest panic → exit 4, reason crashed', { skip }, async () => {
  const vmm = await startVmm();
  try {
    const con = await ConsoleClient.connect(vmm.consoleSock);
    await bootGuest(vmm, elf.echo!);
    await con.waitFor('echo ready\n');
    con.write('panic\n');
    assert.equal((await vmm.exited).code, VMM_EXIT.CRASHED);
    await con.waitFor('PANIC: asked to');
    assert.match(vmm.stderr(), /crashed: guest panicked/);
    con.close();
  } finally {
    await vmm.cleanup();
  }
});

for (const cpus of [2, 4]) {
  test(`SMP: all ${cpus} vCPUs report in from ring 3`, { skip }, async () => {
    const vmm = await startVmm();
    try {
      const con = await ConsoleClient.connect(vmm.consoleSock);
      await bootGuest(vmm, elf.smp!, { vcpus: cpus });
      assert.equal((await vmm.exited).code, VMM_EXIT.POWEROFF);
      await con.waitFor(`all ${cpus} cpus reported`);
      for (let i = 0; i < cpus; i++) assert.match(con.text, new RegExp(`cpu ${i} online \\(hg_cpu_id ${i}\\)`));
      assert.match(con.text, new RegExp(`cpu 0 online \\(hg_cpu_id 0\\), ${cpus} cpus`));
      con.close();
    } finally {
      await vmm.cleanup();
    }
  });
}

test('a KVM emulation failure ends the VM as crashed with the instruction bytes', { skip }, async () => {
  const probe = await probeKvm();
  const vmm = await startVmm();
  try {
    const con = await ConsoleClient.connect(vmm.consoleSock);
    await bootGuest(vmm, elf.emulfail!);
    const { code } = await vmm.exited;
    await con.waitFor('about to run cmpxchg16b in ring 0');
    if (probe.kind === 'hardware') {
      // Hardware virtualization executes it; the guest then powers off normally.
      assert.equal(code, VMM_EXIT.POWEROFF);
      return;
    }
    assert.equal(code, VMM_EXIT.CRASHED);
    const rec = JSON.parse(fs.readFileSync(vmm.exitFile, 'utf8')) as { reason: string; detail: string; insn?: number[]; rip?: string };
    assert.equal(rec.reason, 'crashed');
    assert.match(rec.detail, /KVM internal error: emulation failure at rip 0x[0-9a-f]+ \(instruction bytes: /);
    // lock cmpxchg16b m128: F0 48 0F C7 /1
    const hex = (rec.insn ?? []).map((b) => b.toString(16).padStart(2, '0')).join(' ');
    assert.match(hex, /^f0 48 0f c7/);
    assert.match(vmm.stderr(), /instruction bytes: f0 48 0f c7/);
    con.close();
  } finally {
    await vmm.cleanup();
  }
});
