/**
 * The `hangar` CLI against a real daemon and a real QEMU guest (the built-in
 * `tiny` image): launch, list, show, a scripted console session, logs,
 * pause/resume, stop, events, delete (refused while running, then forced),
 * and the messages and exit codes of bad input.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { runHangar, expectOk, type CliResult } from '../helpers/cli.js';
import { START_TICKS, STOP_TICKS, lastTick, waitForTick, watchWindowMs } from '../helpers/guest-ticks.js';

const NAME = 'cli-e2e';
let d: TestDaemon;

before(async () => {
  d = await startDaemon();
});

after(async () => {
  await d?.cleanup();
});

const hangar = (args: string[], input?: string): Promise<CliResult> =>
  runHangar(args, { env: d.env, timeoutMs: 180_000, ...(input !== undefined ? { input } : {}) });

const ok = expectOk;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface VmJson {
  name: string;
  state: string;
  spec: { image: string; engine: string; cpus: number; memoryBytes: number };
  runtime: { pid: number | null; accel: string | null };
}

async function vmState(): Promise<string> {
  const vms = JSON.parse(ok(await hangar(['list', '--json']), 'list').stdout) as VmJson[];
  return vms.find((v) => v.name === NAME)?.state ?? 'absent';
}

/** Polls the persisted console log until the guest's shell prompt shows (the boot under TCG takes a while). */
async function waitForPrompt(limitMs: number): Promise<string> {
  const end = Date.now() + limitMs;
  let log = '';
  while (Date.now() < end) {
    log = (await hangar(['logs', NAME])).stdout;
    if (/# /.test(log)) return log;
    await new Promise((r) => setTimeout(r, 1000));
  }
  assert.fail(`no shell prompt in the console log of ${NAME} within ${limitMs / 1000} s; log ends with:\n${log.slice(-1500)}`);
}

test('host check reports KVM, QEMU and the plan, as text and JSON', async () => {
  const j = JSON.parse(ok(await hangar(['host', 'check', '--json']), 'host check --json').stdout);
  assert.equal(typeof j.kvm.present, 'boolean');
  assert.equal(typeof j.kvm.fullSystem, 'boolean');
  assert.equal(j.qemu.present, true);
  assert.ok(j.cpus.total >= 1);
  assert.ok(['kvm', 'tcg'].includes(j.defaultAccel));
  const t = ok(await hangar(['host', 'check']), 'host check').stdout;
  assert.match(t, /^KVM: /m);
  assert.match(t, /^QEMU: +\d+\.\d+/m);
  assert.match(t, /^Acceleration: /m);
  // Network modes: user-mode needs only QEMU; the others say what they need.
  assert.deepEqual(j.networks.map((n: { mode: string }) => n.mode), ['nat', 'isolated', 'bridged', 'user']);
  assert.equal(j.networks.find((n: { mode: string }) => n.mode === 'user').available, true);
  assert.match(t, /^Networks: +nat: +(available|unavailable) \(/m);
  assert.match(t, /^ +user: +available \(QEMU user-mode/m);
});

test('bad input: the exit code docs/cli.md gives for its error, and a clear message', async () => {
  const mem = await hangar(['launch', 'tiny', NAME, '--memory', '12XB']);
  assert.equal(mem.code, 2);
  assert.match(mem.stderr, /^Error: --memory "12XB" has an unknown unit "XB" .*\(INVALID_ARGUMENT\)$/m);
  const cpus = await hangar(['launch', 'tiny', NAME, '--cpus', '0']);
  assert.equal(cpus.code, 2);
  assert.match(cpus.stderr, /--cpus must be between 1 and \d+, got 0 \(INVALID_ARGUMENT\)/);
  const unknown = await hangar(['show', 'no-such-vm']);
  assert.equal(unknown.code, 3);
  assert.match(unknown.stderr, /^Error: .*no-such-vm.* \(NOT_FOUND\)$/m);
  const image = await hangar(['launch', 'no-such-image', NAME]);
  assert.equal(image.code, 3, image.stderr);
  assert.match(image.stderr, /^Error: .*no-such-image.*\(NOT_FOUND\)$/m);
  // The daemon checks what only it can know: more vCPUs than the host has.
  // docs/api.md: cpus is 1 up to the host CPU count, checked at create (INVALID_ARGUMENT, exit 2 per docs/cli.md).
  const many = await hangar(['launch', 'tiny', NAME, '--cpus', '1000']);
  assert.equal(many.code, 2, many.stderr);
  assert.match(many.stderr, /^Error: .*cpus.*\(INVALID_ARGUMENT\)$/m);
  assert.equal(await vmState(), 'absent', 'no failed launch left a VM behind');
});

test('a VM through its whole life, driven by the CLI', async (t) => {
  await t.test('launch waits for the operation and reports progress', async () => {
    const r = ok(await hangar(['launch', 'tiny', NAME, '--cpus', '2', '--memory', '256M']), 'launch');
    assert.match(r.stderr, new RegExp(`^Launching ${NAME} from tiny\\.\\.\\.$`, 'm'));
    assert.match(r.stderr, new RegExp(`^Launched ${NAME}$`, 'm'));
  });

  await t.test('list shows it running with its size', async () => {
    const vms = JSON.parse(ok(await hangar(['list', '--json']), 'list').stdout) as VmJson[];
    const vm = vms.find((v) => v.name === NAME);
    assert.ok(vm, 'the VM is listed');
    assert.equal(vm.state, 'running');
    assert.equal(vm.spec.image, 'tiny');
    assert.equal(vm.spec.engine, 'qemu');
    assert.equal(vm.spec.cpus, 2);
    assert.equal(vm.spec.memoryBytes, 256 * 1024 * 1024);
    assert.ok(vm.runtime.accel === 'kvm' || vm.runtime.accel === 'tcg');
    assert.ok(typeof vm.runtime.pid === 'number' && vm.runtime.pid > 0);
    const table = ok(await hangar(['ls']), 'ls').stdout;
    assert.match(table, /^NAME\s+STATE\s+ENGINE\s+ACCEL\s+CPUS\s+MEMORY\s+UPTIME\s+IPV4$/m);
    assert.match(table, new RegExp(`^${NAME}\\s+running\\s+qemu\\s+(kvm|tcg)\\s+2\\s+256M\\s+\\S+\\s+\\S+$`, 'm'));
  });

  await t.test('show prints spec and runtime', async () => {
    const s = ok(await hangar(['show', NAME]), 'show').stdout;
    assert.match(s, new RegExp(`^name: ${NAME}$`, 'm'));
    assert.match(s, /^state: running$/m);
    assert.match(s, /^ {2}cpus: 2$/m);
    assert.match(s, /^ {2}memory: 256M$/m);
    assert.match(s, /^ {2}pid: \d+$/m);
    assert.equal(JSON.parse(ok(await hangar(['show', NAME, '--json']), 'show --json').stdout).name, NAME);
  });

  await t.test('a piped console session runs a command in the guest', async () => {
    await waitForPrompt(150_000);
    const r = ok(await hangar(['console', NAME], 'echo hello-$((40+2))\n'), 'console');
    // The guest's shell did the arithmetic: the echoed input line says $((40+2)), only the answer says 42.
    assert.match(r.stdout, /hello-42/);
    const until = ok(await hangar(['console', NAME, '--until', 'sum=42', '--json'], 'echo sum=$((6*7))\n'), 'console --until');
    const j = JSON.parse(until.stdout);
    assert.equal(j.end, 'matched');
    assert.match(j.output, /sum=42/);
  });

  await t.test('logs holds what the console printed; --tail gives exactly the last lines', async () => {
    assert.match(ok(await hangar(['logs', NAME]), 'logs').stdout, /hello-42/);
    ok(await hangar(['console', NAME, '--until', 'tail-3\\s[^]*# '], 'echo tail-$((1+1)); echo tail-$((2+1))\n'), 'console for tail');
    await sleep(500); // the shell may still send its cursor query after the prompt
    const full = ok(await hangar(['logs', NAME]), 'logs').stdout;
    const tail = ok(await hangar(['logs', NAME, '--tail', '3']), 'logs --tail').stdout;
    const lines = tail.split('\n');
    assert.equal(lines.length, 3, `3 lines: ${JSON.stringify(tail)}`);
    assert.deepEqual(lines.slice(0, 2), ['tail-2\r', 'tail-3\r']);
    assert.match(lines[2]!, /# /, 'the prompt line');
    assert.equal(tail, full.split('\n').slice(-3).join('\n'), 'the tail is the end of the whole log');
  });

  await t.test('pause stops the guest, resume lets it go on', async () => {
    // A counter in the guest prints a tick every 0.2 s; the console log (what `hangar logs` prints) shows how far it got.
    const logs = async (): Promise<string> => ok(await hangar(['logs', NAME]), 'logs').stdout;
    ok(await hangar(['console', NAME, '--until', 'tick-\\d'], `${START_TICKS}\n`), 'start the counter');
    const first = await waitForTick(logs, 1);
    const pace0 = Date.now();
    const paced = await waitForTick(logs, first + 5);
    const watchMs = watchWindowMs(Date.now() - pace0, paced - first);

    ok(await hangar(['pause', NAME]), 'pause');
    assert.equal(await vmState(), 'paused');
    await sleep(1000); // a tick already on its way out when the pause took effect may still land
    const frozenAt = lastTick(await logs());
    await sleep(watchMs);
    assert.equal(lastTick(await logs()), frozenAt, `the paused guest went on counting (watched ${watchMs} ms)`);

    ok(await hangar(['resume', NAME]), 'resume');
    assert.equal(await vmState(), 'running');
    await waitForTick(logs, frozenAt + 3);
    ok(await hangar(['console', NAME], `${STOP_TICKS}\n`), 'stop the counter');
  });

  await t.test('delete refuses a running VM without --force', async () => {
    const r = await hangar(['delete', NAME]);
    assert.equal(r.code, 4);
    assert.match(r.stderr, /^Error: .*running.* \(INVALID_STATE\)$/m);
    assert.equal(await vmState(), 'running');
  });

  await t.test('stop shuts it down gracefully: the guest powers itself off', async () => {
    // The timeout is generous: under a busy TCG host the guest's poweroff takes a while,
    // and a kill after the timeout would be a different outcome (lastExit "killed").
    const r = ok(await hangar(['stop', NAME, '--timeout', '120']), 'stop');
    assert.match(r.stderr, new RegExp(`^Stopped ${NAME}$`, 'm'));
    const vm = JSON.parse(ok(await hangar(['show', NAME, '--json']), 'show').stdout) as VmJson & { runtime: { lastExit: { reason: string } | null } };
    assert.equal(vm.state, 'stopped');
    assert.equal(vm.runtime.lastExit?.reason, 'poweroff', JSON.stringify(vm.runtime.lastExit));
    assert.match(ok(await hangar(['logs', NAME]), 'logs').stdout, /power button pressed/, 'the guest saw the ACPI power button');
    const events = JSON.parse(ok(await hangar(['events', '--vm', NAME, '--json']), 'events').stdout) as Array<{ type: string; reason?: string }>;
    assert.equal(events.at(-1)?.type, 'stopped');
    assert.match(events.at(-1)?.reason ?? '', /^poweroff/);
  });

  await t.test('events tell the story', async () => {
    const events = JSON.parse(ok(await hangar(['events', '--vm', NAME, '--json']), 'events').stdout) as Array<{ type: string; vm: string; seq: number }>;
    const types = events.map((e) => e.type);
    for (const want of ['created', 'started', 'paused', 'resumed', 'stopped']) assert.ok(types.includes(want), `${want} in ${types.join(',')}`);
    assert.ok(types.indexOf('created') < types.indexOf('started'));
    assert.ok(types.indexOf('paused') < types.indexOf('resumed'));
    assert.ok(types.lastIndexOf('resumed') < types.lastIndexOf('stopped'));
    const table = ok(await hangar(['events', '--vm', NAME]), 'events table').stdout;
    assert.match(table, /^SEQ\s+TIME\s+VM\s+EVENT\s+REASON$/m);
    assert.match(table, new RegExp(`\\s${NAME}\\s+paused`));
  });

  await t.test('start and restart', async () => {
    ok(await hangar(['start', NAME]), 'start');
    assert.equal(await vmState(), 'running');
    const r = ok(await hangar(['restart', NAME, '--force']), 'restart');
    assert.match(r.stderr, new RegExp(`^Restarted ${NAME}$`, 'm'));
    assert.equal(await vmState(), 'running');
  });

  await t.test('delete --force removes a running VM', async () => {
    ok(await hangar(['delete', NAME, '--force']), 'delete --force');
    assert.equal(await vmState(), 'absent');
    const gone = await hangar(['show', NAME]);
    assert.equal(gone.code, 3);
  });

  await t.test('operations and images are listed', async () => {
    const ops = JSON.parse(ok(await hangar(['operation', 'list', '--json']), 'operation list').stdout) as Array<{ id: string; status: string }>;
    assert.ok(ops.length >= 6);
    const shown = JSON.parse(ok(await hangar(['operation', 'show', ops[0]!.id, '--json']), 'operation show').stdout);
    assert.equal(shown.id, ops[0]!.id);
    const waited = JSON.parse(ok(await hangar(['operation', 'wait', ops[0]!.id, '--json']), 'operation wait').stdout);
    assert.notEqual(waited.status, 'running');
    const images = JSON.parse(ok(await hangar(['image', 'list', '--json']), 'image list').stdout) as Array<{ name: string }>;
    assert.ok(images.some((i) => i.name === 'tiny'));
  });

  await t.test('daemon status', async () => {
    const s = JSON.parse(ok(await hangar(['daemon', 'status', '--json']), 'daemon status').stdout);
    assert.equal(s.running, true);
    assert.equal(s.pid, d.pid);
  });
});
