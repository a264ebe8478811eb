/**
 * Snapshots through hangard, its API and the CLI, with the tiny guest on a
 * qcow2 data disk (/dev/vda in the guest): a disk snapshot brings a marker
 * back, a memory snapshot of a running guest resumes its counter where it
 * was, restore refuses while it would lose unsaved data, a copy from a
 * snapshot boots with the snapshot's data, delete. Then the daemon is
 * SIGKILLed at each step of each operation (test/helpers/crash-at-snapshot-step.ts)
 * and the next daemon must leave the snapshot list and the disks agreeing,
 * in the old state or the new one.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { startDaemon, waitOperation, ConsoleSession, type TestDaemon, type StartDaemonOptions } from '../helpers/daemon.js';
import { runHangar, expectOk } from '../helpers/cli.js';
import { START_TICKS, lastTick, waitForCountBack, waitForTick } from '../helpers/guest-ticks.js';
import { TINY_PROMPT } from '../../src/host/images/tiny.js';

const CRASH_PRELOAD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'helpers', 'crash-at-snapshot-step.js');
const daemons: TestDaemon[] = [];
after(async () => { for (const d of daemons) await d.cleanup(); });

function tags(file: string): string[] {
  const info = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', '-f', 'qcow2', file], { encoding: 'utf8' })) as { snapshots?: Array<{ name: string }> };
  return (info.snapshots ?? []).map((s) => s.name).sort();
}

async function ok(d: TestDaemon, method: string, url: string, body?: unknown): Promise<any> {
  const op = await waitOperation(d, await d.request(method, url, body));
  assert.equal(op.status, 'success', `${method} ${url}: ${JSON.stringify(op.error)}`);
  return op.result;
}

async function diskPaths(d: TestDaemon, vm: string): Promise<Record<string, string>> {
  const r = await d.request('GET', `/1.0/vms/${vm}/disks`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return Object.fromEntries((r.body.metadata as Array<{ name: string; path: string }>).map((x) => [x.name, x.path]));
}

async function console(d: TestDaemon, vm: string): Promise<ConsoleSession> {
  const con = await ConsoleSession.open(d, vm);
  await con.waitForPrompt(TINY_PROMPT);
  return con;
}

const writeMarker = (con: ConsoleSession, m: string): Promise<string> => con.run(`printf '${m}' | dd of=/dev/vda conv=notrunc,fsync 2>/dev/null`);
/** The first 6 bytes of a qcow2 file as the host reads them (no VM may hold it). */
function hostMarker(file: string): string {
  const out = execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'read -v 0 6', file], { encoding: 'utf8' });
  const hex = /^00000000:\s+((?:[0-9a-f]{2}\s)+)/m.exec(out)?.[1] ?? '';
  return Buffer.from(hex.trim().split(/\s+/).map((h) => parseInt(h, 16))).toString('latin1');
}
const readMarker = async (con: ConsoleSession): Promise<string> => (/MARK-[A-Z]/.exec(await con.run('dd if=/dev/vda bs=6 count=1 2>/dev/null; echo')) ?? [''])[0];

test('disk and memory snapshots of a tiny VM through the API and the CLI: restore, refusal, copy, delete', { timeout: 240_000 }, async (t) => {
  const d = await startDaemon();
  daemons.push(d);
  await ok(d, 'POST', '/1.0/vms', { name: 'sv', image: 'tiny', memory: '256M', disks: [{ name: 'data', size: '32M' }] });
  let con = await console(d, 'sv');
  await writeMarker(con, 'MARK-A');
  await ok(d, 'PUT', '/1.0/vms/sv/state', { action: 'stop', force: true });

  // A disk snapshot of the stopped VM, by the CLI.
  const created = expectOk(await runHangar(['snapshot', 'create', 'sv', 'disk1', '--json'], { env: d.env }), 'snapshot create');
  assert.equal(JSON.parse(created.stdout).name, 'disk1');

  // A memory snapshot of the running guest while it counts.
  await ok(d, 'PUT', '/1.0/vms/sv/state', { action: 'start' });
  con = await console(d, 'sv');
  await writeMarker(con, 'MARK-B');
  con.send(`${START_TICKS}\n`);
  await waitForTick(() => con.output, 5);
  const before = lastTick(con.output);
  const mem = await ok(d, 'POST', '/1.0/vms/sv/snapshots', { name: 'mem1', memory: true });
  const atSnap = lastTick(con.output);
  assert.equal(mem.memory, true);
  assert.ok(mem.vmStateBytes > 0);

  // Refused while the VM runs, with the rule and the way out in the message; exit code 4 (conflicting state).
  const refused = await runHangar(['snapshot', 'restore', 'sv', 'mem1'], { env: d.env });
  assert.equal(refused.code, 4, refused.stderr);
  assert.match(refused.stderr, /is running: restoring would lose.*--force/s);

  const reached = await waitForTick(() => con.output, atSnap + 15);
  const mark = con.output.length;
  await ok(d, 'POST', '/1.0/vms/sv/snapshots/mem1/restore', { force: true });
  // Ticks the old guest printed just before the restore may still be on their way to this
  // console when the request returns; the restored guest is where the count drops back.
  const resumed = await waitForCountBack(() => con.output.slice(mark), reached);
  t.diagnostic(`memory snapshot between tick-${before} and tick-${atSnap}; restored at tick-${reached}; resumed at tick-${resumed}`);
  assert.ok(resumed > before && resumed <= atSnap + 2, `resumed at tick-${resumed}, not where the snapshot was (tick-${before}..${atSnap})`);
  assert.equal((await d.request('GET', '/1.0/vms/sv')).body.metadata.state, 'running');
  assert.equal(await readMarker(con), 'MARK-B');

  // Stopped after running: the disk snapshot is refused (it ran since the newest snapshot), forced it works.
  await ok(d, 'PUT', '/1.0/vms/sv/state', { action: 'stop', force: true });
  const r = await d.request('POST', '/1.0/vms/sv/snapshots/disk1/restore', {});
  assert.equal(r.status, 409);
  assert.match(r.body.error.message, /has run since its newest snapshot "mem1"/);
  await ok(d, 'POST', '/1.0/vms/sv/snapshots/disk1/restore', { force: true });
  const dataFile = (await diskPaths(d, 'sv')).data!;
  assert.equal(hostMarker(dataFile), 'MARK-A', 'the disk snapshot brought the first marker back');

  // The memory snapshot of a stopped VM: QEMU starts from it and the guest counts on from the snapshot.
  const logBefore = String((await d.request('GET', '/1.0/vms/sv/logs')).body).length;
  const started = await ok(d, 'POST', '/1.0/vms/sv/snapshots/mem1/restore', { force: true });
  assert.equal(started.state, 'running');
  const logTail = async (): Promise<string> => String((await d.request('GET', '/1.0/vms/sv/logs')).body).slice(logBefore);
  await waitForTick(logTail, 1);
  const restarted = Number(/tick-(\d+)/.exec(await logTail())![1]);
  t.diagnostic(`a restore of the stopped VM went on at tick-${restarted}`);
  assert.ok(restarted > before && restarted <= atSnap + 2, `the stopped VM resumed at tick-${restarted}, not where the snapshot was (tick-${before}..${atSnap})`);
  con = await ConsoleSession.open(d, 'sv');

  // A copy of the memory snapshot: a new VM (new id) with the snapshot's disk, booting fresh.
  expectOk(await runHangar(['copy', 'sv/mem1', 'sc'], { env: d.env }), 'copy');
  const sc = (await d.request('GET', '/1.0/vms/sc')).body.metadata;
  const sv = (await d.request('GET', '/1.0/vms/sv')).body.metadata;
  assert.notEqual(sc.id, sv.id);
  assert.equal(sc.state, 'stopped');
  assert.deepEqual(sc.spec.disks.map((x: { volume: string }) => x.volume), ['default/sc-data']);
  await ok(d, 'PUT', '/1.0/vms/sc/state', { action: 'start' });
  const con2 = await console(d, 'sc');
  assert.equal(await readMarker(con2), 'MARK-B', 'the copy has the snapshot\'s data');
  assert.deepEqual(tags((await diskPaths(d, 'sc')).data!), [], 'the copy carries no snapshots');
  await con2.close();

  expectOk(await runHangar(['snapshot', 'delete', 'sv', 'disk1'], { env: d.env }), 'snapshot delete');
  const listed = JSON.parse(expectOk(await runHangar(['snapshot', 'list', 'sv', '--json'], { env: d.env }), 'snapshot list').stdout) as Array<{ name: string }>;
  assert.deepEqual(listed.map((s) => s.name), ['mem1']);
  assert.deepEqual(tags((await diskPaths(d, 'sv')).data!), ['mem1']);
  await con.close();
  await ok(d, 'DELETE', '/1.0/vms/sc?force=true');
  await ok(d, 'DELETE', '/1.0/vms/sv?force=true');
});

test('a daemon SIGKILLed at any step of a snapshot operation leaves the list and the disks agreeing, old or new', { timeout: 240_000 }, async (t) => {
  const opts: StartDaemonOptions = { env: {} };
  const d = await startDaemon(opts);
  daemons.push(d);
  await ok(d, 'POST', '/1.0/vms', { name: 'cv', image: 'tiny', memory: '256M', start: false, disks: [{ name: 'a', size: '16M' }, { name: 'b', size: '16M' }] });
  const files = await diskPaths(d, 'cv');

  const gone = async (pid: number): Promise<void> => {
    const end = Date.now() + 60_000;
    for (;;) {
      let st = '';
      try { st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8'); } catch { return; }
      if (/^\d+ \(.*\) Z/.test(st)) return;
      if (Date.now() > end) throw new Error('the daemon did not crash at the step');
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  /** Starts a daemon that dies at `step`, runs the request, waits for the crash, starts a normal daemon. */
  const crashAt = async (step: string, method: string, url: string, body?: unknown): Promise<void> => {
    opts.env!.NODE_OPTIONS = `--import ${CRASH_PRELOAD}`;
    opts.env!.HANGAR_TEST_CRASH_AT_STEP = step;
    await d.restart();
    delete opts.env!.NODE_OPTIONS;
    delete opts.env!.HANGAR_TEST_CRASH_AT_STEP;
    const res = await d.request(method, url, body);
    assert.equal(res.status, 202, JSON.stringify(res.body));
    await gone(d.pid);
    await d.kill9();
    await d.restart();
  };
  /** The list, every disk's snapshots, and no intent left: all the same. */
  const consistent = async (what: string): Promise<string[]> => {
    const list = ((await d.request('GET', '/1.0/vms/cv/snapshots')).body.metadata as Array<{ name: string }>).map((s) => s.name).sort();
    for (const [disk, file] of Object.entries(files)) assert.deepEqual(tags(file), list, `${what}: disk ${disk} disagrees with the list`);
    const db = new Database(path.join(d.dataDir, 'hangar.db'), { readonly: true });
    try {
      assert.equal((db.prepare('SELECT COUNT(*) AS n FROM snapshot_intents').get() as { n: number }).n, 0, `${what}: an intent was left`);
    } finally { db.close(); }
    return list;
  };
  const marker = (file: string, pattern: number, write = false): boolean => {
    const out = execFileSync('qemu-io', ['-f', 'qcow2', '-c', `${write ? 'write' : 'read'} -P ${pattern} 0 64k`, file], { encoding: 'utf8' });
    return !/Pattern verification failed/.test(out);
  };

  // create: undone unless every disk got it
  await crashAt('create:disk:a', 'POST', '/1.0/vms/cv/snapshots', { name: 'c1' });
  assert.deepEqual(await consistent('create:disk:a'), [], 'an unfinished snapshot is undone');
  await crashAt('create:saved', 'POST', '/1.0/vms/cv/snapshots', { name: 'c1' });
  assert.deepEqual(await consistent('create:saved'), ['c1'], 'a snapshot on every disk is kept');

  // delete: finished
  await crashAt('delete:disk:a', 'DELETE', '/1.0/vms/cv/snapshots/c1');
  assert.deepEqual(await consistent('delete:disk:a'), []);

  // restore: finished on every disk
  for (const f of Object.values(files)) marker(f, 0x41, true);
  await ok(d, 'POST', '/1.0/vms/cv/snapshots', { name: 'c2' });
  for (const f of Object.values(files)) marker(f, 0x42, true);
  await crashAt('restore:disk:a', 'POST', '/1.0/vms/cv/snapshots/c2/restore', {});
  assert.deepEqual(await consistent('restore:disk:a'), ['c2']);
  for (const [disk, f] of Object.entries(files)) assert.ok(marker(f, 0x41), `restore:disk:a: disk ${disk} is not at the snapshot`);

  // copy: undone, nothing of the new VM is left
  for (const step of ['copy:disk:a']) {
    await crashAt(step, 'POST', '/1.0/vms/cv/copy', { name: 'cc' });
    assert.equal((await d.request('GET', '/1.0/vms/cc')).status, 404, `${step}: a half copy became a VM`);
    for (const disk of ['a', 'b']) assert.equal(fs.existsSync(files[disk]!.replace(/cv-/, 'cc-')), false, `${step}: the copy's volume ${disk} is left`);
    assert.deepEqual(await consistent(step), ['c2']);
  }

  // A memory snapshot of the running VM, crash after QEMU saved it: the next daemon keeps it.
  await ok(d, 'PUT', '/1.0/vms/cv/state', { action: 'start' });
  await crashAt('create:saved', 'POST', '/1.0/vms/cv/snapshots', { name: 'm1', memory: true });
  assert.equal((await d.request('GET', '/1.0/vms/cv')).body.metadata.state, 'running', 'the VM was re-adopted');
  assert.deepEqual(await consistent('memory create:saved'), ['c2', 'm1']);
  const m1 = (await d.request('GET', '/1.0/vms/cv/snapshots/m1')).body.metadata;
  assert.equal(m1.memory, true);
  assert.ok(m1.vmStateBytes > 0);
  t.diagnostic('every crash point left the old or the new state');
  await ok(d, 'DELETE', '/1.0/vms/cv?force=true');
});
