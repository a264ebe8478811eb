/**
 * Admission settings reach a real hangard: from <data dir>/hangard.json and
 * from its flags (which win), shown in GET /1.0/host, enforced on create;
 * a bad setting stops the daemon at start with the setting named. No VM is
 * booted here (creates use start: false).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startDaemon, waitOperation } from '../helpers/daemon.js';

test('hangard.json and flags set the budget; the VM count cap and a VM too big for the host are refused', { timeout: 120_000 }, async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-test-adm-'));
  fs.writeFileSync(path.join(dataDir, 'hangard.json'), JSON.stringify({ admission: { maxVms: 5, memoryRatio: 0.01, cpuRatio: 3 } }));
  const d = await startDaemon({ dataDir, args: ['--max-vms', '2'] });
  try {
    const host = (await d.request('GET', '/1.0/host')).body.metadata;
    const cpus = os.cpus().length;
    assert.equal(host.budget.vms.limit, 2, 'the flag wins over the file');
    assert.equal(host.budget.cpus.limit, cpus * 3, 'the file sets what the flags leave');
    assert.equal(host.budget.settings.memoryRatio, 0.01);
    const memLimit = host.budget.memoryBytes.limit as number;
    assert.ok(memLimit > 128 * 2 ** 20 && memLimit < 512 * 2 ** 20, `limit ${memLimit}`);

    const big = await d.request('POST', '/1.0/vms', { name: 'big', image: 'tiny', memory: '512M', start: false });
    assert.equal(big.status, 422, JSON.stringify(big.body));
    assert.equal(big.body.error.code, 'RESOURCE_EXHAUSTED');
    assert.match(big.body.error.message, /^cannot create VM "big": it needs 512M of memory/);

    for (const name of ['a', 'b']) {
      const op = await waitOperation(d, await d.request('POST', '/1.0/vms', { name, image: 'tiny', memory: '128M', start: false }));
      assert.equal(op.status, 'success', JSON.stringify(op));
    }
    const third = await d.request('POST', '/1.0/vms', { name: 'c', image: 'tiny', memory: '128M', start: false });
    assert.equal(third.status, 422);
    assert.match(third.body.error.message, /2 VMs are defined and this daemon admits at most 2/);
    assert.deepEqual((await d.request('GET', '/1.0/vms')).body.metadata.map((v: { name: string }) => v.name), ['a', 'b']);
    // The micro engine's limits are enforced at create too, naming the rule.
    const odd = await d.request('POST', '/1.0/vms', { name: 'm', image: 'tiny', engine: 'micro', memory: '129M', start: false });
    assert.equal(odd.status, 400);
    assert.equal(odd.body.error.message, 'memory must be a multiple of 2 MiB for engine micro, got 129M');
  } finally {
    await d.cleanup();
  }
});

test('a bad admission setting stops hangard at start, naming it', { timeout: 60_000 }, async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-test-adm-'));
  try {
    await assert.rejects(startDaemon({ dataDir, args: ['--cpu-ratio', 'lots'] }), /hangard exited during start-up: hangard: flags: cpuRatio must be a number above 0/);
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
