/**
 * The monitoring readers against fake /proc and /sys trees written in a
 * temporary folder, shaped like the kernel's files (a command name with a
 * space and a parenthesis, QEMU's vCPU thread names, smaps_rollup, a TAP's
 * statistics).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fakeQemu, fakeRoot, statLine, writeFake } from '../helpers/fake-proc.js';
import { readDiskSpace, readHostCpu, readHostMemory, readLoad1, readProcessCpu, readProcessMemory, readTapCounters, statTicks } from '../../src/host/monitor/procfs.js';

test('statTicks reads utime + stime after a command name holding spaces and parentheses', () => {
  assert.equal(statTicks(statLine(7, 'a) (b c', 150, 50)), 200);
  assert.equal(statTicks('garbage'), null);
});

test('a VM process: total CPU from its stat, vCPU time from the threads QEMU names CPU n/…, RSS and PSS from smaps_rollup', (t) => {
  const root = fakeRoot();
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  fakeQemu(root, 4242, { main: 100, vcpu0: 700, vcpu1: 300, io: 50 });
  const cpu = readProcessCpu(root, 4242);
  assert.deepEqual(cpu, { cpuSeconds: 11.5, vcpuSeconds: 10, threads: 4 });
  assert.deepEqual(readProcessMemory(root, 4242), { rssBytes: 230400 * 1024, pssBytes: 228309 * 1024 });
  // Without smaps_rollup (an older kernel), RSS comes from status and PSS is unknown.
  fs.rmSync(path.join(root, 'proc/4242/smaps_rollup'));
  assert.deepEqual(readProcessMemory(root, 4242), { rssBytes: 230400 * 1024, pssBytes: null });
  // A process that has gone is no error, just nothing.
  assert.equal(readProcessCpu(root, 999), null);
  assert.equal(readProcessMemory(root, 999), null);
});

test('host: busy and total ticks from /proc/stat, memory from meminfo, load from loadavg', (t) => {
  const root = fakeRoot();
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  writeFake(root, 'proc/stat', 'cpu  100 5 50 800 20 3 2 10 40 0\ncpu0 50 2 25 400 10 1 1 5 20 0\nintr 1 2 3\n');
  // busy = user+nice+system+irq+softirq+steal; idle and iowait are not; guest is inside user already.
  assert.deepEqual(readHostCpu(root), { busy: 170, total: 990 });
  writeFake(root, 'proc/meminfo', 'MemTotal:       24684092 kB\nMemFree:         2000000 kB\nMemAvailable:   22000000 kB\nBuffers:          1000 kB\n');
  assert.deepEqual(readHostMemory(root), { totalBytes: 24684092 * 1024, availableBytes: 22000000 * 1024 });
  writeFake(root, 'proc/loadavg', '1.25 0.90 0.50 2/345 6789\n');
  assert.equal(readLoad1(root), 1.25);
});

test("a TAP's counters are turned round: what the host sent into it the guest received", (t) => {
  const root = fakeRoot();
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  writeFake(root, 'sys/class/net/hgt0abc/statistics/rx_bytes', '1000\n');
  writeFake(root, 'sys/class/net/hgt0abc/statistics/tx_bytes', '250000\n');
  assert.deepEqual(readTapCounters(root, 'hgt0abc'), { rxBytes: 250000, txBytes: 1000 });
  assert.equal(readTapCounters(root, 'missing0'), null);
  // A name that could climb out of /sys/class/net is never read.
  assert.equal(readTapCounters(root, '../../etc'), null);
});

test('data directory space: used and total from statfs, percent as df shows it', () => {
  const s = readDiskSpace(os.tmpdir());
  assert.ok(s && s.totalBytes > 0 && s.usedBytes > 0 && s.usedBytes <= s.totalBytes);
  assert.ok(s.usedPercent > 0 && s.usedPercent <= 100);
  assert.equal(readDiskSpace('/nonexistent/hangar'), null);
});
