/**
 * The micro engine drives real hangar-vmm processes: start from an
 * EngineVmConfig, console stream, pause/resume/state/stats, exit reasons,
 * and adopt() after the "daemon" (here: a second engine instance) lost its
 * child: the adopted VM is watched by pid and its exit reason read from the
 * exit record.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import type { EngineVmConfig, VmExit } from '../../src/engines/engine.js';
import { MicroEngine as Engine } from '../../src/engines/micro/index.js';
import { createLogger } from '../../src/common/log.js';
import { probeKvm } from '../../src/kvm/probe.js';

const logger = createLogger('test', 'silent');
class MicroEngine extends Engine { constructor() { super({ logger, kvm: probeKvm }); } }
import { buildGuest, kvmUsable } from '../helpers/vmm.js';

const skip = kvmUsable ? false : 'no usable /dev/kvm';
let echoElf = '';
const pids = new Set<number>();
const dirs: string[] = [];

before(() => { if (!skip) echoElf = buildGuest('echo'); });
after(() => {
  for (const pid of pids) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function vmConfig(name: string): EngineVmConfig {
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), `hangar-micro-${name}-`));
  dirs.push(runDir);
  return {
    id: `id-${name}`, name, cpus: 1, memoryBytes: 32 * 2 ** 20, boot: { kernel: echoElf, cmdline: 'console=ttyS0' },
    disks: [], nics: [], accel: 'kvm', runDir, consoleLog: path.join(runDir, 'console.log'),
  };
}

function collect(s: Duplex): { text: () => string; waitFor: (re: RegExp) => Promise<void> } {
  let text = '';
  const waiters: Array<[RegExp, () => void]> = [];
  s.on('data', (d: Buffer) => {
    text += d.toString('latin1');
    for (let i = waiters.length - 1; i >= 0; i--) if (waiters[i]![0].test(text)) { waiters[i]![1](); waiters.splice(i, 1); }
  });
  return {
    text: () => text,
    waitFor: (re) => (re.test(text) ? Promise.resolve() : new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`console never showed ${re}; saw ${text}`)), 15_000);
      waiters.push([re, () => { clearTimeout(t); resolve(); }]);
    })),
  };
}

test('capabilities report KVM and the devices', { skip }, async () => {
  const caps = await new MicroEngine().capabilities();
  assert.equal(caps.name, 'micro');
  assert.equal(caps.available, true, caps.reason);
  assert.deepEqual(caps.accelerators, ['kvm']);
  assert.ok(caps.devices.includes('serial'));
  assert.equal(caps.snapshots, true, 'the daemon snapshots micro VMs as files (src/host/snapshots/micro.ts)');
});

test('start, console, pause/resume, stats, kill → killed', { skip }, async () => {
  const eng = new MicroEngine();
  const cfg = vmConfig('a');
  const h = await eng.start(cfg);
  pids.add(h.pid);
  const exits: VmExit[] = [];
  h.onExit((e) => exits.push(e));
  const con = await h.openConsole();
  const c = collect(con);
  // The guest may have printed its banner before we attached: the log file has everything.
  await new Promise((r) => setTimeout(r, 200));
  assert.match(fs.readFileSync(cfg.consoleLog, 'latin1'), /echo ready/);
  con.write('via engine\n');
  await c.waitFor(/echo: via engine/);
  assert.equal(await h.queryState(), 'running');
  await h.pause();
  assert.equal(await h.queryState(), 'paused');
  const st = await h.stats();
  assert.equal(st.pid, h.pid);
  assert.equal(st.state, 'paused');
  assert.ok(st.rssBytes > 0);
  await h.resume();
  assert.equal(await h.queryState(), 'running');
  await h.kill();
  await new Promise((r) => setImmediate(r));
  assert.equal(exits.length, 1);
  assert.equal(exits[0]!.reason, 'killed');
  con.destroy();
});

test('guest power off is reported as poweroff with the VMM detail', { skip }, async () => {
  const h = await new MicroEngine().start(vmConfig('b'));
  pids.add(h.pid);
  const exit = new Promise<VmExit>((r) => h.onExit(r));
  const con = await h.openConsole();
  con.write('poweroff\n');
  const e = await exit;
  assert.equal(e.reason, 'poweroff');
  assert.equal(e.exitCode, 0);
  assert.match(e.detail ?? '', /guest powered off/);
  con.destroy();
});

test('requestShutdown() sends Ctrl-Alt-Del through the i8042; the guest powers off', { skip }, async () => {
  const cfg = vmConfig('e');
  const h = await new MicroEngine().start(cfg);
  pids.add(h.pid);
  const exit = new Promise<VmExit>((r) => h.onExit(r));
  const con = await h.openConsole();
  const c = collect(con);
  con.write('ping\n');
  await c.waitFor(/echo: ping/); // the guest is up and has its IRQ handlers installed
  await h.requestShutdown();
  const e = await exit;
  assert.equal(e.reason, 'poweroff');
  assert.match(fs.readFileSync(cfg.consoleLog, 'latin1'), /ctrl-alt-del: powering off/);
  con.destroy();
});

test('adopt() reconnects to a running VM after the first engine detached; exit seen by pid polling', { skip }, async () => {
  const cfg = vmConfig('c');
  const first = await new MicroEngine().start(cfg);
  pids.add(first.pid);
  first.detach();
  const eng2 = new MicroEngine();
  assert.equal(await eng2.adopt(cfg, 999_999_999), null, 'a pid that does not exist is not adopted');
  assert.equal(await eng2.adopt(cfg, process.pid), null, 'a pid that is not our hangar-vmm is not adopted');
  const h = await eng2.adopt(cfg, first.pid);
  assert.ok(h);
  assert.equal(h.pid, first.pid);
  assert.equal(await h.queryState(), 'running');
  const exit = new Promise<VmExit>((r) => h.onExit(r));
  const con = await h.openConsole();
  const c = collect(con);
  con.write('reset\n');
  const e = await exit;
  assert.equal(e.reason, 'reboot');
  assert.match(e.detail ?? '', /i8042/);
  assert.match(c.text(), /echo: reset/);
  con.destroy();
});

test('start fails cleanly on a missing kernel, leaving no process', { skip }, async () => {
  const cfg = vmConfig('d');
  cfg.boot!.kernel = '/nonexistent/kernel';
  await assert.rejects(new MicroEngine().start(cfg), (e: Error & { code?: string }) => e.code === 'NOT_FOUND' && /nonexistent/.test(e.message));
  const left = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
    try { return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(cfg.runDir); } catch { return false; }
  });
  assert.deepEqual(left, [], 'no hangar-vmm process for this VM is left');
});
