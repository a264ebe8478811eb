/**
 * QEMU's counters for monitoring, parsed from answers recorded from a real
 * QEMU 7.2 (test/fixtures/monitor/*.json: the `tiny` image booted with a
 * qcow2 disk `root` named as our command line names it, once without and
 * once with a balloon device whose guest has no balloon driver).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { projectRoot } from '../../src/common/paths.js';
import { HangarError } from '../../src/common/errors.js';
import { QemuDeviceCounters, parseBalloonGuestStats, parseBlockstats, type QmpExecute } from '../../src/engines/qemu/device-counters.js';

type Recorded = Record<string, { return?: unknown; error?: { class: string; desc: string } }>;
const fixture = (name: string): Recorded => JSON.parse(fs.readFileSync(path.join(projectRoot(), 'test/fixtures/monitor', name), 'utf8')) as Recorded;

/** Replays recorded answers the way QmpClient delivers them (errors as ENGINE_FAILED with the class). */
function replay(rec: Recorded, calls: string[]): QmpExecute {
  return (async (cmd: string, args?: Record<string, unknown>) => {
    const key = cmd === 'qom-get' || cmd === 'qom-set' ? `${cmd} ${String(args?.property)}` : cmd;
    calls.push(key);
    const a = rec[key];
    if (!a) throw new Error(`no recorded answer for ${key}`);
    if (a.error) throw new HangarError('ENGINE_FAILED', `QMP ${cmd}: ${a.error.desc}`, { command: cmd, class: a.error.class, desc: a.error.desc });
    return a.return;
  }) as QmpExecute;
}

test('query-blockstats: one entry per disk, named by our node names, with the bytes the guest read', () => {
  const disks = parseBlockstats(fixture('qmp-qemu7.2-no-balloon.json')['query-blockstats']!.return);
  assert.equal(disks.length, 1);
  assert.equal(disks[0]!.id, 'root');
  assert.ok(disks[0]!.readBytes > 0, 'the booting guest read its disk');
  assert.equal(disks[0]!.readOps, 2);
  assert.equal(disks[0]!.writeBytes, 0);
});

test('a VM without a balloon: disks counted, guest memory null, and the balloon is not asked for again', async () => {
  const calls: string[] = [];
  const c = new QemuDeviceCounters(replay(fixture('qmp-qemu7.2-no-balloon.json'), calls));
  const first = await c.read();
  assert.equal(first.guestMemory, null);
  assert.equal(first.disks[0]!.id, 'root');
  await c.read();
  assert.deepEqual(calls, ['query-blockstats', 'query-balloon', 'query-blockstats']);
});

test('a balloon whose guest never reported (last-update 0, every stat 2^64-1): guest memory unknown', async () => {
  const rec = fixture('qmp-qemu7.2-balloon-no-guest-driver.json');
  assert.equal(parseBalloonGuestStats(rec['qom-get guest-stats']!.return), null);
  const calls: string[] = [];
  const c = new QemuDeviceCounters(replay(rec, calls));
  assert.equal((await c.read()).guestMemory, null);
  await c.read();
  // The balloon exists: its statistics are read each time (the guest may load its driver later).
  assert.deepEqual(calls, ['query-blockstats', 'query-balloon', 'qom-set guest-stats-polling-interval', 'qom-get guest-stats', 'query-blockstats', 'qom-get guest-stats']);
});

test('guest statistics once the guest reports: used = total - available (free when available is missing)', () => {
  // The recorded answer's shape, with the values a reporting guest fills in.
  const rec = fixture('qmp-qemu7.2-balloon-no-guest-driver.json')['qom-get guest-stats']!.return as { stats: Record<string, number>; 'last-update': number };
  const reporting = { ...rec, 'last-update': 1796001700, stats: { ...rec.stats, 'stat-total-memory': 1000 * 2 ** 20, 'stat-available-memory': 600 * 2 ** 20, 'stat-free-memory': 400 * 2 ** 20 } };
  assert.deepEqual(parseBalloonGuestStats(reporting), { totalBytes: 1000 * 2 ** 20, usedBytes: 400 * 2 ** 20 });
  const noAvail = { ...reporting, stats: { ...reporting.stats, 'stat-available-memory': rec.stats['stat-available-memory']! } };
  assert.deepEqual(parseBalloonGuestStats(noAvail), { totalBytes: 1000 * 2 ** 20, usedBytes: 600 * 2 ** 20 });
});
