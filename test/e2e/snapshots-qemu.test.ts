/**
 * Memory snapshots through the QEMU engine, with real QEMU (TCG) running
 * the tiny guest on a qcow2 data disk: a guest counter and a marker on the
 * disk show that a snapshot-load job and a `-loadvm` start both resume the
 * guest where the snapshot was taken (not from zero, not from now) with the
 * disk as it was; delete removes the snapshot from the disk.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { projectRoot } from '../../src/common/paths.js';
import { createLogger } from '../../src/common/log.js';
import type { EngineVmConfig, VmHandle } from '../../src/engines/engine.js';
import { QemuEngine } from '../../src/engines/qemu/engine.js';
import { processAlive, processArgs } from '../../src/engines/base/procfs.js';
import { probeKvm } from '../../src/kvm/probe.js';
import { START_TICKS, lastTick, waitForTick } from '../helpers/guest-ticks.js';

process.env.HANGAR_IMAGE_DIR ??= path.join(projectRoot(), '.cache', 'images');
const { ensureImage } = await import('../../src/host/images/index.js');
const { TINY_PROMPT } = await import('../../src/host/images/tiny.js');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hg-snap-'));
const engine = new QemuEngine({ logger: createLogger('test', process.env.HANGAR_LOG_LEVEL ?? 'warn'), kvm: probeKvm });
const pids = new Set<number>();
const streams: Duplex[] = [];
let image: Awaited<ReturnType<typeof ensureImage>>;
const dataDisk = path.join(tmp, 'data.qcow2');

before(async () => {
  image = await ensureImage('tiny');
  fs.chmodSync(tmp, 0o755);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', dataDisk, '16M']);
});

after(() => {
  for (const s of streams) s.destroy();
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

class Con {
  text = '';
  constructor(readonly s: Duplex) {
    streams.push(s);
    s.on('data', (d: Buffer) => { this.text += d.toString('utf8'); });
  }
  async waitFor(re: RegExp, from = 0, ms = 120_000): Promise<void> {
    const end = Date.now() + ms;
    while (!re.test(this.text.slice(from))) {
      if (Date.now() > end) throw new Error(`console: no ${re}; got ${JSON.stringify(this.text.slice(-400))}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  /** Runs a line; resolves with its output once a marker the shell assembles comes back. */
  async run(cmd: string): Promise<string> {
    const from = this.text.length;
    this.s.write(`${cmd}; echo EN""D\n`);
    await this.waitFor(/\nEND\r?\n/, from);
    return this.text.slice(from);
  }
}

/** The first 6 bytes of the data disk as the host reads the qcow2 file (the VM process must be gone). */
function diskMarker(): string {
  const out = execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'read -v 0 6', dataDisk], { encoding: 'utf8' });
  const hex = /^00000000:\s+((?:[0-9a-f]{2}\s)+)/m.exec(out)?.[1] ?? '';
  return Buffer.from(hex.trim().split(/\s+/).map((h) => parseInt(h, 16))).toString('latin1');
}

/** The lowest tick printed after `from` in the console text (the first one once the guest runs again). */
function firstTickAfter(text: string, from: number): number {
  const m = /tick-(\d+)\r?\n/.exec(text.slice(from));
  return m ? Number(m[1]) : 0;
}

test('a memory snapshot resumes the guest where it was: by a load job, and by a -loadvm start; the disk goes back too', { timeout: 300_000 }, async (t) => {
  let vm = await start(config());
  let con = new Con(await vm.openConsole());
  con.s.write('\n');
  await con.waitFor(new RegExp(TINY_PROMPT));
  await con.run("printf 'MARK-A' | dd of=/dev/vda conv=notrunc,fsync 2>/dev/null");
  con.s.write(`${START_TICKS}\n`);
  await waitForTick(() => con.text, 5);

  const snaps = vm.snapshots!;
  assert.ok(snaps, 'a QEMU handle offers snapshots');
  const before = lastTick(con.text);
  await snaps.save('s1', { disks: ['data'], vmstateDisk: 'data' }, 'job-save-1');
  const after = lastTick(con.text);
  const list = (await snaps.list(['data'])).get('data')!;
  assert.equal(list.length, 1);
  assert.equal(list[0]!.name, 's1');
  assert.ok(list[0]!.vmStateBytes > 0, 'the machine state is in the data disk');
  t.diagnostic(`snapshot taken between tick-${before} and tick-${after}; machine state ${list[0]!.vmStateBytes} bytes`);

  // The guest runs on, well past the snapshot, and overwrites the marker.
  await con.run("printf 'MARK-B' | dd of=/dev/vda conv=notrunc,fsync 2>/dev/null");
  const later = await waitForTick(() => con.text, after + 15);
  const mark = con.text.length;
  await snaps.load('s1', { disks: ['data'], vmstateDisk: 'data' }, 'job-load-1');
  assert.equal(await vm.queryState(), 'running', 'a loaded running snapshot runs on');
  await waitForTick(() => con.text.slice(mark), 1);
  const resumed = firstTickAfter(con.text, mark);
  t.diagnostic(`after the load job the counter went on at tick-${resumed} (it had reached tick-${later})`);
  assert.ok(resumed > before && resumed <= after + 2, `resumed at tick-${resumed}: not where the snapshot was (tick-${before}..${after})`);

  // The guest writes again; then a -loadvm start of the stopped VM: the same point again, disk included.
  await con.run("printf 'MARK-C' | dd of=/dev/vda conv=notrunc,fsync 2>/dev/null");
  await vm.kill();
  assert.equal(diskMarker(), 'MARK-C');
  vm = await start(config('s1'));
  con = new Con(await vm.openConsole());
  await waitForTick(() => con.text, 1);
  const restarted = firstTickAfter(con.text, 0);
  t.diagnostic(`a -loadvm start went on at tick-${restarted}`);
  assert.ok(restarted > before && restarted <= after + 2, `a -loadvm start resumed at tick-${restarted}, not at the snapshot (tick-${before}..${after})`);
  const read = await con.run('dd if=/dev/vda bs=6 count=1 2>/dev/null; echo');
  assert.match(read, /MARK-A/, 'the guest reads the disk as it was at the snapshot');

  // Delete through the running process.
  await snaps.delete('s1', ['data'], 'job-del-1').catch(() => undefined); // the old handle is dead: must fail
  await vm.snapshots!.delete('s1', ['data'], 'job-del-2');
  assert.deepEqual((await vm.snapshots!.list(['data'])).get('data'), []);
  await vm.kill();
  assert.equal(diskMarker(), 'MARK-A');
});

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
