/**
 * Disk counters of a micro-engine VM, end to end: the ring-3 test guest
 * guests/blk-io.c runs on hangar-vmm under a real daemon that samples
 * every second, reads its whole 4 MiB data disk once, writes 64 KiB and
 * stays up. The sampler takes hangar-vmm's own counters (its GET /metrics),
 * so the VM's history, GET /1.0/metrics and Prometheus' per-disk series
 * show at least those bytes, named by the VM's disk.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startDaemon, waitOperation, type TestDaemon } from '../helpers/daemon.js';
import { runHangar } from '../helpers/cli.js';
import { buildGuest, guestTestsUnavailable } from '../helpers/vmm.js';
import { parsePrometheusText } from '../helpers/prom-text.js';
import { until as untilDone } from '../helpers/until.js';

const skip = guestTestsUnavailable() ?? false;
const DISK = 4 << 20;
const WRITTEN = 64 * 1024;
let d: TestDaemon;

before(async () => {
  if (skip) return;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-test-monitor-micro-'));
  d = await startDaemon({ dataDir, args: ['--sample-interval', '1'] });
});
after(async () => { await d?.cleanup(); });

interface Sample { t: number; diskReadBytes: number; diskWriteBytes: number }

/** Waits are long: a loaded host takes minutes where a quiet one takes seconds. */
const until = <T>(what: string, get: () => Promise<T | null | undefined | false>, ms = 180_000): Promise<T> => untilDone(what, get, ms);

test('a micro VM that reads and writes its disk: hangar-vmm\'s counters reach the history, the summary and /metrics', { skip, timeout: 600_000 }, async () => {
  const elf = buildGuest('blk-io');
  const imp = await runHangar(['image', 'import', 'blkio', '--kernel', elf], { env: d.env });
  assert.equal(imp.code, 0, imp.stderr);
  const op = await waitOperation(d, await d.request('POST', '/1.0/vms', {
    name: 'blk', image: 'blkio', engine: 'micro', memory: '64M', disks: [{ name: 'data', size: '4M' }],
  }));
  assert.equal(op.status, 'success', JSON.stringify(op));
  await until('the guest is done with its disk', async () => {
    const r = await d.request('GET', '/1.0/vms/blk/logs');
    return String(r.body).includes('blkio: done');
  });

  // The history: once a sample follows the guest's work, it counts the whole disk read and the writes.
  const last = await until('a sample with the disk\'s bytes', async () => {
    const s = (await d.request('GET', '/1.0/vms/blk/metrics?since=10m')).body.metadata.samples as Sample[];
    const x = s.at(-1);
    return x && x.diskReadBytes >= DISK && x.diskWriteBytes >= WRITTEN ? x : null;
  });
  // What the guest did, and not twice it.
  assert.ok(last.diskReadBytes < 2 * DISK, JSON.stringify(last));
  assert.ok(last.diskWriteBytes < 2 * WRITTEN, JSON.stringify(last));

  const summary = (await d.request('GET', '/1.0/metrics')).body.metadata as { vms: Array<{ vm: string; engine: string; sample: Sample | null }> };
  const blk = summary.vms.find((v) => v.vm === 'blk');
  assert.equal(blk?.engine, 'micro');
  assert.ok(blk!.sample!.diskReadBytes >= DISK);

  // Prometheus: per-disk series, named by the VM's disk.
  const prom = await d.request('GET', '/metrics');
  assert.equal(prom.status, 200);
  const families = parsePrometheusText(prom.body as string);
  const read = families.get('hangar_vm_disk_read_bytes_total')?.samples.find((s) => s.labels.vm === 'blk');
  assert.ok(read, `no read series for blk: ${[...families.keys()].join(' ')}`);
  assert.equal(read.labels.disk, 'data');
  assert.ok(read.value >= DISK);

  const del = await waitOperation(d, await d.request('DELETE', '/1.0/vms/blk?force=true'));
  assert.equal(del.status, 'success', JSON.stringify(del));
});
