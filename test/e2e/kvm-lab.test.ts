/**
 * Linux guests on hangar-vmm, proven in the KVM lab (scripts/kvm-lab.sh,
 * docs/testing.md): L1 is a Debian kernel under QEMU TCG with kvm-amd, and
 * inside it test/lab/linux-guest.ts boots the tiny image (Debian cloud
 * kernel + busybox initramfs, `quiet`) on hangar-vmm against L1's /dev/kvm.
 *
 * Two L1 boots in all, each shared by several checks: one runs a tiny job
 * (exit-code plumbing, /dev/kvm present), one runs both L2 scenarios —
 * 1 vCPU: shell prompt, commands answered, the console's and i8042's IRQs
 * from the DSDT, a raw disk seen as /dev/vda through the DSDT's virtio-mmio
 * device, `poweroff` ends the VM through ACPI S5 (exit 0); 2 vCPUs:
 * both CPUs up, Ctrl-Alt-Del through the control API makes the kernel
 * restart, and the reset ends the VM as a reboot (exit 3).
 *
 * Several minutes under TCG on a busy host; skipped where QEMU is missing
 * or HANGAR_SKIP_LAB=1.
 */
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { projectRoot } from '../../src/common/paths.js';
import type { ScenarioResult } from '../lab/linux-guest.js';

const ROOT = projectRoot();
const LAB = path.join(ROOT, 'scripts', 'kvm-lab.sh');
const qemu = ['/usr/bin/qemu-system-x86_64', '/usr/local/bin/qemu-system-x86_64'].some((p) => fs.existsSync(p));
const skip = process.env.HANGAR_SKIP_LAB === '1' ? 'HANGAR_SKIP_LAB=1' : process.arch !== 'x64' ? 'the lab needs an x86-64 host' : !qemu ? 'qemu-system-x86_64 is not installed' : false;

interface LabRun { code: number | null; out: string }

/** Runs the lab script with a job; the script itself ends L1 (its own timeout), this one is a backstop. */
function lab(job: string[], timeoutS: number): Promise<LabRun> {
  return new Promise((resolve) => {
    const child = spawn('bash', [LAB, '--timeout', String(timeoutS), '--', ...job], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    const backstop = setTimeout(() => child.kill('SIGTERM'), (timeoutS + 120) * 1000);
    child.once('exit', (code) => { clearTimeout(backstop); resolve({ code, out }); });
  });
}

const results = new Map<string, ScenarioResult>();
let guestRun: LabRun = { code: null, out: '' };
let exitCodeRun: LabRun = { code: null, out: '' };

function scenario(name: string): ScenarioResult {
  const r = results.get(name);
  assert.ok(r, `scenario ${name} reported no result; lab output:\n${guestRun.out.slice(-4000)}`);
  assert.equal(r.error, undefined, `scenario ${name} failed: ${r.error}\n${guestRun.out.slice(-4000)}`);
  return r;
}

describe('KVM lab: Linux on hangar-vmm', { skip }, () => {
  before(async () => {
    // First boot: builds (or reuses) the cache; a job that checks /dev/kvm and exits 7.
    exitCodeRun = await lab(['sh', '-c', 'test -c /dev/kvm && echo "lab job: /dev/kvm is there" && exit 7'], 900);
    // Second boot: both L2 scenarios.
    guestRun = await lab(['node', 'dist/test/lab/linux-guest.js', 'shell', 'smp'], 1500);
    for (const m of guestRun.out.matchAll(/^LAB-RESULT (\{.*\})$/gm)) {
      const r = JSON.parse(m[1]!) as ScenarioResult;
      results.set(r.scenario, r);
    }
  }, { timeout: 45 * 60_000 });

  test('the lab runs a job against L1\'s /dev/kvm and exits with the job\'s exit code', () => {
    assert.match(exitCodeRun.out, /lab job: \/dev\/kvm is there/, exitCodeRun.out.slice(-3000));
    assert.match(exitCodeRun.out, /^HANGAR-LAB-RESULT: FAIL exit=7/m);
    assert.equal(exitCodeRun.code, 7);
  });

  test('1 vCPU: the tiny image reaches its shell on hangar-vmm and answers a command', () => {
    const r = scenario('shell');
    assert.equal(r.answers.echo, 'hangar-42');
    assert.match(r.answers.uname!, /^\d+\.\d+\.\d+-\d+-cloud-amd64$/);
    assert.ok(r.ms.prompt! > r.ms.banner!, 'prompt after the banner');
  });

  test('1 vCPU: the UART and the i8042 got their ISA IRQs from the DSDT (PNP0501, PNP0303)', () => {
    const r = scenario('shell');
    assert.match(r.answers.console!, /ttyS0 at I\/O 0x3f8 \(irq = \d+, base_baud = 115200\) is a 16550A/);
    assert.match(r.answers.console!, /i8042: PNP: PS\/2 Controller \[PNP0303:KBD\] at 0x60,0x64 irq \d+/);
    const ttyIrqs = /\d+: (\d+) IO-APIC 4-edge ttyS0/.exec(r.answers.interrupts!);
    assert.ok(ttyIrqs && Number(ttyIrqs[1]) > 0, `ttyS0 interrupts counted: ${r.answers.interrupts}`);
    assert.match(r.answers.interrupts!, /IO-APIC 1-edge i8042/);
  });

  test('1 vCPU: a raw disk given to hangar-vmm is /dev/vda in the guest, found through the DSDT (LNRO0005), once', () => {
    const r = scenario('shell');
    assert.equal(r.answers.vdaSize, String((4 * 1024 * 1024) / 512), 'a 4 MiB disk in 512-byte sectors');
    assert.equal(r.answers.vdaHead, 'hangar-lab-vda-marker-0042');
    // One platform device, named after its ACPI id: not a second one from the command line.
    assert.deepEqual(r.answers.virtioMmio!.split(/\s+/), ['LNRO0005:00']);
    const irq = /\d+: (\d+) IO-APIC 5-fasteoi virtio0/.exec(r.answers.virtioIrq!);
    assert.ok(irq && Number(irq[1]) > 0, `virtio0 interrupts on GSI 5, level triggered: ${r.answers.virtioIrq}`);
  });

  test('1 vCPU: `poweroff` in the guest is a clean ACPI S5 power-off (exit 0)', () => {
    const r = scenario('shell');
    assert.equal(r.exitCode, 0);
    const rec = r.exitRecord as { reason?: string; detail?: string } | undefined;
    assert.equal(rec?.reason, 'poweroff');
    assert.match(rec?.detail ?? '', /ACPI S5/);
  });

  test('2 vCPUs: smpboot brings both CPUs up', () => {
    const r = scenario('smp');
    assert.equal(r.vcpus, 2);
    assert.equal(r.answers.cpus, '2');
    assert.equal(r.answers.online, '0-1');
    assert.match(r.answers.smpboot!, /smp: Brought up 1 node, 2 CPUs/);
  });

  test('2 vCPUs: Ctrl-Alt-Del through the control API restarts the guest, and the reset ends hangar-vmm as a reboot (exit 3)', () => {
    const r = scenario('smp');
    assert.equal(r.answers.cad, '1', 'the kernel restarts on Ctrl-Alt-Del by itself');
    assert.equal(r.answers.sendCtrlAltDel, '204');
    assert.equal(r.exitCode, 3);
    // Linux's default reboot with hardware-reduced ACPI and no EFI jumps to the BIOS reset
    // vector; hangar-vmm's reset stub there turns that into a reset through the power port.
    assert.equal((r.exitRecord as { reason?: string } | undefined)?.reason, 'reboot');
    assert.equal(guestRun.code, 0, 'the lab reports the job passed');
  });
});
