/**
 * Guest-reported memory end to end: a real QEMU VM of the `tiny` image gets
 * Hangar's balloon device; the guest loads Debian's virtio_balloon module
 * (the one for the tiny image's own kernel, taken from the kernel package
 * and handed to the guest on a raw data disk, since the tiny initramfs does
 * not carry it). Its statistics then reach the sampler: the VM's history
 * shows a plausible guest-used figure that climbs when the guest fills a
 * tmpfs, and the guest-memory alert (threshold lowered in hangard.json)
 * is raised, then cleared once the tmpfs is gone.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { startDaemon, waitOperation, ConsoleSession, type TestDaemon } from '../helpers/daemon.js';
import { imageDir, projectRoot } from '../../src/common/paths.js';
import { TINY_PROMPT } from '../../src/host/images/tiny.js';
import { until as untilDone } from '../helpers/until.js';

const MiB = 2 ** 20;
// A tiny guest uses some 10-20 % of its 256 MiB; with a 128 MiB tmpfs filled it is far above 40 %.
const CONFIG = { monitoring: { alerts: { guestMemoryPercent: 40, guestMemoryForSeconds: 1 } } };
let d: TestDaemon;
let work: string;

before(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-test-balloon-ko-'));
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-test-balloon-'));
  fs.writeFileSync(path.join(dataDir, 'hangard.json'), JSON.stringify(CONFIG));
  d = await startDaemon({ dataDir, args: ['--sample-interval', '1'] });
});
after(async () => {
  await d?.cleanup();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

/**
 * virtio_balloon.ko for `version` out of its Debian kernel package: one already
 * downloaded by the other guest tests (.cache/vmm-kernel, .cache/kvm-lab/debs), or
 * fetched with apt-get download into .cache/vmm-kernel.
 */
function balloonModule(version: string): Buffer {
  const pkg = `linux-image-${version}`;
  const dirs = ['vmm-kernel', 'kvm-lab/debs'].map((x) => path.join(projectRoot(), '.cache', x));
  const find = (): string | undefined => {
    for (const dir of dirs) {
      const f = fs.existsSync(dir) ? fs.readdirSync(dir).find((n) => n.startsWith(`${pkg}_`) && n.endsWith('.deb')) : undefined;
      if (f) return path.join(dir, f);
    }
    return undefined;
  };
  let deb = find();
  if (!deb) {
    fs.mkdirSync(dirs[0]!, { recursive: true });
    execFileSync('apt-get', ['download', pkg], { cwd: dirs[0], stdio: 'pipe', timeout: 180_000 });
    deb = find();
    if (!deb) throw new Error(`apt-get download ${pkg} produced no .deb`);
  }
  const member = `./lib/modules/${version}/kernel/drivers/virtio/virtio_balloon.ko`;
  execFileSync('sh', ['-c', 'dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" "$3"', 'sh', deb, work, member], { stdio: 'pipe' });
  return fs.readFileSync(path.join(work, member));
}

function putBytes(urlPath: string, body: Buffer): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: d.socket, method: 'PUT', path: urlPath, headers: { 'content-type': 'application/octet-stream', 'content-length': body.length } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

interface Sample { t: number; guestMemoryUsedBytes: number | null }
interface Alert { id: number; vm: string | null; kind: string; message: string; clearedAt: number | null }

// Generous windows: a loaded 2-core host runs TCG guests many times slower than a quiet one.
/** Awaits one step of the test; a failure says which step it was. */
async function step<T>(what: string, p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    throw new Error(`${what}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

/** Waits are long: a loaded host takes minutes where a quiet one takes seconds. */
const until = <T>(what: string, get: () => Promise<T | null | undefined | false>, ms = 180_000): Promise<T> => untilDone(what, get, ms);

test('the guest\'s balloon statistics give guest-used memory that follows the guest; the guest-memory alert fires and clears', { timeout: 900_000 }, async () => {
  const tiny = JSON.parse(fs.readFileSync(path.join(imageDir(), 'tiny', 'image.json'), 'utf8')) as { kernelVersion: string };
  const ko = balloonModule(tiny.kernelVersion);
  // The module on a raw disk, 4 KiB in (a disk starting like an ELF file is refused, rightly),
  // padded to whole MiB; the guest reads back exactly its bytes.
  const disk = Buffer.alloc(Math.ceil((4096 + ko.length) / MiB) * MiB);
  ko.copy(disk, 4096);
  const vols = '/1.0/storage-pools/default/volumes';
  const begin = await d.request('POST', vols, { name: 'balloon-ko', format: 'raw', source: { type: 'upload', bytes: disk.length } });
  assert.equal(begin.status, 202, JSON.stringify(begin.body));
  const put = await putBytes(`${vols}/balloon-ko/content`, disk);
  assert.equal(put.status, 200, put.text);
  assert.equal((await waitOperation(d, begin)).status, 'success');

  const op = await waitOperation(d, await d.request('POST', '/1.0/vms', { name: 'bal', image: 'tiny', memory: '256M', engine: 'qemu', disks: [{ volume: 'balloon-ko', readOnly: true }] }));
  assert.equal(op.status, 'success', JSON.stringify(op));
  const con = await ConsoleSession.open(d, 'bal');
  await step('the tiny guest\'s prompt', con.waitForPrompt(TINY_PROMPT, 300_000));
  const samples = async (): Promise<Sample[]> => (await d.request('GET', '/1.0/vms/bal/metrics?since=10m')).body.metadata.samples as Sample[];

  // Without a driver in the guest, the balloon says nothing: guest memory is unknown.
  await until('two samples', async () => (await samples()).length >= 2);
  assert.ok((await samples()).every((s) => s.guestMemoryUsedBytes === null));

  const out = await step('loading virtio_balloon in the guest', con.run(`dd if=/dev/vda bs=4096 skip=1 2>/dev/null | head -c ${ko.length} > /tmp/vb.ko && insmod /tmp/vb.ko && rm /tmp/vb.ko && echo balloon-loaded`, 180_000));
  assert.match(out, /balloon-loaded/);
  const base = await until('a guest-used figure', async () => (await samples()).at(-1)?.guestMemoryUsedBytes ?? null);
  // Plausible: some MiB for the kernel and busybox, well below the 256 MiB the guest has.
  assert.ok(base > 4 * MiB && base < 128 * MiB, `guest uses ${base / MiB} MiB`);

  const fill = await step('filling a tmpfs in the guest', con.run('mkdir -p /mnt/fill && mount -t tmpfs -o size=160m tmpfs /mnt/fill && dd if=/dev/zero of=/mnt/fill/f bs=1M count=128 2>&1 && echo filled', 180_000));
  assert.match(fill, /filled/);
  const grown = await until('guest-used climbs by the tmpfs', async () => {
    const u = (await samples()).at(-1)?.guestMemoryUsedBytes ?? 0;
    return u >= base + 100 * MiB ? u : null;
  });
  assert.ok(grown < 256 * MiB, `guest uses ${grown / MiB} MiB of 256`);
  const alerts = async (): Promise<Alert[]> => (await d.request('GET', '/1.0/alerts')).body.metadata as Alert[];
  const raised = await until('a guest-memory alert', async () => (await alerts()).find((a) => a.vm === 'bal' && a.kind === 'guest-memory' && a.clearedAt === null));
  assert.match(raised.message, /^the guest of VM bal uses \d+% of its memory \(above 40%\)$/);

  await step('unmounting the tmpfs', con.run('umount /mnt/fill', 180_000));
  await until('guest-used falls back', async () => ((await samples()).at(-1)?.guestMemoryUsedBytes ?? Infinity) < base + 50 * MiB);
  await until('the alert cleared', async () => (await alerts()).some((a) => a.id === raised.id && a.clearedAt !== null));
  await con.close();

  // Prometheus carries the figure too.
  const prom = String((await d.request('GET', '/metrics')).body);
  assert.match(prom, /^hangar_vm_guest_memory_used_bytes\{[^}]*vm="bal"[^}]*\} \d+/m);
  const del = await waitOperation(d, await d.request('DELETE', '/1.0/vms/bal?force=true'));
  assert.equal(del.status, 'success');
});
