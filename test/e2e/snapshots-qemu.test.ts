/**
 * The QEMU engine's snapshot jobs on their own (no daemon, no guest boot
 * needed): a failed job reports QEMU's own reason and is dismissed, and a
 * disk the process lacks is named. The guest-level checks (a counter that
 * resumes where the snapshot was, markers on the disk) are in
 * snapshots-daemon.test.ts.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { projectRoot } from '../../src/common/paths.js';
import { createLogger } from '../../src/common/log.js';
import type { EngineVmConfig, VmHandle } from '../../src/engines/engine.js';
import { QemuEngine } from '../../src/engines/qemu/engine.js';
import { processAlive, processArgs } from '../../src/engines/base/procfs.js';
import { probeKvm } from '../../src/kvm/probe.js';

process.env.HANGAR_IMAGE_DIR ??= path.join(projectRoot(), '.cache', 'images');
const { ensureImage } = await import('../../src/host/images/index.js');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hg-snap-'));
const engine = new QemuEngine({ logger: createLogger('test', process.env.HANGAR_LOG_LEVEL ?? 'warn'), kvm: probeKvm });
const pids = new Set<number>();
let image: Awaited<ReturnType<typeof ensureImage>>;
const dataDisk = path.join(tmp, 'data.qcow2');

before(async () => {
  image = await ensureImage('tiny');
  fs.chmodSync(tmp, 0o755);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', dataDisk, '16M']);
});

after(() => {
  for (const pid of pids) {
    if (processAlive(pid) && processArgs(pid)?.some((a) => a.includes(tmp))) process.kill(pid, 'SIGKILL');
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});

function config(loadSnapshot?: string): EngineVmConfig {
  const runDir = path.join(tmp, 'vm');
  return {
    id: 'id-snap', name: 'snap', cpus: 1, memoryBytes: 256 * 1024 * 1024,
    boot: { kernel: image.kernel, initrd: image.initrd, cmdline: image.cmdline },
    disks: [{ id: 'data', path: dataDisk, format: 'qcow2' }],
    nics: [], accel: 'tcg', runDir, consoleLog: path.join(runDir, 'console.log'),
    ...(loadSnapshot ? { loadSnapshot } : {}),
  };
}

async function start(c: EngineVmConfig): Promise<VmHandle> {
  const h = await engine.start(c);
  pids.add(h.pid);
  return h;
}

test('a failed job reports QEMU\'s reason and leaves no job behind', { timeout: 120_000 }, async () => {
  const vm = await start(config());
  try {
    await assert.rejects(vm.snapshots!.load('nope', { disks: ['data'], vmstateDisk: 'data' }, 'job-x'), /does not exist/);
    assert.deepEqual(await vm.snapshots!.finishJob('job-x', 1000), { found: false });
    await assert.rejects(vm.snapshots!.save('s2', { disks: ['other'], vmstateDisk: 'other' }, 'job-y'), /no disk "other"/);
  } finally {
    await vm.kill();
  }
});
