/**
 * The API routes and the VM manager behind them, with a real store on a real
 * SQLite file and a scripted in-process engine in place of QEMU, so failure
 * paths (engine start fails, a guest ignores the power button, a process
 * crashes) can be produced on demand.
 */
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, type Duplex } from 'node:stream';
import { pino } from 'pino';
import type { FastifyInstance } from 'fastify';
import type { Engine, EngineVmConfig, VmExit, VmHandle } from '../../src/engines/engine.js';
import { Store } from '../../src/host/store.js';
import { OperationManager } from '../../src/host/operations.js';
import { EventBus } from '../../src/host/events.js';
import { HostChecker } from '../../src/host/hostcheck.js';
import { VmManager } from '../../src/host/vms.js';
import { buildServer } from '../../src/host/server.js';
import { HangarError } from '../../src/common/errors.js';
import { capabilitiesOf, registryOf } from '../helpers/engines.js';
import type { AdmissionSettings, HostResources } from '../../src/host/admission.js';

/** A VM "process" that lives in this test; it exits when told to. */
class FakeHandle implements VmHandle {
  static nextPid = 900000;
  readonly pid = FakeHandle.nextPid++;
  readonly engine = 'qemu' as const;
  state: 'running' | 'paused' = 'running';
  ignoresPowerButton = false;
  /** A process that lives but does not answer on its control socket. */
  deaf = false;
  private listeners: Array<(e: VmExit) => void> = [];
  exitInfo: VmExit | null = null;
  shutdownRequests = 0;
  constructor(readonly config: EngineVmConfig) {}
  async pause(): Promise<void> { this.state = 'paused'; }
  async resume(): Promise<void> { this.state = 'running'; }
  async requestShutdown(): Promise<void> {
    this.shutdownRequests++;
    if (!this.ignoresPowerButton) setTimeout(() => this.exit({ reason: 'poweroff' }), 5);
  }
  async kill(): Promise<void> { this.exit({ reason: 'killed', detail: 'killed on request' }); }
  async queryState(): Promise<'running' | 'paused'> {
    if (this.deaf) throw new HangarError('TIMEOUT', 'no answer');
    return this.state;
  }
  async stats() { return { pid: this.pid, rssBytes: 1234, cpuSeconds: 0.5, state: this.state }; }
  async openConsole(): Promise<Duplex> { return new PassThrough(); }
  onExit(l: (e: VmExit) => void): void { if (this.exitInfo) l(this.exitInfo); else this.listeners.push(l); }
  detach(): void { this.listeners = []; }
  exit(e: VmExit): void {
    if (this.exitInfo) return;
    this.exitInfo = e;
    for (const l of this.listeners) l(e);
  }
}

class FakeEngine implements Engine {
  readonly name = 'qemu' as const;
  handles: FakeHandle[] = [];
  failNextStart: string | null = null;
  ignorePowerButton = false;
  async capabilities() {
    return capabilitiesOf('qemu');
  }
  async start(config: EngineVmConfig): Promise<VmHandle> {
    if (this.failNextStart) { const m = this.failNextStart; this.failNextStart = null; throw new HangarError('ENGINE_FAILED', m); }
    const h = new FakeHandle(config);
    h.ignoresPowerButton = this.ignorePowerButton;
    this.handles.push(h);
    return h;
  }
  /** How adopt() treats a deaf process: QEMU's engine throws, the micro engine answers null. */
  deafAdopt: 'throw' | 'null' | 'handle' = 'throw';
  /** pids killProcess was asked to end. */
  killed: number[] = [];
  private alive(pid: number, runDir: string): FakeHandle | null {
    return this.handles.find((h) => h.pid === pid && !h.exitInfo && h.config.runDir === runDir) ?? null;
  }
  async adopt(config: EngineVmConfig, pid: number): Promise<VmHandle | null> {
    const h = this.alive(pid, config.runDir);
    if (h?.deaf && this.deafAdopt === 'throw') throw new HangarError('ENGINE_FAILED', `pid ${pid} does not answer`);
    if (h?.deaf && this.deafAdopt === 'null') return null;
    return h;
  }
  /** The hint if it is this VM's live process, else the newest live process started in this runDir (its "pid file"). */
  async findProcess(config: EngineVmConfig, hint?: number): Promise<number | null> {
    if (hint !== undefined && this.alive(hint, config.runDir)) return hint;
    const h = [...this.handles].reverse().find((x) => x.config.runDir === config.runDir);
    return h && !h.exitInfo ? h.pid : null;
  }
  async killProcess(config: EngineVmConfig, pid: number): Promise<boolean> {
    const h = this.alive(pid, config.runDir);
    if (!h) return true;
    this.killed.push(pid);
    h.exit({ reason: 'killed' });
    return true;
  }
}

let dir: string;
let store: Store;
let engine: FakeEngine;
let app: FastifyInstance;
let vms: VmManager;
/** Admission as the next build() gets it: a pinned host (8 GiB, 2 CPUs) unless a test sets its own. */
let admission: { admission?: AdmissionSettings; hostResources: HostResources };
const PINNED_HOST = { hostResources: { memoryBytes: 8 * 1024 ** 3, cpus: 2 } };

function build(): { vms: VmManager; ops: OperationManager } {
  const log = pino({ level: 'silent' });
  const operations = new OperationManager(store, log);
  const events = new EventBus(store);
  const images = {
    listImages: () => [{ name: 'tiny' }],
    ensureImage: async (name: string, onProgress?: (stage: string, percent?: number) => void) => {
      onProgress?.('download', 50);
      return { name, kernel: '/nonexistent/vmlinuz', initrd: '/nonexistent/initrd', cmdline: 'console=ttyS0' };
    },
  };
  const m = new VmManager({ dataDir: dir, store, events, operations, engines: registryOf({ qemu: engine }), images, log, ...admission });
  return { vms: m, ops: operations };
}

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-api-'));
  store = new Store(dir);
  engine = new FakeEngine();
  admission = PINNED_HOST;
  const b = build();
  vms = b.vms;
  const log = pino({ level: 'silent' });
  app = await buildServer({ version: 'test', dataDir: dir, vms, operations: b.ops, events: new EventBus(store), host: new HostChecker({ engines: registryOf({ qemu: engine }, { present: false, fullSystem: false, kind: 'absent', detail: 'x' }), budget: () => vms.budget() }), images: { listImages: () => [{ name: 'tiny', description: 'd', status: 'ready' }], ensureImage: async () => { throw new Error('unused'); } }, engines: registryOf({ qemu: engine }), log });
});

afterEach(async () => {
  await app.close();
  vms.shutdown();
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function call(method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, body?: unknown) {
  const r = await app.inject({ method, url, ...(body !== undefined ? { payload: body as object } : {}) });
  return { status: r.statusCode, headers: r.headers, body: r.body ? r.json() : undefined };
}

async function settle(res: { status: number; headers: Record<string, unknown>; body: any }) {
  assert.equal(res.status, 202, JSON.stringify(res.body));
  const w = await call('GET', `${String(res.headers.location)}/wait?timeout=10`);
  assert.equal(w.status, 200);
  return w.body.metadata;
}

test('launch: 202 with Location, operation succeeds, VM running with the config the daemon prepared', async () => {
  const res = await call('POST', '/1.0/vms', { name: 'a', image: 'tiny', memory: '128M' });
  assert.equal(res.body.type, 'async');
  assert.equal(res.headers.location, res.body.operation);
  assert.equal(res.body.metadata.status, 'running');
  const op = await settle(res);
  assert.equal(op.status, 'success');
  assert.equal(op.result.state, 'running');
  const h = engine.handles[0]!;
  assert.equal(h.config.runDir, path.join(dir, 'vms', 'a'));
  assert.equal(h.config.consoleLog, path.join(dir, 'vms', 'a', 'console.log'));
  assert.equal(h.config.accel, 'tcg', 'no full-system KVM here, so TCG');
  assert.equal(h.config.memoryBytes, 128 * 1024 * 1024);
  assert.equal(h.config.boot?.cmdline, 'console=ttyS0');
  const vm = (await call('GET', '/1.0/vms/a')).body.metadata;
  assert.equal(vm.runtime.pid, h.pid);
  assert.equal(vm.runtime.rssBytes, 1234);
  assert.deepEqual((await call('GET', '/1.0/events')).body.metadata.map((e: { type: string }) => e.type), ['created', 'started']);
});

test('stop: a guest that ignores the power button is killed after the timeout, and that is a stop, not a crash', async () => {
  engine.ignorePowerButton = true;
  await settle(await call('POST', '/1.0/vms', { name: 'a', image: 'tiny' }));
  const op = await settle(await call('PUT', '/1.0/vms/a/state', { action: 'stop', timeout: 1 }));
  assert.equal(op.status, 'success');
  assert.equal(engine.handles[0]!.shutdownRequests, 1);
  const vm = (await call('GET', '/1.0/vms/a')).body.metadata;
  assert.equal(vm.state, 'stopped');
  assert.equal(vm.runtime.lastExit.reason, 'killed');
  assert.equal((await call('GET', '/1.0/events')).body.metadata.at(-1).type, 'stopped');
});

test('force stop skips the power button', async () => {
  await settle(await call('POST', '/1.0/vms', { name: 'a', image: 'tiny' }));
  await settle(await call('PUT', '/1.0/vms/a/state', { action: 'stop', force: true }));
  assert.equal(engine.handles[0]!.shutdownRequests, 0);
  assert.equal((await call('GET', '/1.0/vms/a')).body.metadata.state, 'stopped');
});

test('engine start failure: the operation fails, the VM stays defined and stopped with the reason', async () => {
  engine.failNextStart = 'qemu said no';
  const op = await settle(await call('POST', '/1.0/vms', { name: 'a', image: 'tiny' }));
  assert.equal(op.status, 'failure');
  assert.equal(op.error.code, 'ENGINE_FAILED');
  assert.match(op.error.message, /qemu said no/);
  const vm = (await call('GET', '/1.0/vms/a')).body.metadata;
  assert.equal(vm.state, 'stopped');
  assert.equal(vm.runtime.pid, null);
  assert.equal(vm.runtime.lastExit.reason, 'start-failed');
  // Starting again works.
  assert.equal((await settle(await call('PUT', '/1.0/vms/a/state', { action: 'start' }))).status, 'success');
});

test('an exit nobody asked for is a crash; a guest poweroff is a stop', async () => {
  await settle(await call('POST', '/1.0/vms', { name: 'a', image: 'tiny' }));
  await settle(await call('POST', '/1.0/vms', { name: 'b', image: 'tiny' }));
  engine.handles[0]!.exit({ reason: 'crashed', detail: 'signal SIGSEGV' });
  engine.handles[1]!.exit({ reason: 'poweroff' });
  await new Promise((r) => setImmediate(r));
  assert.equal((await call('GET', '/1.0/vms/a')).body.metadata.state, 'crashed');
  assert.equal((await call('GET', '/1.0/vms/b')).body.metadata.state, 'stopped');
  const ev = (await call('GET', '/1.0/events')).body.metadata as Array<{ vm: string; type: string; reason?: string }>;
  assert.deepEqual(ev.filter((e) => e.vm === 'a').at(-1), { ...ev.filter((e) => e.vm === 'a').at(-1), type: 'crashed', reason: 'crashed: signal SIGSEGV' });
  assert.equal(ev.filter((e) => e.vm === 'b').at(-1)!.type, 'stopped');
});

test('pause and resume change state and emit events; wrong states are refused at once', async () => {
  await settle(await call('POST', '/1.0/vms', { name: 'a', image: 'tiny' }));
  assert.equal((await call('PUT', '/1.0/vms/a/state', { action: 'resume' })).status, 409);
  await settle(await call('PUT', '/1.0/vms/a/state', { action: 'pause' }));
  assert.equal(engine.handles[0]!.state, 'paused');
  assert.equal((await call('GET', '/1.0/vms/a')).body.metadata.state, 'paused');
  await settle(await call('PUT', '/1.0/vms/a/state', { action: 'resume' }));
  assert.equal((await call('GET', '/1.0/vms/a')).body.metadata.state, 'running');
});

test('actions on one VM run in order under its lock', async () => {
  await settle(await call('POST', '/1.0/vms', { name: 'a', image: 'tiny' }));
  const stop = await call('PUT', '/1.0/vms/a/state', { action: 'stop' });
  const start = await call('PUT', '/1.0/vms/a/state', { action: 'start' });
  assert.equal((await settle(stop)).status, 'success');
  assert.equal((await settle(start)).status, 'success');
  assert.equal(engine.handles.length, 2);
  assert.equal((await call('GET', '/1.0/vms/a')).body.metadata.state, 'running');
});

test('delete: refused while running, forced kills it; run directory removed', async () => {
  await settle(await call('POST', '/1.0/vms', { name: 'a', image: 'tiny' }));
  assert.ok(fs.existsSync(path.join(dir, 'vms', 'a')));
  const r = await call('DELETE', '/1.0/vms/a');
  assert.equal(r.status, 409);
  assert.equal(r.body.error.code, 'INVALID_STATE');
  assert.equal((await settle(await call('DELETE', '/1.0/vms/a?force=true'))).status, 'success');
  assert.ok(engine.handles[0]!.exitInfo);
  assert.ok(!fs.existsSync(path.join(dir, 'vms', 'a')));
  assert.equal((await call('GET', '/1.0/vms/a')).status, 404);
});

test('daemon restart: running VMs are re-adopted, gone ones marked stopped, running operations failed', async () => {
  await settle(await call('POST', '/1.0/vms', { name: 'a', image: 'tiny' }));
  await settle(await call('POST', '/1.0/vms', { name: 'b', image: 'tiny' }));
  store.insertOperation({ id: 'left-over', description: 'x', status: 'running', resources: { vms: [] }, createdAt: new Date().toISOString(), updatedAt: new Date().toISOString() });
  vms.shutdown();
  engine.handles[1]!.exit({ reason: 'crashed' }); // dies while "the daemon is down"
  const next = build();
  assert.equal(next.ops.recover(), 1);
  await next.vms.recover();
  assert.equal(store.requireVm('a').state, 'running');
  assert.equal(store.requireVm('a').pid, engine.handles[0]!.pid);
  assert.equal(store.requireVm('b').state, 'stopped');
  assert.equal(store.requireVm('b').lastExit?.reason, 'exited while the daemon was down');
  assert.equal(store.getOperation('left-over')!.error?.message, 'daemon restarted');
  next.vms.shutdown();
});

test('errors come in our envelope: malformed JSON, unknown route, validation', async () => {
  const bad = await app.inject({ method: 'POST', url: '/1.0/vms', headers: { 'content-type': 'application/json' }, payload: '{"name":' });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error.code, 'INVALID_JSON');
  const nf = await call('GET', '/1.0/nothing');
  assert.equal(nf.status, 404);
  assert.equal(nf.body.type, 'error');
  const v = await call('POST', '/1.0/vms', { name: 'a', image: 'tiny', extra: true });
  assert.equal(v.status, 400);
  assert.match(v.body.error.message, /extra/);
  const txt = await app.inject({ method: 'POST', url: '/1.0/vms', headers: { 'content-type': 'text/plain' }, payload: 'hi' });
  assert.equal(txt.statusCode, 400);
  assert.equal(txt.json().type, 'error');
  const w = await call('GET', '/1.0/operations/nope/wait?timeout=1');
  assert.equal(w.status, 404);
});

test('logs: tail of the console log', async () => {
  await settle(await call('POST', '/1.0/vms', { name: 'a', image: 'tiny', start: false }));
  assert.equal((await app.inject({ method: 'GET', url: '/1.0/vms/a/logs' })).body, '');
  fs.mkdirSync(path.join(dir, 'vms', 'a'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'vms', 'a', 'console.log'), 'one\ntwo\nthree\n');
  assert.equal((await app.inject({ method: 'GET', url: '/1.0/vms/a/logs?tail=2' })).body, 'two\nthree\n');
  assert.equal((await app.inject({ method: 'GET', url: '/1.0/vms/a/logs' })).body, 'one\ntwo\nthree\n');
});

test('two creates of one name at the same moment: one wins, the other is ALREADY_EXISTS', async () => {
  const [a, b] = await Promise.all([
    call('POST', '/1.0/vms', { name: 'twin', image: 'tiny' }),
    call('POST', '/1.0/vms', { name: 'twin', image: 'tiny' }),
  ]);
  assert.deepEqual([a.status, b.status].sort(), [202, 409]);
  const won = a.status === 202 ? a : b;
  assert.equal((await settle(won)).status, 'success');
  assert.equal(store.listVms().length, 1);
});

// --- reconcile on daemon start: records against the processes that really run -----------------

/** Launches VM `name`, then "kills the daemon" and rewrites its record as a crash at that point would leave it. */
async function crashAfterStart(name: string, left: { state: 'starting' | 'stopped' | 'running'; pid: 'none' | 'kept' }): Promise<FakeHandle> {
  await settle(await call('POST', '/1.0/vms', { name, image: 'tiny' }));
  const h = engine.handles.at(-1)!;
  vms.shutdown();
  store.updateVm(name, { state: left.state, pid: left.pid === 'kept' ? h.pid : null, ...(left.state === 'running' ? {} : { startedAt: null }) });
  return h;
}

async function restartDaemon(): Promise<{ vms: VmManager; ops: OperationManager }> {
  const next = build();
  next.ops.recover();
  await next.vms.recover();
  vms = next.vms; // afterEach shuts it down
  return next;
}

function lastEvent(vm: string) {
  return store.listEvents({ vm }).at(-1)!;
}

test('reconcile: died mid-start (starting, no pid), the process answers → adopted, event says so, exits are watched', async () => {
  const h = await crashAfterStart('a', { state: 'starting', pid: 'none' });
  const m = (await restartDaemon()).vms;
  const r = store.requireVm('a');
  assert.equal(r.state, 'running');
  assert.equal(r.pid, h.pid);
  assert.ok(r.startedAt);
  assert.deepEqual(engine.killed, []);
  assert.deepEqual(lastEvent('a'), { ...lastEvent('a'), type: 'started', reason: 'adopted after a daemon restart: its start had not been recorded' });
  // Supervised from now on: a crash is recorded.
  h.exit({ reason: 'crashed', detail: 'boom' });
  await new Promise((r2) => setImmediate(r2));
  assert.equal(store.requireVm('a').state, 'crashed');
  assert.equal((await m.get('a')).runtime.pid, null);
});

test('reconcile: died mid-start, the process does not answer (adopt throws) → exactly that pid killed, stopped "start interrupted"', async () => {
  const h = await crashAfterStart('a', { state: 'starting', pid: 'none' });
  h.deaf = true;
  await restartDaemon();
  assert.deepEqual(engine.killed, [h.pid]);
  const r = store.requireVm('a');
  assert.equal(r.state, 'stopped');
  assert.equal(r.pid, null);
  assert.equal(r.lastExit?.reason, 'start interrupted by a daemon restart');
  assert.match(r.lastExit?.detail ?? '', new RegExp(`pid ${h.pid}.*killed`));
  const e = lastEvent('a');
  assert.equal(e.type, 'stopped');
  assert.match(e.reason ?? '', /^start interrupted by a daemon restart: /);
});

test('reconcile: a deaf process the engine cannot adopt (adopt answers null, micro-style) is still found and killed', async () => {
  const h = await crashAfterStart('a', { state: 'running', pid: 'kept' });
  h.deaf = true;
  engine.deafAdopt = 'null';
  await restartDaemon();
  assert.deepEqual(engine.killed, [h.pid]);
  assert.equal(store.requireVm('a').state, 'stopped');
  assert.equal(store.requireVm('a').lastExit?.reason, 'killed after a daemon restart: its process did not answer');
});

test('reconcile: adopted, but the state query fails → killed, not left half-adopted', async () => {
  const h = await crashAfterStart('a', { state: 'running', pid: 'kept' });
  h.deaf = true;
  engine.deafAdopt = 'handle';
  const m = await restartDaemon();
  assert.deepEqual(engine.killed, [h.pid]);
  assert.equal(store.requireVm('a').state, 'stopped');
  // The manager holds no process for it: a start starts a new one.
  const op = await m.ops.wait(m.vms.changeState('a', { action: 'start' }).id, 10_000);
  assert.equal(op.status, 'success', JSON.stringify(op));
  assert.equal(store.requireVm('a').state, 'running');
  assert.equal(engine.handles.length, 2);
});

test('reconcile: died mid-start and the process is gone too → stopped "start interrupted", nothing killed', async () => {
  const h = await crashAfterStart('a', { state: 'starting', pid: 'none' });
  h.exit({ reason: 'crashed' });
  await restartDaemon();
  assert.deepEqual(engine.killed, []);
  assert.equal(store.requireVm('a').state, 'stopped');
  assert.equal(store.requireVm('a').lastExit?.reason, 'start interrupted by a daemon restart');
  assert.deepEqual(lastEvent('a'), { ...lastEvent('a'), type: 'stopped', reason: 'start interrupted by a daemon restart' });
});

test('reconcile: recorded stopped but its process runs (died after the start, before the commit) → adopted', async () => {
  const h = await crashAfterStart('a', { state: 'stopped', pid: 'none' });
  await restartDaemon();
  assert.equal(store.requireVm('a').state, 'running');
  assert.equal(store.requireVm('a').pid, h.pid);
  assert.equal(lastEvent('a').type, 'started');
});

test('reconcile: recorded stopped, its process runs deaf → killed, the record stays stopped, an event tells', async () => {
  const h = await crashAfterStart('a', { state: 'stopped', pid: 'none' });
  const before = store.requireVm('a');
  h.deaf = true;
  await restartDaemon();
  assert.deepEqual(engine.killed, [h.pid]);
  assert.deepEqual(store.requireVm('a'), before);
  assert.match(lastEvent('a').reason ?? '', /^killed after a daemon restart: its process did not answer/);
});

test('reconcile: a recorded pid that now belongs to someone else is never touched', async () => {
  const h = await crashAfterStart('a', { state: 'running', pid: 'kept' });
  h.exit({ reason: 'crashed' });
  // A new "process" with some other VM's runDir now has a pid; the record still names the old one.
  const stranger = new FakeHandle({ ...h.config, runDir: path.join(dir, 'elsewhere') });
  engine.handles.push(stranger);
  store.updateVm('a', { pid: stranger.pid });
  await restartDaemon();
  assert.deepEqual(engine.killed, []);
  assert.equal(stranger.exitInfo, null);
  assert.equal(store.requireVm('a').state, 'stopped');
  assert.equal(store.requireVm('a').lastExit?.reason, 'exited while the daemon was down');
});

test('reconcile: a VM that never started (no engine config) is left as it is', async () => {
  await settle(await call('POST', '/1.0/vms', { name: 'a', image: 'tiny', start: false }));
  vms.shutdown();
  const before = store.requireVm('a');
  const events = store.listEvents().length;
  await restartDaemon();
  assert.deepEqual(store.requireVm('a'), before);
  assert.equal(store.listEvents().length, events);
});

// --- engine limits and admission -------------------------------------------------------------

test('create checks the size against the engine\'s limits once, naming the rule; nothing is created', async () => {
  const r = await call('POST', '/1.0/vms', { name: 'a', image: 'tiny', memory: '1000K' });
  assert.equal(r.status, 400);
  assert.equal(r.body.error.code, 'INVALID_ARGUMENT');
  assert.equal(r.body.error.message, 'memory must be a multiple of 1 MiB for engine qemu, got 1000K');
  const c = await call('POST', '/1.0/vms', { name: 'a', image: 'tiny', cpus: 256 });
  assert.equal(c.body.error.message, 'cpus must be between 1 and 255 for engine qemu, got 256');
  assert.deepEqual(store.listVms(), []);
  assert.equal(engine.handles.length, 0);
  // GET /1.0 tells clients the limits and the accelerator before they ask.
  const info = await call('GET', '/1.0');
  assert.deepEqual(info.body.metadata.engines[0].limits, { minMemoryBytes: 16 << 20, maxMemoryBytes: 1024 ** 4, memoryGranularityBytes: 1 << 20, maxCpus: 255 });
  assert.equal(info.body.metadata.engines[0].defaultAccel, 'tcg');
});

test('admission: a launch beyond the memory budget is refused at once with the numbers; stopping a VM frees its share', async () => {
  // Pinned host: 8 GiB, 2 CPUs → 7 GiB (1 GiB reserve) and 8 vCPUs admitted.
  assert.equal((await settle(await call('POST', '/1.0/vms', { name: 'a', image: 'tiny', memory: '3G' }))).status, 'success');
  assert.equal((await settle(await call('POST', '/1.0/vms', { name: 'b', image: 'tiny', memory: '3G' }))).status, 'success');
  const over = await call('POST', '/1.0/vms', { name: 'c', image: 'tiny', memory: '2G' });
  assert.equal(over.status, 422);
  assert.equal(over.body.error.code, 'RESOURCE_EXHAUSTED');
  assert.equal(over.body.error.message, 'cannot start VM "c": it needs 2G of memory, 6G of 7G admitted are committed to running VMs (1G free)');
  assert.equal(store.getVm('c'), null, 'a refused launch creates nothing');
  // Defined without starting it is fine; starting it is refused, at once.
  assert.equal((await settle(await call('POST', '/1.0/vms', { name: 'c', image: 'tiny', memory: '2G', start: false }))).status, 'success');
  const start = await call('PUT', '/1.0/vms/c/state', { action: 'start' });
  assert.equal(start.status, 422);
  assert.equal(start.body.error.details.resource, 'memory');
  const host = (await call('GET', '/1.0/host')).body.metadata;
  assert.deepEqual(host.budget.memoryBytes, { committed: 6 * 1024 ** 3, limit: 7 * 1024 ** 3 });
  assert.deepEqual(host.budget.vms, { defined: 3, limit: 1000 });
  assert.equal(engine.handles.length, 2);
  await settle(await call('PUT', '/1.0/vms/a/state', { action: 'stop', force: true }));
  assert.equal((await settle(await call('PUT', '/1.0/vms/c/state', { action: 'start' }))).status, 'success');
  assert.equal(store.requireVm('c').state, 'running');
});

test('admission: vCPUs are bounded by the budget (4 per host CPU), not by the host CPU count per VM', async () => {
  // 2 host CPUs: one VM may have 6 vCPUs (the engine allows 255); the budget holds 8 in all.
  assert.equal((await settle(await call('POST', '/1.0/vms', { name: 'a', image: 'tiny', cpus: 6 }))).status, 'success');
  const r = await call('POST', '/1.0/vms', { name: 'b', image: 'tiny', cpus: 3 });
  assert.equal(r.status, 422);
  assert.equal(r.body.error.message, 'cannot start VM "b": it needs 3 vCPUs, 6 of 8 admitted are committed to running VMs (2 free)');
  assert.equal((await settle(await call('POST', '/1.0/vms', { name: 'b', image: 'tiny', cpus: 2 }))).status, 'success');
});

test('admission: concurrent starts that each fit alone but not together: exactly one starts', async () => {
  for (const name of ['x', 'y', 'z']) await settle(await call('POST', '/1.0/vms', { name, image: 'tiny', memory: '3G', start: false }));
  // Each passes the early check (nothing runs yet); only the real start, under the budget, decides.
  const res = await Promise.all(['x', 'y', 'z'].map((n) => call('PUT', `/1.0/vms/${n}/state`, { action: 'start' })));
  const ops = await Promise.all(res.map((r) => settle(r)));
  assert.deepEqual(ops.map((o) => o.status).sort(), ['failure', 'success', 'success']);
  const failed = ops.find((o) => o.status === 'failure');
  assert.equal(failed.error.code, 'RESOURCE_EXHAUSTED');
  assert.equal(engine.handles.length, 2, 'the refused VM\'s process was never started');
  assert.equal(store.listVms().filter((v) => v.state === 'running').length, 2);
  assert.ok(vms.committed().memoryBytes <= 7 * 1024 ** 3);
});

test('admission: the VM count cap refuses a create, even one that does not start', async () => {
  admission = { ...PINNED_HOST, admission: { memoryReserveBytes: 1024 ** 3, memoryRatio: 1, cpuRatio: 4, maxVms: 2 } };
  vms.shutdown();
  vms = build().vms;
  await app.close();
  app = await buildServer({ version: 'test', dataDir: dir, vms, operations: new OperationManager(store, pino({ level: 'silent' })), events: new EventBus(store), host: new HostChecker({ engines: registryOf({ qemu: engine }), budget: () => vms.budget() }), images: { listImages: () => [{ name: 'tiny', description: 'd', status: 'ready' }], ensureImage: async () => { throw new Error('unused'); } }, engines: registryOf({ qemu: engine }), log: pino({ level: 'silent' }) });
  await settle(await call('POST', '/1.0/vms', { name: 'a', image: 'tiny', start: false }));
  await settle(await call('POST', '/1.0/vms', { name: 'b', image: 'tiny', start: false }));
  const r = await call('POST', '/1.0/vms', { name: 'c', image: 'tiny', start: false });
  assert.equal(r.status, 422);
  assert.equal(r.body.error.code, 'RESOURCE_EXHAUSTED');
  assert.match(r.body.error.message, /2 VMs are defined and this daemon admits at most 2 \(maxVms\)/);
});
