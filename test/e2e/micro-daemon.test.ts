/**
 * A VM on Hangar's own VMM, end to end through hangard and the `hangar` CLI:
 * the ring-3 echo test guest (guests/echo.c) is imported as an image and
 * launched with `--engine micro` on real /dev/kvm. Console, logs,
 * pause/resume, graceful stop (Ctrl-Alt-Del → the guest powers off), start,
 * crash detection (hangar-vmm SIGKILLed), re-adoption after the daemon is
 * SIGKILLed, and the image's delete rules.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { runHangar, expectOk, type CliResult } from '../helpers/cli.js';
import { buildGuest, kvmUsable } from '../helpers/vmm.js';
import { projectRoot } from '../../src/common/paths.js';
import { DEFAULT_BOOT_ARGS } from '../../src/vmm/controller.js';

const VM = 'm1';
let d: TestDaemon;
let elf: string;

const skip = kvmUsable ? false : 'needs a usable /dev/kvm';

before(async () => {
  if (!kvmUsable) return;
  elf = buildGuest('echo');
  d = await startDaemon();
});

after(async () => {
  await d?.cleanup();
});

const hangar = (args: string[], input?: string): Promise<CliResult> =>
  runHangar(args, { env: d.env, timeoutMs: 60_000, ...(input !== undefined ? { input } : {}) });

const ok = expectOk;

interface VmJson {
  name: string;
  state: string;
  spec: { image: string; engine: string; cmdline: string };
  runtime: { pid: number | null; accel: string | null; lastExit: { reason: string; detail?: string } | null };
}

async function show(): Promise<VmJson> {
  return JSON.parse(ok(await hangar(['show', VM, '--json']), 'show').stdout) as VmJson;
}

async function waitForState(state: string, limitMs = 20_000): Promise<VmJson> {
  const end = Date.now() + limitMs;
  let vm = await show();
  while (vm.state !== state && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 100));
    vm = await show();
  }
  assert.equal(vm.state, state, `VM never became ${state}: ${JSON.stringify(vm)}`);
  return vm;
}

async function waitForLog(text: string, limitMs = 20_000): Promise<string> {
  const end = Date.now() + limitMs;
  let log = '';
  while (Date.now() < end) {
    log = ok(await hangar(['logs', VM]), 'logs').stdout;
    if (log.includes(text)) return log;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`${JSON.stringify(text)} never showed in the console log; it ends with:\n${log.slice(-800)}`);
}

/** One line through `hangar console` (piped stdin), returning what the console printed. */
async function echo(line: string): Promise<string> {
  const r = ok(await hangar(['console', VM, '--until', `echo: ${line}`, '--timeout', '20'], `${line}\n`), `console ${line}`);
  assert.match(r.stdout, new RegExp(`echo: ${line}`));
  return r.stdout;
}

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

test('image import: an ELF test guest becomes an image; bad imports are refused', { skip }, async () => {
  // A relative path: the CLI resolves it against its own working directory (the project root).
  const rel = path.relative(projectRoot(), elf);
  const imp = JSON.parse(ok(await hangar(['image', 'import', 'echo', '--kernel', rel, '--description', 'echo guest', '--json']), 'image import').stdout);
  assert.equal(imp.name, 'echo');
  assert.equal(imp.origin, 'imported');
  assert.equal(imp.status, 'ready');
  assert.equal(imp.cmdline, undefined);
  assert.equal(imp.sizeBytes, fs.statSync(elf).size);
  assert.notEqual(imp.kernel, elf, 'the daemon keeps its own copy');
  assert.deepEqual(fs.readFileSync(imp.kernel), fs.readFileSync(elf));

  const list = JSON.parse(ok(await hangar(['image', 'list', '--json']), 'image list').stdout) as Array<{ name: string; origin?: string }>;
  assert.deepEqual(list.map((i) => [i.name, i.origin]), [['tiny', 'built-in'], ['debian-12', 'built-in'], ['echo', 'imported']]);
  assert.match(ok(await hangar(['image', 'list']), 'image list').stdout, /^echo +ready +\S+ +echo guest$/m);

  const again = await hangar(['image', 'import', 'echo', '--kernel', elf]);
  assert.equal(again.code, 4);
  assert.match(again.stderr, /already exists \(ALREADY_EXISTS\)/);
  const builtin = await hangar(['image', 'import', 'tiny', '--kernel', elf]);
  assert.equal(builtin.code, 2);
  assert.match(builtin.stderr, /built-in image \(INVALID_ARGUMENT\)/);
  const notKernel = await hangar(['image', 'import', 'notakernel', '--kernel', 'package.json']);
  assert.equal(notKernel.code, 2);
  assert.match(notKernel.stderr, /neither an x86-64 ELF64 executable nor a Linux bzImage \(INVALID_ARGUMENT\)/);
  const missing = await hangar(['image', 'import', 'gone', '--kernel', '/nonexistent/kernel']);
  assert.equal(missing.code, 3);
  const delBuiltin = await hangar(['image', 'delete', 'tiny']);
  assert.equal(delBuiltin.code, 2);
  assert.match(delBuiltin.stderr, /built-in image/);
});

test('launch --engine micro: runs on kvm, echoes through the console, logs it', { skip }, async () => {
  const vm = JSON.parse(ok(await hangar(['launch', 'echo', VM, '--engine', 'micro', '--memory', '128M', '--json']), 'launch').stdout) as VmJson;
  assert.equal(vm.state, 'running');
  const list = JSON.parse(ok(await hangar(['list', '--json']), 'list').stdout) as VmJson[];
  const m1 = list.find((v) => v.name === VM);
  assert.ok(m1);
  assert.equal(m1.spec.engine, 'micro');
  assert.equal(m1.spec.image, 'echo');
  assert.equal(m1.runtime.accel, 'kvm');
  assert.match(ok(await hangar(['list']), 'list').stdout, /^m1 +running +micro +kvm +1 +128M /m);
  // The image brings no command line, so hangar-vmm's default (serial console, i8042 for Ctrl-Alt-Del) is used.
  const config = JSON.parse(fs.readFileSync(path.join(d.dataDir, 'vms', VM, 'engine-config.json'), 'utf8')) as { boot: { cmdline?: string } };
  assert.equal(config.boot.cmdline, DEFAULT_BOOT_ARGS);

  await waitForLog('echo ready');
  await echo('hello-micro');
  await waitForLog('echo: hello-micro');
});

test('pause holds the guest; resume lets it answer what arrived meanwhile', { skip }, async () => {
  ok(await hangar(['pause', VM]), 'pause');
  assert.equal((await show()).state, 'paused');
  // The line reaches the UART while the vCPU is stopped: nothing may answer it yet.
  const r = ok(await hangar(['console', VM, '--settle', '1s'], 'while-paused\n'), 'console while paused');
  assert.doesNotMatch(r.stdout, /echo: while-paused/);
  assert.doesNotMatch(ok(await hangar(['logs', VM]), 'logs').stdout, /echo: while-paused/);
  ok(await hangar(['resume', VM]), 'resume');
  assert.equal((await show()).state, 'running');
  await waitForLog('echo: while-paused');
  await echo('after-resume');
});

/** The guest's own count of console interrupts, from its newest echo of `line`. */
async function irqsAt(line: string): Promise<number> {
  const m = [...(await waitForLog(`echo: ${line}`)).matchAll(new RegExp(`^echo: ${line} \\(irqs (\\d+)\\)`, 'gm'))].at(-1);
  assert.ok(m, `an echo of ${line} with its interrupt count`);
  return Number(m[1]);
}

test('hangar snapshot --memory of a running micro VM; restore runs a fresh hangar-vmm on from it (not a reboot)', { skip }, async () => {
  const before = await show();
  await echo('before-snap');
  const irqsBefore = await irqsAt('before-snap');
  const snap = JSON.parse(ok(await hangar(['snapshot', 'create', VM, 's1', '--memory', '--json']), 'snapshot create').stdout) as { name: string; memory: boolean; vmStateBytes: number; disks: unknown[] };
  assert.equal(snap.name, 's1');
  assert.equal(snap.memory, true);
  assert.ok(snap.vmStateBytes >= 128 * 2 ** 20, `the memory file holds the guest's RAM: ${snap.vmStateBytes}`);
  assert.deepEqual(snap.disks, [], 'an image-only VM has no disks to copy');
  // Kept as files in the VM's run folder, root's.
  const folder = path.join(d.dataDir, 'vms', VM, 'snapshots', 's1');
  assert.deepEqual(fs.readdirSync(folder).sort(), ['vm.mem', 'vm.snap']);
  assert.equal(fs.statSync(folder).uid, 0);
  // The VM ran on meanwhile, in the same process; the guest's interrupt count grows.
  assert.equal((await show()).state, 'running');
  assert.equal((await show()).runtime.pid, before.runtime.pid);
  for (let i = 0; i < 5; i++) await echo(`after-snap-${i}`);
  const irqsAfter = await irqsAt('after-snap-4');
  assert.ok(irqsAfter > irqsBefore);
  assert.match(ok(await hangar(['snapshot', 'list', VM]), 'snapshot list').stdout, /^s1 .* yes \(/m);

  // A running VM would lose its state: refused without --force.
  const refused = await hangar(['snapshot', 'restore', VM, 's1']);
  assert.equal(refused.code, 4, refused.stderr);
  const readyBefore = (await waitForLog('echo ready')).match(/^echo ready$/gm)!.length;
  ok(await hangar(['snapshot', 'restore', VM, 's1', '--force']), 'snapshot restore');
  const vm = await show();
  assert.equal(vm.state, 'running');
  assert.notEqual(vm.runtime.pid, before.runtime.pid, 'a fresh hangar-vmm');
  await echo('after-restore');
  // The guest went on from the snapshot: its interrupt count is the snapshot's (below what it
  // reached afterwards), and it did not boot again (no second "echo ready").
  const irqsRestored = await irqsAt('after-restore');
  assert.ok(irqsRestored > irqsBefore && irqsRestored < irqsAfter, `restored count ${irqsRestored}: snapshot at ${irqsBefore}, later ${irqsAfter}`);
  assert.equal((await waitForLog('echo: after-restore')).match(/^echo ready$/gm)!.length, readyBefore, 'not a reboot');

  ok(await hangar(['snapshot', 'delete', VM, 's1']), 'snapshot delete');
  assert.equal(fs.existsSync(folder), false);
});

test('stop asks the guest to power off (Ctrl-Alt-Del); start boots it again', { skip }, async () => {
  const pid = (await show()).runtime.pid!;
  const stopped = JSON.parse(ok(await hangar(['stop', VM, '--timeout', '20', '--json']), 'stop').stdout) as VmJson;
  assert.equal(stopped.state, 'stopped');
  assert.equal(stopped.runtime.lastExit?.reason, 'poweroff');
  await waitForLog('ctrl-alt-del: powering off');
  assert.equal(alive(pid), false, 'hangar-vmm has exited');

  ok(await hangar(['start', VM]), 'start');
  const vm = await show();
  assert.equal(vm.state, 'running');
  assert.notEqual(vm.runtime.pid, pid);
  await echo('second-boot');
});

test('SIGKILL of hangar-vmm: the VM is crashed, with an event', { skip }, async () => {
  const pid = (await show()).runtime.pid!;
  process.kill(pid, 'SIGKILL');
  const vm = await waitForState('crashed');
  assert.equal(vm.runtime.lastExit?.reason, 'killed');
  const events = (await d.request('GET', `/1.0/events?vm=${VM}`)).body.metadata as Array<{ type: string; reason?: string }>;
  const last = events[events.length - 1];
  assert.equal(last?.type, 'crashed');
  assert.match(last?.reason ?? '', /SIGKILL/);
  assert.match(ok(await hangar(['events', '--vm', VM]), 'events').stdout, /crashed/);
});

test('daemon SIGKILL and restart: the running micro VM is re-adopted and still works', { skip }, async () => {
  ok(await hangar(['start', VM]), 'start after crash');
  const pid = (await show()).runtime.pid!;
  await echo('before-daemon-restart');
  await d.kill9();
  assert.equal(alive(pid), true, 'the VM outlives its daemon');
  await d.restart();
  const vm = await show();
  assert.equal(vm.state, 'running');
  assert.equal(vm.runtime.pid, pid);
  assert.equal(vm.runtime.accel, 'kvm');
  await echo('after-daemon-restart');
  // The adopted process is still supervised: pause/resume and a graceful stop work.
  ok(await hangar(['pause', VM]), 'pause adopted');
  ok(await hangar(['resume', VM]), 'resume adopted');
  await echo('adopted-resumed');
  ok(await hangar(['restart', VM, '--timeout', '20']), 'restart adopted');
  const restarted = await show();
  assert.equal(restarted.state, 'running');
  assert.notEqual(restarted.runtime.pid, pid);
  assert.equal(restarted.runtime.lastExit?.reason, 'poweroff');
  await echo('after-restart');
});

test('an image in use cannot be deleted; deleting the VM frees it', { skip }, async () => {
  const busy = await hangar(['image', 'delete', 'echo']);
  assert.equal(busy.code, 4);
  assert.match(busy.stderr, /used by VM m1: delete it first \(INVALID_STATE\)/);
  const pid = (await show()).runtime.pid!;
  ok(await hangar(['delete', VM, '--force']), 'delete vm');
  assert.equal(alive(pid), false);
  assert.equal(fs.existsSync(path.join(d.dataDir, 'vms', VM)), false);
  const gone = JSON.parse(ok(await hangar(['image', 'delete', 'echo', '--json']), 'image delete').stdout);
  assert.deepEqual(gone, { name: 'echo', deleted: true });
  const list = JSON.parse(ok(await hangar(['image', 'list', '--json']), 'image list').stdout) as Array<{ name: string }>;
  assert.deepEqual(list.map((i) => i.name), ['tiny', 'debian-12']);
  assert.deepEqual(fs.readdirSync(path.join(d.dataDir, 'local-images')), []);
  const launch = await hangar(['launch', 'echo', 'm2', '--engine', 'micro']);
  assert.equal(launch.code, 3);
});
