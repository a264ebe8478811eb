/**
 * How long the micro engine waits for a hangar-vmm that starts slowly. In the
 * KVM lab (Node under nested TCG) hangar-vmm needs about a minute to answer and
 * to boot, and the engine's old 10 s limit failed every Debian launch through
 * the daemon there (test/lab/debian-daemon.ts). Here a stand-in for hangar-vmm
 * (a script at dist/src/vmm/main.js's place) opens its control socket late and
 * answers InstanceStart late: the engine's start limit must govern both.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { MicroEngine, microStartTimeoutMs } from '../../src/engines/micro/engine.js';
import type { EngineVmConfig } from '../../src/engines/engine.js';
import { NESTED_KVM } from '../helpers/engines.js';

/** A hangar-vmm stand-in: listens on --api-sock after LISTEN_MS, answers every request 204, InstanceStart after START_MS. */
const STAND_IN = `
const http = require('node:http');
const sock = process.argv[process.argv.indexOf('--api-sock') + 1];
const listenMs = Number(process.env.LISTEN_MS), startMs = Number(process.env.START_MS);
setTimeout(() => {
  http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const reply = () => { res.statusCode = req.method === 'GET' ? 200 : 204; res.end(req.method === 'GET' ? '{"state":"Running"}' : undefined); };
      if (body.includes('InstanceStart')) setTimeout(reply, startMs); else reply();
    });
  }).listen(sock);
}, listenMs);
`;

function setup(t: { after(fn: () => void): void }): { script: string; config: EngineVmConfig } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-micro-start-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const script = path.join(dir, 'dist', 'src', 'vmm', 'main.js');
  fs.mkdirSync(path.dirname(script), { recursive: true });
  fs.writeFileSync(script, STAND_IN);
  const runDir = path.join(dir, 'vms', 'slow');
  return {
    script,
    config: { id: 'id', name: 'slow', cpus: 1, memoryBytes: 128 << 20, boot: { kernel: '/k' }, disks: [], nics: [], accel: 'kvm', runDir, consoleLog: path.join(runDir, 'console.log') },
  };
}

/** The stand-in is no confined VM process: the sandbox (root daemons) stays out of this test. */
function noSandbox(t: { after(fn: () => void): void }): void {
  const old = process.env.HANGAR_VM_SANDBOX;
  process.env.HANGAR_VM_SANDBOX = '0';
  t.after(() => { if (old === undefined) delete process.env.HANGAR_VM_SANDBOX; else process.env.HANGAR_VM_SANDBOX = old; });
}

function withDelays(t: { after(fn: () => void): void }, listenMs: number, startMs: number): void {
  const old = [process.env.LISTEN_MS, process.env.START_MS];
  process.env.LISTEN_MS = String(listenMs);
  process.env.START_MS = String(startMs);
  t.after(() => {
    if (old[0] === undefined) delete process.env.LISTEN_MS; else process.env.LISTEN_MS = old[0];
    if (old[1] === undefined) delete process.env.START_MS; else process.env.START_MS = old[1];
  });
}

test('microStartTimeoutMs: 120 s by default (about a minute is normal under nested TCG), HANGAR_VMM_START_TIMEOUT_S overrides, nonsense is refused', () => {
  assert.equal(microStartTimeoutMs({}), 120_000);
  assert.ok(microStartTimeoutMs({}) >= 60_000, 'the lab measured ~60 s from spawn to a booting guest');
  assert.equal(microStartTimeoutMs({ HANGAR_VMM_START_TIMEOUT_S: '300' }), 300_000);
  assert.equal(microStartTimeoutMs({ HANGAR_VMM_START_TIMEOUT_S: '2.5' }), 2500);
  for (const bad of ['0', '-1', 'ten', '7200']) {
    assert.throws(() => microStartTimeoutMs({ HANGAR_VMM_START_TIMEOUT_S: bad }), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT' && /HANGAR_VMM_START_TIMEOUT_S/.test(e.message), bad);
  }
});

test('a hangar-vmm that answers late and boots late still starts within the start limit', async (t) => {
  noSandbox(t);
  // Both delays are beyond 1 s, the waiting client's per-try limit; the start limit is 10 s.
  withDelays(t, 1500, 1500);
  const { script, config } = setup(t);
  const engine = new MicroEngine({ logger: pino({ level: 'silent' }), vmmMain: script, kvm: async () => NESTED_KVM, startTimeoutMs: 10_000 });
  const h = await engine.start(config);
  t.after(() => h.kill());
  assert.equal(await h.queryState(), 'running');
  await h.kill();
});

test('InstanceStart is bounded by the start limit, not by the client\'s own 10 s: beyond it the start fails and the process is ended', async (t) => {
  noSandbox(t);
  withDelays(t, 0, 4000);
  const { script, config } = setup(t);
  const engine = new MicroEngine({ logger: pino({ level: 'silent' }), vmmMain: script, kvm: async () => NESTED_KVM, startTimeoutMs: 1500 });
  // Should the start wrongly succeed, its handle is ended (a leftover stand-in would hold the test open).
  let leaked: Awaited<ReturnType<MicroEngine['start']>> | undefined;
  t.after(() => leaked?.kill());
  await assert.rejects(engine.start(config).then((h) => { leaked = h; return h; }), (e: Error & { code?: string }) => e.code === 'ENGINE_FAILED' && /InstanceStart|actions/.test(e.message) && /1500 ms/.test(e.message));
  const pid = Number(fs.readFileSync(path.join(config.runDir, 'vmm.pid'), 'utf8'));
  assert.throws(() => process.kill(pid, 0), 'the stand-in was killed');
});
