/**
 * Disks on VMs end to end, through a real hangard, real QEMU and the tiny
 * image's shell (QEMU engine), and a ring-3 virtio-blk guest on hangar-vmm
 * (micro engine):
 *
 * - a data volume made at launch is seen by the guest, and what the guest
 *   wrote there is still there after stop/start;
 * - hot-plug into the running VM (the guest sees the new disk and its
 *   serial), online resize (the guest sees the new capacity), detach (the
 *   disk leaves the guest, the volume stays);
 * - an image with a base disk: every VM's root disk is a thin qcow2 overlay
 *   (10 VMs, bytes measured), the guest reads the base through it, its
 *   writes never reach the base, which the confined QEMU cannot write;
 * - the micro engine reads and writes a raw volume attached by the daemon;
 * - refusals: a qcow2 volume on micro, deleting an attached volume,
 *   deleting an image VMs use.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { startDaemon, waitOperation, ConsoleSession, type TestDaemon } from '../helpers/daemon.js';
import { runHangar, expectOk } from '../helpers/cli.js';
import { buildGuest, kvmUsable } from '../helpers/vmm.js';
import { TINY_PROMPT } from '../../src/host/images/tiny.js';
import { projectRoot } from '../../src/common/paths.js';

const MiB = 1024 * 1024;
const BASE_BYTES = 64 * MiB;
const BASE_MARK = 'HANGAR-BASE-DISK-MARK';

let d: TestDaemon;
let imageDir: string;
let base: string;
let baseSha: string;
const sharedImages = process.env.HANGAR_IMAGE_DIR ?? path.join(projectRoot(), '.cache', 'images');

/**
 * An image dir of our own: tiny's kernel and initramfs, plus a base disk
 * (qcow2, 64 MiB) with a marker at its start, so tiny gets a root disk.
 */
function makeImageDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-vmdisks-img-'));
  const tiny = path.join(dir, 'tiny');
  fs.mkdirSync(tiny);
  for (const f of ['vmlinuz', 'initrd.img']) fs.copyFileSync(path.join(sharedImages, 'tiny', f), path.join(tiny, f));
  const meta = JSON.parse(fs.readFileSync(path.join(sharedImages, 'tiny', 'image.json'), 'utf8')) as Record<string, unknown>;
  const raw = path.join(dir, 'base.raw');
  const buf = Buffer.alloc(BASE_BYTES);
  buf.write(BASE_MARK, 0);
  fs.writeFileSync(raw, buf);
  base = path.join(tiny, 'disk.qcow2');
  execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, base]);
  fs.rmSync(raw);
  fs.writeFileSync(path.join(tiny, 'image.json'), JSON.stringify({ ...meta, disk: 'disk.qcow2' }));
  baseSha = sha(base);
  return dir;
}

const sha = (file: string): string => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

before(async () => {
  imageDir = makeImageDir();
  d = await startDaemon({ env: { HANGAR_IMAGE_DIR: imageDir } });
  d.env.HANGAR_IMAGE_DIR = imageDir;
});

after(async () => {
  if (process.env.HANGAR_TEST_DEBUG && d) {
    for (const vm of fs.existsSync(path.join(d.dataDir, 'vms')) ? fs.readdirSync(path.join(d.dataDir, 'vms')) : []) {
      for (const f of ['console.log', 'qemu.log']) {
        try { process.stderr.write(`--- ${vm}/${f}\n${fs.readFileSync(path.join(d.dataDir, 'vms', vm, f), 'utf8').slice(-3000)}\n`); } catch { /* none */ }
      }
    }
  }
  await d?.cleanup();
  if (imageDir) fs.rmSync(imageDir, { recursive: true, force: true });
});

async function op(method: string, url: string, body?: unknown): Promise<any> {
  const res = await d.request(method, url, body);
  assert.equal(res.status, 202, `${method} ${url}: ${JSON.stringify(res.body)}`);
  const done = await waitOperation(d, res, 120);
  assert.equal(done.status, 'success', `${method} ${url}: ${JSON.stringify(done.error)}`);
  return done.result;
}

async function disks(vm: string): Promise<Array<{ name: string; volume: string; path?: string; format?: string; sizeBytes?: number; serial?: string; owned: boolean }>> {
  const r = await d.request('GET', `/1.0/vms/${vm}/disks`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.metadata;
}

/** Runs `cmd` in the guest until its output matches (the guest may need a moment for a hot-plug). */
async function until(con: ConsoleSession, cmd: string, want: RegExp, limitMs = 30_000): Promise<string> {
  const end = Date.now() + limitMs;
  let out = '';
  while (Date.now() < end) {
    out = await con.run(cmd);
    if (want.test(out)) return out;
    await new Promise((r) => setTimeout(r, 300));
  }
  assert.fail(`guest: ${cmd} never matched ${want}; last output: ${out}`);
}

function qemuArgv(pid: number): string[] {
  return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
}

test('launch with a data disk: root overlay + data volume; guest writes survive stop/start; O_DIRECT where the filesystem takes it', async () => {
  const r = expectOk(await runHangar(['launch', 'tiny', 'd1', '--disk', '96M', '--disk', 'data=32M', '--json'], { env: d.env, timeoutMs: 120_000 }), 'launch');
  const vm = JSON.parse(r.stdout);
  assert.equal(vm.state, 'running');
  assert.deepEqual(vm.spec.disks, [
    { name: 'root', volume: 'default/d1-root', serial: 'root', owned: true },
    { name: 'data', volume: 'default/d1-data', serial: 'data' },
  ]);
  const list = await disks('d1');
  assert.deepEqual(list.map((x) => [x.name, x.format, x.sizeBytes]), [['root', 'qcow2', 96 * MiB], ['data', 'qcow2', 32 * MiB]]);
  // The root volume is an overlay whose backing file is the image's base disk.
  const info = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', list[0]!.path!], { encoding: 'utf8' }));
  assert.equal(info['full-backing-filename'], base);
  assert.equal(info['backing-filename-format'], 'qcow2');

  // Cache and I/O as chosen: flushes honoured; the data dir (ext4 or xfs here) takes O_DIRECT.
  const argv = qemuArgv(vm.runtime.pid);
  const nodes = argv.filter((_, i) => argv[i - 1] === '-blockdev').map((j) => JSON.parse(j));
  assert.equal(nodes.length, 4);
  for (const n of nodes) assert.equal(n.cache['no-flush'], false);
  const fileNodes = nodes.filter((n) => n.driver === 'file');
  const tmpfs = execFileSync('stat', ['-f', '-c', '%T', d.dataDir], { encoding: 'utf8' }).trim() === 'tmpfs';
  for (const n of fileNodes) assert.equal(n.aio, tmpfs ? 'threads' : 'native', `${d.dataDir} is ${tmpfs ? '' : 'not '}tmpfs`);

  const con = await ConsoleSession.open(d, 'd1');
  await con.waitForPrompt(TINY_PROMPT);
  // The root disk shows the base's content through the overlay; the data disk is vdb, serial "data".
  assert.match(await con.run('dd if=/dev/vda bs=32 count=1 2>/dev/null'), new RegExp(BASE_MARK));
  assert.match(await con.run('cat /sys/block/vdb/serial; echo; cat /sys/block/vdb/size'), new RegExp(`data\\s+${32 * MiB / 512}`));
  await con.run('echo HANGAR-DATA-$((6*7)) | dd of=/dev/vdb bs=512 seek=8 conv=fsync 2>/dev/null');
  await con.run('echo HANGAR-ROOT-$((6*7)) | dd of=/dev/vda bs=512 seek=8 conv=fsync 2>/dev/null');
  await con.close();

  expectOk(await runHangar(['stop', 'd1', '--timeout', '60'], { env: d.env, timeoutMs: 90_000 }), 'stop');
  expectOk(await runHangar(['start', 'd1'], { env: d.env, timeoutMs: 90_000 }), 'start');
  const con2 = await ConsoleSession.open(d, 'd1');
  await con2.waitForPrompt(TINY_PROMPT);
  assert.match(await con2.run('dd if=/dev/vdb bs=512 skip=8 count=1 2>/dev/null'), /HANGAR-DATA-42/);
  assert.match(await con2.run('dd if=/dev/vda bs=512 skip=8 count=1 2>/dev/null'), /HANGAR-ROOT-42/);
  await con2.close();
  // The guest's writes went to its overlay, never to the base, which the VM's uid can read but not write.
  assert.equal(sha(base), baseSha);
  const pid = (await d.request('GET', '/1.0/vms/d1')).body.metadata.runtime.pid as number;
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const uid = Number(/^Uid:\s+(\d+)/m.exec(status)![1]);
  const groups = /^Groups:\s*(.*)$/m.exec(status)![1]!.trim().split(/\s+/).filter(Boolean);
  assert.notEqual(uid, 0, 'QEMU runs confined, as a uid of its own');
  const asVm = (cmd: string): number => {
    try {
      execFileSync('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, groups.length ? `--groups=${groups.join(',')}` : '--clear-groups', '--', 'sh', '-c', cmd], { stdio: 'ignore' });
      return 0;
    } catch (e) {
      return (e as { status?: number }).status ?? -1;
    }
  };
  assert.equal(asVm(`head -c 16 ${base} >/dev/null`), 0, 'the VM uid reads the base');
  assert.notEqual(asVm(`printf x | dd of=${base} conv=notrunc 2>/dev/null`), 0, 'the VM uid cannot write the base');
  assert.equal(fs.statSync(base).uid, 0);
  assert.equal(sha(base), baseSha);
});
