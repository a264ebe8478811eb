/**
 * The QEMU engine on its own (no daemon), with real QEMU (TCG) booting the
 * built-in tiny image: console, pause/resume, ACPI poweroff, kill, crash and
 * re-adoption after the handle is dropped.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { projectRoot } from '../../src/common/paths.js';
import { createLogger } from '../../src/common/log.js';
import type { EngineVmConfig, VmExit, VmHandle } from '../../src/engines/engine.js';
import { QemuEngine } from '../../src/engines/qemu/engine.js';
import { processAlive, processArgs } from '../../src/engines/base/procfs.js';
import { qemuVersion } from '../../src/engines/qemu/version.js';
import { isHangarError } from '../../src/common/errors.js';
import { START_TICKS, STOP_TICKS, lastTick, waitForTick, watchWindowMs } from '../helpers/guest-ticks.js';

import { probeKvm } from '../../src/kvm/probe.js';

process.env.HANGAR_IMAGE_DIR ??= path.join(projectRoot(), '.cache', 'images');
const { ensureImage } = await import('../../src/host/images/index.js');
const { TINY_PROMPT, TINY_BANNER } = await import('../../src/host/images/tiny.js');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hg-qemu-'));
const engine = new QemuEngine({ logger: createLogger('test', process.env.HANGAR_LOG_LEVEL ?? 'warn'), kvm: probeKvm });
const pids = new Set<number>();
const consoles: Duplex[] = [];
let image: Awaited<ReturnType<typeof ensureImage>>;

before(async () => {
  image = await ensureImage('tiny');
});

after(() => {
  for (const c of consoles) c.destroy();
  // Kill exactly the QEMU processes this file started (their argv names our temp dir).
  for (const pid of pids) {
    if (processAlive(pid) && processArgs(pid)?.some((a) => a.includes(tmp))) process.kill(pid, 'SIGKILL');
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});

function vmConfig(name: string): EngineVmConfig {
  const runDir = path.join(tmp, name);
  return {
    id: `id-${name}`,
    name,
    cpus: 1,
    memoryBytes: 256 * 1024 * 1024,
    boot: { kernel: image.kernel, initrd: image.initrd, cmdline: `${image.cmdline} hangar.hostname=${name}` },
    disks: [],
    nics: [],
    accel: 'tcg',
    runDir,
    consoleLog: path.join(runDir, 'console.log'),
  };
}

async function start(config: EngineVmConfig): Promise<VmHandle> {
  const h = await engine.start(config);
  pids.add(h.pid);
  return h;
}

function exitOf(h: VmHandle): Promise<VmExit> {
  return new Promise((r) => h.onExit(r));
}

/** Collects console output and waits for patterns in what arrives after a mark. */
class ConsoleReader {
  text = '';
  private waiters: Array<() => void> = [];
  constructor(readonly stream: Duplex, private readonly logFile?: string) {
    consoles.push(stream);
    stream.on('data', (d: Buffer) => {
      this.text += d.toString('utf8');
      for (const w of this.waiters.splice(0)) w();
    });
  }
  async waitFor(re: RegExp, from = 0, timeoutMs = 90_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.text.slice(from));
      if (m) return m[0];
      if (Date.now() > deadline) {
        const log = this.logFile && fs.existsSync(this.logFile) ? fs.readFileSync(this.logFile, 'utf8').slice(-1000) : '(none)';
        throw new Error(`console: no ${re} within ${timeoutMs} ms; got: ${JSON.stringify(this.text.slice(-500))}; console log: ${JSON.stringify(log)}`);
      }
      await new Promise<void>((r) => {
        const t = setTimeout(r, 500);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
  /** Sends a command line and resolves with the output that follows, up to the next prompt. */
  async run(cmd: string): Promise<string> {
    const mark = this.text.length;
    this.stream.write(cmd + '\n');
    await this.waitFor(new RegExp(`${cmd.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}[\\s\\S]*${TINY_PROMPT}`), mark);
    return this.text.slice(mark);
  }
}

test('capabilities: QEMU is available with its version', async () => {
  const caps = await engine.capabilities();
  assert.equal(caps.name, 'qemu');
  assert.equal(caps.available, true);
  assert.equal(caps.version, await qemuVersion());
  assert.ok(caps.accelerators.includes('tcg'));
});

test('tiny boots to a shell; pause/resume; ACPI power button powers it off', { timeout: 240_000 }, async (t) => {
  const config = vmConfig('alpha');
  const t0 = Date.now();
  const vm = await start(config);
  const exited = exitOf(vm);
  const con = new ConsoleReader(await vm.openConsole(), config.consoleLog);
  // The shell may have printed its prompt before we connected: poke it with a newline.
  con.stream.write('\n');
  await con.waitFor(new RegExp(TINY_PROMPT));
  const bootMs = Date.now() - t0;
  t.diagnostic(`boot to prompt under TCG: ${bootMs} ms`);

  const out = await con.run('echo $((6*7))');
  assert.match(out, /\r?\n42\r?\n/);
  assert.match(await con.run('hostname'), /\nalpha\r?\n/);

  // A counter in the guest shows whether its vCPUs run: no new tick while paused.
  con.stream.write(`${START_TICKS}\n`);
  const firstTick = await waitForTick(() => con.text, 1);
  const pace0 = Date.now();
  const paceTick = await waitForTick(() => con.text, firstTick + 5);
  const watchMs = watchWindowMs(Date.now() - pace0, paceTick - firstTick);
  await vm.pause();
  assert.equal(await vm.queryState(), 'paused');
  await new Promise((r) => setTimeout(r, 1000)); // a tick already on its way out may still land
  const frozenAt = lastTick(con.text);
  await new Promise((r) => setTimeout(r, watchMs));
  assert.equal(lastTick(con.text), frozenAt, `the paused guest went on counting (watched ${watchMs} ms)`);
  const paused = await vm.stats();
  assert.equal(paused.state, 'paused');
  assert.equal(paused.pid, vm.pid);
  assert.ok(paused.rssBytes > 10 * 1024 * 1024, `RSS ${paused.rssBytes}`);
  assert.ok(paused.cpuSeconds > 0, `cpu ${paused.cpuSeconds}`);
  await vm.resume();
  assert.equal(await vm.queryState(), 'running');
  await waitForTick(() => con.text, frozenAt + 3);
  con.stream.write(`${STOP_TICKS}\n`);
  assert.match(await con.run('echo resumed-$((1+1))'), /\nresumed-2\r?\n/);

  await vm.requestShutdown();
  const exit = await exited;
  assert.equal(exit.reason, 'poweroff');
  assert.equal(processAlive(vm.pid), false);
  // Everything the guest printed is in the console log, attached or not.
  const log = fs.readFileSync(config.consoleLog, 'utf8');
  assert.ok(log.includes(TINY_BANNER), 'banner in the console log');
  assert.ok(log.includes('power button pressed'), 'poweroff went through the ACPI button');
  await assert.rejects(vm.pause(), /exited/);
});

test('a VM killed from outside (SIGKILL) ends as crashed; kill() ends as killed', { timeout: 60_000 }, async () => {
  const b = await start(vmConfig('bravo'));
  const c = await start(vmConfig('charlie'));
  const bExit = exitOf(b);
  process.kill(b.pid, 'SIGKILL');
  const eb = await bExit;
  assert.equal(eb.reason, 'crashed');
  assert.equal(eb.signal, 'SIGKILL');

  await c.kill();
  const ec = await exitOf(c);
  assert.equal(ec.reason, 'killed');
  assert.equal(processAlive(c.pid), false);
});

test('adopt(): after detach, the VM keeps running and is found again; a guest reboot ends it as reboot', { timeout: 120_000 }, async () => {
  const config = vmConfig('delta');
  const vm = await start(config);
  let con = new ConsoleReader(await vm.openConsole(), config.consoleLog);
  con.stream.write('\n');
  await con.waitFor(new RegExp(TINY_PROMPT));
  await con.run('export MARK=before-detach');
  con.stream.destroy();
  let firstHandleExited = false;
  vm.onExit(() => (firstHandleExited = true));
  vm.detach();
  assert.equal(processAlive(vm.pid), true, 'detach leaves the VM running');

  // A pid that is not ours (this test process) and a pid that does not exist are not adopted.
  assert.equal(await engine.adopt(config, process.pid), null);
  assert.equal(await engine.adopt(vmConfig('not-delta'), vm.pid), null);

  const again = await engine.adopt(config, vm.pid);
  assert.ok(again, 'adopted');
  assert.equal(again.pid, vm.pid);
  assert.equal(await again.queryState(), 'running');
  con = new ConsoleReader(await again.openConsole(), config.consoleLog);
  assert.match(await con.run('echo $MARK'), /\nbefore-detach\r?\n/, 'same shell, same state');

  // A reboot typed in the guest ends the process (-no-reboot); seen through QMP and /proc, not waitpid.
  const exited = exitOf(again);
  con.stream.write('reboot\n');
  assert.equal((await exited).reason, 'reboot');
  assert.equal(firstHandleExited, false, 'a detached handle reports nothing');
  assert.equal(await engine.adopt(config, vm.pid), null, 'gone now');
});

/** Runs a module-level snippet in a fresh Node process that can import our sources (.ts under tsx, .js when compiled). */
function runNode(code: string): Promise<string> {
  const ts = fileURLToPath(import.meta.url).endsWith('.ts');
  const src = (rel: string) => new URL(`../../src/${rel}.${ts ? 'ts' : 'js'}`, import.meta.url).href;
  const prelude = `const { QemuEngine } = await import(${JSON.stringify(src('engines/qemu/engine'))});\n`;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [...(ts ? ['--import', 'tsx'] : []), '--input-type=module', '-e', prelude + code], { env: { ...process.env, HANGAR_LOG_LEVEL: 'warn' }, timeout: 60_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(String(stdout)),
    );
  });
}

test('a VM outlives the process that started it (hard exit, no detach) and is adopted', { timeout: 120_000 }, async () => {
  const config = vmConfig('echo');
  // The other process starts the VM and exits at once, the way a crashing daemon would.
  const out = await runNode(`const h = await new QemuEngine().start(${JSON.stringify(config)}); console.log(h.pid); process.exit(0);`);
  const pid = Number(out.trim().split('\n').pop());
  assert.ok(Number.isInteger(pid) && pid > 0, `pid from the other process: ${out}`);
  pids.add(pid);
  assert.equal(processAlive(pid), true, 'still running after its starter exited');

  const vm = await engine.adopt(config, pid);
  assert.ok(vm);
  const con = new ConsoleReader(await vm.openConsole(), config.consoleLog);
  con.stream.write('\n');
  await con.waitFor(new RegExp(TINY_PROMPT));
  assert.match(await con.run('echo $((6*7))'), /\n42\r?\n/);
  const exited = exitOf(vm);
  await vm.kill();
  assert.equal((await exited).reason, 'killed');
});

test('start() with a kernel that does not exist fails with ENGINE_FAILED and leaves no process', { timeout: 60_000 }, async () => {
  const config = { ...vmConfig('foxtrot'), boot: { kernel: path.join(tmp, 'no-such-kernel') } };
  await assert.rejects(engine.start(config), (e: unknown) => {
    assert.ok(isHangarError(e));
    assert.equal(e.code, 'ENGINE_FAILED');
    assert.match(e.message, /no-such-kernel/);
    return true;
  });
  const leftovers = fs
    .readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d) && processAlive(Number(d)) && (processArgs(Number(d)) ?? []).some((a) => a.includes(config.runDir)));
  assert.deepEqual(leftovers, []);
});

test('disk images: raw (read-write, with serial) and qcow2 (read-only) are seen and used by the guest', { timeout: 120_000 }, async () => {
  const dir = path.join(tmp, 'disks');
  fs.mkdirSync(dir, { recursive: true });
  const raw = path.join(dir, 'data.raw');
  const qcowSrc = path.join(dir, 'ro.raw');
  const qcow = path.join(dir, 'ro.qcow2');
  const rawBytes = Buffer.alloc(1024 * 1024);
  rawBytes.write('hangar-raw-disk-marker', 0);
  fs.writeFileSync(raw, rawBytes);
  const roBytes = Buffer.alloc(1024 * 1024);
  roBytes.write('hangar-qcow2-disk-marker', 0);
  fs.writeFileSync(qcowSrc, roBytes);
  await new Promise<void>((resolve, reject) =>
    execFile('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', qcowSrc, qcow], (err) => (err ? reject(err) : resolve())),
  );

  const config: EngineVmConfig = {
    ...vmConfig('golf'),
    disks: [
      { id: 'data', path: raw, format: 'raw', serial: 'hg-data-1' },
      { id: 'ro', path: qcow, format: 'qcow2', readOnly: true },
    ],
  };
  const vm = await start(config);
  const exited = exitOf(vm);
  const con = new ConsoleReader(await vm.openConsole(), config.consoleLog);
  con.stream.write('\n');
  await con.waitFor(new RegExp(TINY_PROMPT));

  assert.match(await con.run('head -c 22 /dev/vda; echo'), /\nhangar-raw-disk-marker\r?\n/);
  assert.match(await con.run('cat /sys/block/vda/serial; echo'), /\nhg-data-1\r?\n/);
  assert.match(await con.run('head -c 24 /dev/vdb; echo'), /\nhangar-qcow2-disk-marker\r?\n/);
  assert.match(await con.run('cat /sys/block/vdb/ro'), /\n1\r?\n/, 'the qcow2 disk is read-only in the guest');
  // A write through the guest reaches the raw file once flushed (kept short: the console wraps at 80 columns).
  await con.run('printf guest-wrote-this|dd of=/dev/vda seek=8 conv=fsync');

  await vm.kill();
  await exited;
  const after = fs.readFileSync(raw);
  assert.equal(after.subarray(4096, 4096 + 16).toString(), 'guest-wrote-this');
  assert.equal(after.subarray(0, 22).toString(), 'hangar-raw-disk-marker');
});
