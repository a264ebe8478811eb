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
import { createHash, randomFillSync } from 'node:crypto';
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
function makeImageDir(dir: string): void {
  const tiny = path.join(dir, 'tiny');
  fs.mkdirSync(tiny);
  for (const f of ['vmlinuz', 'initrd.img']) fs.copyFileSync(path.join(sharedImages, 'tiny', f), path.join(tiny, f));
  const meta = JSON.parse(fs.readFileSync(path.join(sharedImages, 'tiny', 'image.json'), 'utf8')) as Record<string, unknown>;
  const raw = path.join(dir, 'base.raw');
  // 8 MiB of data the base really holds (a copy per VM would cost that much each), then zeros.
  const buf = Buffer.alloc(BASE_BYTES);
  randomFillSync(buf, 0, 8 * MiB);
  buf.write(BASE_MARK, 0);
  fs.writeFileSync(raw, buf);
  base = path.join(tiny, 'disk.qcow2');
  execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, base]);
  fs.rmSync(raw);
  fs.writeFileSync(path.join(tiny, 'image.json'), JSON.stringify({ ...meta, disk: 'disk.qcow2' }));
  baseSha = sha(base);
}

const sha = (file: string): string => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

before(async () => {
  imageDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-vmdisks-img-'));
  makeImageDir(imageDir);
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

/** Each virtio disk the guest has, as "name=serial=sectors". */
const LIST_DISKS = 'for b in /sys/block/vd*; do echo "disk:$(basename $b)=$(cat $b/serial)=$(cat $b/size)"; done';

test('hot-plug into the running VM, online resize, detach: the guest sees each; the volume outlives the detach', async () => {
  const con = await ConsoleSession.open(d, 'd1');
  await con.waitForPrompt(TINY_PROMPT);
  const attached = await op('POST', '/1.0/vms/d1/disks', { name: 'hot', size: '16M' });
  assert.equal(attached.volume, 'default/d1-hot');
  assert.equal(attached.format, 'qcow2');
  const seen = await until(con, LIST_DISKS, new RegExp(`disk:(vd[a-z])=hot=${16 * MiB / 512}`));
  const dev = /disk:(vd[a-z])=hot=/.exec(seen)![1]!;
  await con.run(`echo HANGAR-HOT-$((6*7)) | dd of=/dev/${dev} bs=512 seek=4 conv=fsync 2>/dev/null`);
  assert.match(await con.run(`dd if=/dev/${dev} bs=512 skip=4 count=1 2>/dev/null`), /HANGAR-HOT-42/);
  assert.deepEqual((await disks('d1')).map((x) => x.name), ['root', 'data', 'hot']);
  assert.deepEqual((await d.request('GET', '/1.0/storage-pools/default/volumes/d1-hot')).body.metadata.usedBy, [{ vm: 'd1', device: 'hot', readOnly: false }]);
  // The confined QEMU was lent the hot-plugged file (its own uid owns it while attached).
  const hotPath = (await disks('d1')).find((x) => x.name === 'hot')!.path!;
  assert.notEqual(fs.statSync(hotPath).uid, 0);

  // Grown through the storage API while attached: QEMU grows it and the guest is told.
  const grow = await d.request('PATCH', '/1.0/storage-pools/default/volumes/d1-hot', { size: '48M' });
  assert.equal(grow.status, 200, JSON.stringify(grow.body));
  await until(con, LIST_DISKS, new RegExp(`disk:${dev}=hot=${48 * MiB / 512}\\b`));
  assert.equal((await disks('d1')).find((x) => x.name === 'hot')!.sizeBytes, 48 * MiB);

  // An attached volume cannot be deleted.
  const del = await d.request('DELETE', '/1.0/storage-pools/default/volumes/d1-hot');
  assert.equal(del.status, 409, JSON.stringify(del.body));
  assert.match(del.body.error.message, /VM d1/);

  const detached = await op('DELETE', '/1.0/vms/d1/disks/hot');
  assert.deepEqual(detached, { name: 'd1', disk: 'hot', volume: 'default/d1-hot' });
  await until(con, LIST_DISKS, /^(?![\s\S]*=hot=)[\s\S]*disk:vda=root=/);
  assert.deepEqual((await disks('d1')).map((x) => x.name), ['root', 'data']);
  assert.equal(fs.statSync(hotPath).uid, 0, 'the unplugged file is given back');
  await con.close();
  // The volume stays, with what the guest wrote, and is free to use elsewhere.
  const vol = await d.request('GET', '/1.0/storage-pools/default/volumes/d1-hot');
  assert.equal(vol.status, 200);
  assert.equal(vol.body.metadata.sizeBytes, 48 * MiB);
  assert.deepEqual(vol.body.metadata.usedBy, []);

  // Detaching what is not there, or the root disk, is refused at once.
  assert.equal((await d.request('DELETE', '/1.0/vms/d1/disks/hot')).status, 404);
  const root = await d.request('DELETE', '/1.0/vms/d1/disks/root');
  assert.equal(root.status, 409);
  assert.match(root.body.error.message, /root disk/);
  // A volume attached to one VM cannot be attached to another.
  const twice = await d.request('POST', '/1.0/vms', { name: 'd2', image: 'tiny', start: false, disks: [{ volume: 'default/d1-data' }] });
  assert.equal(twice.status, 409, JSON.stringify(twice.body));
  assert.match(twice.body.error.message, /already attached to VM d1/);
});

test('10 VMs from one image with a base disk: each root disk is a thin overlay of it', async (t) => {
  const names = Array.from({ length: 10 }, (_, i) => `ov${i}`);
  for (const name of names) await op('POST', '/1.0/vms', { name, image: 'tiny', start: false });
  let total = 0;
  const files: string[] = [];
  for (const name of names) {
    const [root] = await disks(name);
    assert.equal(root!.volume, `default/${name}-root`);
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', root!.path!], { encoding: 'utf8' }));
    assert.equal(info['full-backing-filename'], base);
    assert.equal(info['virtual-size'], BASE_BYTES);
    const used = fs.statSync(root!.path!).blocks * 512;
    total += used;
    files.push(root!.path!);
  }
  const baseUsed = fs.statSync(base).blocks * 512;
  t.diagnostic(`10 root overlays take ${total} bytes on the host (${Math.round(total / 1024)} KiB, ${Math.round(total / 10 / 1024)} KiB each); the base disk takes ${baseUsed} bytes for ${BASE_BYTES} virtual`);
  assert.ok(baseUsed >= 8 * MiB, `the base holds its 8 MiB of data (${baseUsed})`);
  assert.ok(total < 10 * MiB, `10 overlays take ${total} bytes`);
  assert.ok(total < baseUsed, 'all 10 overlays together take less than one copy of the base');
  // A VM's delete removes its own root volume.
  for (const name of names) await op('DELETE', `/1.0/vms/${name}`);
  for (const f of files) assert.equal(fs.existsSync(f), false, `${f} was removed with its VM`);
});

test('micro engine: a ring-3 guest reads and writes a raw volume the daemon attached; qcow2 volumes are refused', { skip: kvmUsable ? false : 'needs a usable /dev/kvm' }, async () => {
  const elf = buildGuest('virtio-blk');
  expectOk(await runHangar(['image', 'import', 'vblk', '--kernel', elf], { env: d.env, timeoutMs: 60_000 }), 'image import');
  await op('POST', '/1.0/vms', { name: 'm1', image: 'vblk', engine: 'micro', memory: '128M', cmdline: 'vblk.wsector=100 vblk.seed=7', start: false, disks: [{ name: 'data', size: '4M' }] });
  const [data] = await disks('m1');
  assert.equal(data!.format, 'raw');
  // Known content first, so the guest's read can be checked.
  const content = Buffer.alloc(4 * MiB);
  for (let i = 0; i < content.length; i++) content[i] = (i * 7 + (i >> 9)) & 0xff;
  fs.writeFileSync(data!.path!, content);
  await op('PUT', '/1.0/vms/m1/state', { action: 'start' });
  const log = path.join(d.dataDir, 'vms', 'm1', 'console.log');
  const end = Date.now() + 30_000;
  while (Date.now() < end && !(fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('vblk: done'))) await new Promise((r) => setTimeout(r, 200));
  const out = fs.readFileSync(log, 'utf8');
  assert.match(out, /vblk: done/);
  assert.match(out, new RegExp(`vblk: capacity=${4 * MiB / 512} ro=0`));
  assert.match(out, /vblk: id=data\r?\n/, 'the serial is the disk name');
  const { fnv1a64 } = await import('../helpers/vmm.js');
  assert.match(out, new RegExp(`vblk: read-hash=${fnv1a64(content)}\\b`));
  assert.match(out, /vblk: write status=0 flush status=0/);
  const after = fs.readFileSync(data!.path!);
  const pat = Buffer.alloc(8192);
  for (let i = 0; i < pat.length; i++) pat[i] = (i * 31 + 7) & 0xff;
  assert.ok(after.subarray(100 * 512, 100 * 512 + 8192).equals(pat), 'the guest\'s write landed in the volume');

  // Stopped: a qcow2 volume (QEMU's default format) cannot be a micro VM's disk.
  await op('PUT', '/1.0/vms/m1/state', { action: 'stop', force: true }).catch(() => {});
  const q = await d.request('POST', '/1.0/vms/m1/disks', { volume: 'default/d1-hot' });
  assert.equal(q.status, 422, JSON.stringify(q.body));
  assert.equal(q.body.error.code, 'UNSUPPORTED');
  assert.match(q.body.error.message, /raw volumes only/);

  // Copies (hangar copy): from a disk snapshot, and from the stopped VM, each a raw volume of its own.
  expectOk(await runHangar(['snapshot', 'create', 'm1', 's1'], { env: d.env, timeoutMs: 60_000 }), 'snapshot create');
  const changed = Buffer.from(after);
  changed.fill(0x5a, 0, 4096);
  fs.writeFileSync(data!.path!, changed);
  expectOk(await runHangar(['copy', 'm1/s1', 'm2'], { env: d.env, timeoutMs: 60_000 }), 'copy from a snapshot');
  expectOk(await runHangar(['copy', 'm1', 'm3'], { env: d.env, timeoutMs: 60_000 }), 'copy of a stopped VM');
  const [c2] = await disks('m2');
  const [c3] = await disks('m3');
  assert.deepEqual([c2!.volume, c2!.format, c3!.volume, c3!.format], ['default/m2-data', 'raw', 'default/m3-data', 'raw']);
  assert.ok(fs.readFileSync(c2!.path!).equals(after), 'the copy of s1 holds the disk as the snapshot had it');
  assert.ok(fs.readFileSync(c3!.path!).equals(changed), 'the copy of the stopped VM holds its disk as it is now');
  assert.equal(fs.statSync(c2!.path!).mode & 0o777, 0o600);
  // The copy boots on the micro engine and its guest reads the copied disk.
  await op('PUT', '/1.0/vms/m2/state', { action: 'start' });
  const log2 = path.join(d.dataDir, 'vms', 'm2', 'console.log');
  const end2 = Date.now() + 30_000;
  while (Date.now() < end2 && !(fs.existsSync(log2) && fs.readFileSync(log2, 'utf8').includes('vblk: done'))) await new Promise((r) => setTimeout(r, 200));
  assert.match(fs.readFileSync(log2, 'utf8'), new RegExp(`vblk: read-hash=${fnv1a64(after)}\\b`));
  await op('PUT', '/1.0/vms/m2/state', { action: 'stop', force: true }).catch(() => {});
  for (const vm of ['m2', 'm3']) await op('DELETE', `/1.0/vms/${vm}?force=true`);
  // Copies of data disks are volumes of their own (as any data disk, they outlive the VM).
  for (const v of ['m2-data', 'm3-data']) assert.equal((await d.request('DELETE', `/1.0/storage-pools/default/volumes/${v}`)).status, 200);
  assert.equal(fs.existsSync(c2!.path!), false);

  // An image VMs use cannot be deleted; the message names them.
  const del = await d.request('DELETE', '/1.0/images/vblk');
  assert.equal(del.status, 409);
  assert.match(del.body.error.message, /used by VM m1/);
});

test('VM delete removes its own root volume and keeps its data volumes', async () => {
  const list = await disks('d1');
  await op('DELETE', '/1.0/vms/d1?force=true');
  assert.equal(fs.existsSync(list[0]!.path!), false, 'the root volume went with the VM');
  assert.equal(fs.existsSync(list[1]!.path!), true, 'the data volume stays');
  const vol = await d.request('GET', '/1.0/storage-pools/default/volumes/d1-data');
  assert.equal(vol.status, 200);
  assert.deepEqual(vol.body.metadata.usedBy, []);
  // Free again: another VM may take it.
  await op('POST', '/1.0/vms', { name: 'd3', image: 'tiny', start: false, disks: [{ name: 'old', volume: 'd1-data' }] });
  assert.deepEqual((await disks('d3')).map((x) => [x.name, x.volume]), [['root', 'default/d3-root'], ['old', 'default/d1-data']]);

  // The CLI on a stopped VM: attach changes the spec (the next start uses it), detach keeps the volume.
  expectOk(await runHangar(['disk', 'attach', 'd3', 'extra=8M,ro'], { env: d.env, timeoutMs: 60_000 }), 'disk attach');
  const listed = JSON.parse(expectOk(await runHangar(['disk', 'list', 'd3', '--json'], { env: d.env }), 'disk list').stdout) as Array<{ name: string; volume: string; readOnly: boolean; sizeBytes: number }>;
  assert.deepEqual(listed.map((x) => [x.name, x.volume, x.readOnly, x.sizeBytes]), [
    ['root', 'default/d3-root', false, BASE_BYTES], ['old', 'default/d1-data', false, 32 * MiB], ['extra', 'default/d3-extra', true, 8 * MiB],
  ]);
  assert.match(expectOk(await runHangar(['disk', 'list', 'd3'], { env: d.env }), 'disk list').stdout, /^extra +default\/d3-extra +8M +qcow2 +ro +extra$/m);
  expectOk(await runHangar(['disk', 'detach', 'd3', 'extra'], { env: d.env, timeoutMs: 60_000 }), 'disk detach');
  assert.deepEqual((await disks('d3')).map((x) => x.name), ['root', 'old']);
  const gone = await runHangar(['disk', 'detach', 'd3', 'extra'], { env: d.env });
  assert.equal(gone.code, 3, gone.stderr);
  assert.equal((await d.request('GET', '/1.0/storage-pools/default/volumes/d3-extra')).status, 200, 'the volume stays');
});
