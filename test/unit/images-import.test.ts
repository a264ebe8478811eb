/**
 * Imported images: validation of the request and of the files (real files
 * in a temporary data directory), the copy and its atomicity, listing,
 * resolution through ensureImage, delete; and, through the API with the real
 * image store and VM manager, the import/delete routes, the command line an
 * engine gets for an imported image, and the micro engine refusing to launch
 * (UNSUPPORTED, nothing left behind) when the host has no usable KVM.
 */
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { PassThrough, type Duplex } from 'node:stream';
import { pino } from 'pino';
import type { FastifyInstance } from 'fastify';
import { HangarError, isHangarError, type ErrorCode } from '../../src/common/errors.js';
import type { Engine, EngineName, EngineVmConfig, VmExit, VmHandle } from '../../src/engines/engine.js';
import { MicroEngine } from '../../src/engines/micro/engine.js';
import type { KvmProbe } from '../../src/kvm/probe.js';
import { DEFAULT_BOOT_ARGS } from '../../src/vmm/controller.js';
import { kernelFormat, initrdFormat, checkImportRequest, importLocalImage, listLocalImages, localImageRoot, cleanStaleImportFolders } from '../../src/host/images/local.js';
import { configureImportPolicy } from '../../src/host/images/policy.js';
import { deleteImage, ensureImage, importImage, listImages } from '../../src/host/images/index.js';
import { Store } from '../../src/host/store.js';
import { OperationManager } from '../../src/host/operations.js';
import { EventBus } from '../../src/host/events.js';
import { HostChecker } from '../../src/host/hostcheck.js';
import { VmManager } from '../../src/host/vms.js';
import { buildServer } from '../../src/host/server.js';
import { capabilitiesOf, registryOf } from '../helpers/engines.js';
import { importRequest } from '../../src/cli/commands/image.js';

let dir: string;
let src: string;
const savedDataDir = process.env.HANGAR_DATA_DIR;

/** The first bytes of an x86-64 ELF64 executable (enough for the magic check). */
function elfBytes(cls = 2, machine = 62, type = 2): Buffer {
  const b = Buffer.alloc(4096, 0x90);
  b.writeUInt32BE(0x7f454c46, 0);
  b[4] = cls;
  b[5] = 1;
  b[6] = 1;
  b.writeUInt16LE(type, 16);
  b.writeUInt16LE(machine, 18);
  return b;
}

function bzImageBytes(): Buffer {
  const b = Buffer.alloc(8192);
  b.writeUInt16LE(0xaa55, 0x1fe);
  b.writeUInt32LE(0x53726448, 0x202);
  return b;
}

function file(name: string, data: Buffer | string): string {
  const p = path.join(src, name);
  fs.writeFileSync(p, data);
  return p;
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, re?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isHangarError(e), `expected a HangarError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    return true;
  });
}

/** Nothing but finished images in the store folder: no temporary or half-deleted ones. */
function storeEntries(): string[] {
  try { return fs.readdirSync(localImageRoot()).sort(); } catch { return []; }
}

/** A gzip-compressed cpio archive, as initrds usually are. */
const INITRD = Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0x00]), Buffer.alloc(60, 1)]);

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-img-'));
  src = path.join(dir, 'src');
  fs.mkdirSync(src);
  process.env.HANGAR_DATA_DIR = path.join(dir, 'data');
  // Path imports read from the import folders only: here, the test's source folder.
  configureImportPolicy({ importDirs: [src] });
});

afterEach(() => {
  configureImportPolicy({});
  if (savedDataDir === undefined) delete process.env.HANGAR_DATA_DIR;
  else process.env.HANGAR_DATA_DIR = savedDataDir;
  fs.rmSync(dir, { recursive: true, force: true });
});

test('kernelFormat recognises x86-64 ELF64 and bzImage, nothing else', () => {
  assert.equal(kernelFormat(elfBytes()), 'elf64');
  assert.equal(kernelFormat(bzImageBytes()), 'bzimage');
  assert.equal(kernelFormat(elfBytes(1)), null, 'ELF32');
  assert.equal(kernelFormat(elfBytes(2, 183)), null, 'aarch64');
  assert.equal(kernelFormat(elfBytes(2, 62, 3)), null, 'a position-independent program (ET_DYN)');
  assert.equal(kernelFormat(Buffer.from('#!/bin/sh\necho hi\n')), null);
  assert.equal(kernelFormat(Buffer.alloc(0)), null);
  const noHdrS = bzImageBytes();
  noHdrS.writeUInt32LE(0, 0x202);
  assert.equal(kernelFormat(noHdrS), null, 'boot sector without a setup header');
});

test('checkImportRequest: names, reserved names, cmdline and description', () => {
  const k = '/k';
  for (const name of ['', 'Echo', '1echo', '-x', 'a/b', '..', 'a b', 'x'.repeat(64)]) {
    assert.throws(() => checkImportRequest({ name, kernel: k }, ['tiny']), (e: unknown) => isHangarError(e) && e.code === 'INVALID_ARGUMENT', name);
  }
  for (const name of ['echo', 'debian-12.1', 'my_kernel', 'x'.repeat(63)]) checkImportRequest({ name, kernel: k }, ['tiny']);
  assert.throws(() => checkImportRequest({ name: 'tiny', kernel: k }, ['tiny']), /built-in image/);
  assert.throws(() => checkImportRequest({ name: 'a', kernel: k, cmdline: 'x\ny' }, []), /cmdline/);
  assert.throws(() => checkImportRequest({ name: 'a', kernel: k, cmdline: 'x'.repeat(2049) }, []), /cmdline/);
  assert.throws(() => checkImportRequest({ name: 'a', kernel: k, description: 'a\rb' }, []), /description/);
});

test('CLI: importRequest makes paths absolute against the working directory and checks the name', () => {
  assert.deepEqual(importRequest('echo', { kernel: 'guests/build/echo.elf', initrd: '../i.img', cmdline: 'a b', description: 'd' }, '/work/main'),
    { name: 'echo', kernel: '/work/main/guests/build/echo.elf', initrd: '/work/i.img', cmdline: 'a b', description: 'd' });
  assert.deepEqual(importRequest('echo', { kernel: '/boot/vmlinuz' }, '/x'), { name: 'echo', kernel: '/boot/vmlinuz' });
  assert.throws(() => importRequest('Echo', { kernel: '/k' }), (e: unknown) => isHangarError(e) && e.code === 'INVALID_ARGUMENT');
});

test('import copies the files, records the image and resolves it through ensureImage', async () => {
  const kernel = file('vmlinux', elfBytes());
  const initrd = file('initrd', INITRD);
  const img = await importImage({ name: 'guest', kernel, initrd, cmdline: 'console=ttyS0 quiet', description: 'a guest' });
  assert.equal(img.origin, 'imported');
  assert.equal(img.status, 'ready');
  assert.equal(img.description, 'a guest');
  assert.equal(img.sizeBytes, 4096 + INITRD.length);
  // Stored for the daemon only.
  for (const f of [img.kernel!, img.initrd!, path.join(path.dirname(img.kernel!), 'image.json')]) assert.equal(fs.statSync(f).mode & 0o777, 0o600, f);
  assert.equal(fs.statSync(path.dirname(img.kernel!)).mode & 0o777, 0o700);
  assert.ok(img.kernel!.startsWith(localImageRoot()));
  // Later changes to the sources do not reach the image.
  fs.writeFileSync(kernel, 'changed');
  fs.rmSync(initrd);
  const ready = await ensureImage('guest');
  assert.deepEqual(fs.readFileSync(ready.kernel), elfBytes());
  assert.deepEqual(fs.readFileSync(ready.initrd!), INITRD);
  assert.equal(ready.cmdline, 'console=ttyS0 quiet');

  // Without initrd and cmdline: neither is made up (the engine's default command line applies).
  const bz = await importImage({ name: 'bz', kernel: file('bzImage', bzImageBytes()) });
  assert.equal(bz.cmdline, undefined);
  assert.equal(bz.initrd, undefined);
  const bzReady = await ensureImage('bz');
  assert.equal(bzReady.cmdline, undefined);
  assert.equal(bzReady.initrd, undefined);
  assert.match(bz.description, /bzImage/);

  assert.deepEqual(listImages().filter((i) => i.origin === 'imported').map((i) => i.name), ['bz', 'guest']);
  assert.deepEqual(storeEntries(), ['bz', 'guest']);
});

test('bad files are refused and leave nothing behind', async () => {
  const good = file('k', elfBytes());
  await rejectsWith(importLocalImage({ name: 'a', kernel: 'relative/k' }, []), 'INVALID_ARGUMENT', /absolute path/);
  await rejectsWith(importLocalImage({ name: 'a', kernel: path.join(src, 'missing') }, []), 'NOT_FOUND', /does not exist/);
  fs.mkdirSync(path.join(src, 'sub'));
  await rejectsWith(importLocalImage({ name: 'a', kernel: path.join(src, 'sub') }, []), 'INVALID_ARGUMENT', /not a regular file/);
  await rejectsWith(importLocalImage({ name: 'a', kernel: file('empty', '') }, []), 'INVALID_ARGUMENT', /empty/);
  await rejectsWith(importLocalImage({ name: 'a', kernel: file('script', '#!/bin/sh\n') }, []), 'INVALID_ARGUMENT', /neither an x86-64 ELF64/);
  await rejectsWith(importLocalImage({ name: 'a', kernel: file('elf32', elfBytes(1)) }, []), 'INVALID_ARGUMENT', /neither/);
  await rejectsWith(importLocalImage({ name: 'a', kernel: good, initrd: path.join(src, 'nope') }, []), 'NOT_FOUND', /initrd/);
  await rejectsWith(importLocalImage({ name: 'a', kernel: good, initrd: path.join(src, 'sub') }, []), 'INVALID_ARGUMENT', /initrd .* not a regular file/);
  const fifo = path.join(src, 'fifo');
  execFileSync('mkfifo', [fifo]);
  await rejectsWith(importLocalImage({ name: 'a', kernel: fifo }, []), 'INVALID_ARGUMENT', /not a regular file/);
  await rejectsWith(importLocalImage({ name: 'a', kernel: good, initrd: fifo }, []), 'INVALID_ARGUMENT', /not a regular file/);
  await rejectsWith(importLocalImage({ name: 'tiny', kernel: good }, ['tiny']), 'INVALID_ARGUMENT', /built-in/);
  assert.deepEqual(storeEntries(), []);
  assert.deepEqual(listLocalImages(), []);

  // A symlink is never followed, even to a file inside the import folder.
  const link = path.join(src, 'link');
  fs.symlinkSync(good, link);
  await rejectsWith(importLocalImage({ name: 'linked', kernel: link }, []), 'INVALID_ARGUMENT', /symbolic link/);
  assert.deepEqual(storeEntries(), []);
});

test('path imports: only inside the import folders, and outside ones never tell whether a path exists', async () => {
  const good = file('k', elfBytes());
  const secretDir = path.join(dir, 'secret');
  fs.mkdirSync(secretDir);
  fs.writeFileSync(path.join(secretDir, 'shadow'), 'root:$6$hash:19000:0:99999:7:::\n');
  const outsideMsg = (p: string) => new RegExp(`^kernel "${p.replace(/[$^.*+?()[\]{}|\\/]/g, '\\$&')}" is not a file inside the daemon's import folders`);
  // An existing file, a missing one, /etc/shadow, and a path that climbs out with "..": one answer for all.
  for (const p of [path.join(secretDir, 'shadow'), path.join(secretDir, 'missing'), '/etc/shadow', `${src}/../secret/shadow`]) {
    await rejectsWith(importLocalImage({ name: 'a', kernel: p }, []), 'INVALID_ARGUMENT', outsideMsg(p));
  }
  // The same for an initrd.
  await rejectsWith(importLocalImage({ name: 'a', kernel: good, initrd: '/etc/shadow' }, []), 'INVALID_ARGUMENT', /^initrd "\/etc\/shadow" is not a file inside/);
  // A folder inside that is a symlink to one outside: refused the same way, whether or not the target exists.
  fs.symlinkSync(secretDir, path.join(src, 'escape'));
  for (const p of [path.join(src, 'escape', 'shadow'), path.join(src, 'escape', 'missing')]) {
    await rejectsWith(importLocalImage({ name: 'a', kernel: p }, []), 'INVALID_ARGUMENT', outsideMsg(p));
  }
  // A symlink as the file itself (to a real kernel outside): refused without following it.
  fs.writeFileSync(path.join(secretDir, 'vmlinux'), elfBytes());
  fs.symlinkSync(path.join(secretDir, 'vmlinux'), path.join(src, 'vmlinux-link'));
  await rejectsWith(importLocalImage({ name: 'a', kernel: path.join(src, 'vmlinux-link') }, []), 'INVALID_ARGUMENT', /symbolic link/);
  // No import folders at all: path imports are refused and uploads are the way.
  configureImportPolicy({ importDirs: [] });
  await rejectsWith(importLocalImage({ name: 'a', kernel: good }, []), 'INVALID_ARGUMENT', /none are configured: upload the file instead/);
  assert.deepEqual(storeEntries(), []);
  // A second import folder works like the first.
  const other = path.join(dir, 'other');
  fs.mkdirSync(other);
  fs.writeFileSync(path.join(other, 'k2'), elfBytes());
  configureImportPolicy({ importDirs: [src, other] });
  await importLocalImage({ name: 'from-other', kernel: path.join(other, 'k2') }, []);
  assert.deepEqual(storeEntries(), ['from-other']);
});

test('initrdFormat: cpio (newc, crc, odc) and the compressions Linux unpacks; nothing else', () => {
  const cases: Array<[Buffer, string | null]> = [
    [Buffer.from('070701000000'), 'cpio'],
    [Buffer.from('070702000000'), 'cpio'],
    [Buffer.from('070707000000'), 'cpio'],
    [Buffer.from([0x1f, 0x8b, 8, 0]), 'gzip'],
    [Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0]), 'xz'],
    [Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0]), 'zstd'],
    [Buffer.from([0x02, 0x21, 0x4c, 0x18, 0]), 'lz4'],
    [Buffer.from([0x04, 0x22, 0x4d, 0x18, 0]), 'lz4'],
    [Buffer.from('BZh91AY'), 'bzip2'],
    [Buffer.from('BZhx'), null],
    [Buffer.from('root:x:0:0:root:/root:/bin/bash\n'), null],
    [Buffer.from('SQLite format 3\0'), null],
    [Buffer.from('07070'), null],
    [elfBytes(), null],
    [Buffer.alloc(0), null],
  ];
  for (const [head, want] of cases) assert.equal(initrdFormat(head), want, JSON.stringify(head.subarray(0, 8).toString('latin1')));
});

test('an initrd that is not cpio or compressed data is refused, even from the import folder', async () => {
  const good = file('k', elfBytes());
  await rejectsWith(importLocalImage({ name: 'a', kernel: good, initrd: file('passwd', 'root:x:0:0:root:/root:/bin/bash\n') }, []), 'INVALID_ARGUMENT', /initrd .* neither a cpio archive/);
  await rejectsWith(importLocalImage({ name: 'a', kernel: good, initrd: file('initrd-text', 'initrd bytes') }, []), 'INVALID_ARGUMENT', /neither a cpio/);
  assert.deepEqual(storeEntries(), []);
  const cpio = file('initrd.cpio', Buffer.concat([Buffer.from('070701'), Buffer.alloc(200, 0x30)]));
  const img = await importLocalImage({ name: 'a', kernel: good, initrd: cpio }, []);
  assert.equal(img.initrdFormat, 'cpio');
});

test('the image quota: an import that would exceed it is RESOURCE_EXHAUSTED and leaves nothing', async () => {
  configureImportPolicy({ importDirs: [src], quotaBytes: 10_000 });
  const k = file('k', elfBytes()); // 4096 bytes
  await importLocalImage({ name: 'one', kernel: k }, []);
  await importLocalImage({ name: 'two', kernel: k }, []);
  await rejectsWith(importLocalImage({ name: 'three', kernel: k }, []), 'RESOURCE_EXHAUSTED', /quota exceeded/);
  assert.deepEqual(storeEntries(), ['one', 'two']);
  // Two at once cannot both take the same free space.
  deleteImage('two');
  const both = await Promise.allSettled([importLocalImage({ name: 'x', kernel: k }, []), importLocalImage({ name: 'y', kernel: k }, [])]);
  assert.deepEqual(both.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
  assert.equal(((both.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason as HangarError).code, 'RESOURCE_EXHAUSTED');
  // Deleting frees the space again.
  deleteImage('one');
  await importLocalImage({ name: 'three', kernel: k }, []);
});

test('stale work folders of a crashed daemon are removed; images and foreign entries stay', async () => {
  await importLocalImage({ name: 'kept', kernel: file('k', elfBytes()) }, []);
  const root = localImageRoot();
  fs.mkdirSync(path.join(root, '.import-guest-AbC123'));
  fs.writeFileSync(path.join(root, '.import-guest-AbC123', 'kernel'), 'half');
  fs.mkdirSync(path.join(root, '.delete-old-1-2'));
  fs.mkdirSync(path.join(root, 'notes'));
  fs.writeFileSync(path.join(root, '.import-file-xyz'), 'a file, not a work folder');
  fs.symlinkSync(src, path.join(root, '.import-link-xyz'));
  const removed = cleanStaleImportFolders().map((p) => path.basename(p)).sort();
  assert.deepEqual(removed, ['.delete-old-1-2', '.import-guest-AbC123']);
  assert.deepEqual(storeEntries(), ['.import-file-xyz', '.import-link-xyz', 'kept', 'notes']);
  assert.ok(fs.existsSync(path.join(src, 'k')), 'a symlink is not followed');
});

test('a taken name is ALREADY_EXISTS, also for two imports at once; delete removes the image', async () => {
  const k = file('k', elfBytes());
  await importLocalImage({ name: 'one', kernel: k }, []);
  await rejectsWith(importLocalImage({ name: 'one', kernel: k }, []), 'ALREADY_EXISTS');
  const both = await Promise.allSettled([importLocalImage({ name: 'two', kernel: k }, []), importLocalImage({ name: 'two', kernel: k }, [])]);
  assert.deepEqual(both.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
  const failed = both.find((r) => r.status === 'rejected') as PromiseRejectedResult;
  assert.equal((failed.reason as HangarError).code, 'ALREADY_EXISTS');
  assert.deepEqual(storeEntries(), ['one', 'two']);

  deleteImage('one');
  assert.deepEqual(storeEntries(), ['two']);
  await rejectsWith(ensureImage('one'), 'NOT_FOUND');
  assert.throws(() => deleteImage('one'), (e: unknown) => isHangarError(e) && e.code === 'NOT_FOUND');
  assert.throws(() => deleteImage('tiny'), (e: unknown) => isHangarError(e) && e.code === 'INVALID_ARGUMENT');
  // The name is free again.
  await importLocalImage({ name: 'one', kernel: k }, []);
});

// --- through the API, with the real image store and VM manager ----------------

class CapturingHandle implements VmHandle {
  static nextPid = 910000;
  readonly pid = CapturingHandle.nextPid++;
  private listeners: Array<(e: VmExit) => void> = [];
  constructor(readonly engine: EngineName) {}
  async pause(): Promise<void> {}
  async resume(): Promise<void> {}
  async requestShutdown(): Promise<void> { setTimeout(() => this.exit({ reason: 'poweroff' }), 1); }
  async kill(): Promise<void> { this.exit({ reason: 'killed' }); }
  async queryState(): Promise<'running' | 'paused'> { return 'running'; }
  async stats() { return { pid: this.pid, rssBytes: 1, cpuSeconds: 0, state: 'running' as const }; }
  async openConsole(): Promise<Duplex> { return new PassThrough(); }
  onExit(l: (e: VmExit) => void): void { this.listeners.push(l); }
  detach(): void { this.listeners = []; }
  exit(e: VmExit): void { for (const l of this.listeners.splice(0)) l(e); }
}

/** Records the config each start gets; `defaultCmdline` as the real engine of that name has it. */
class CapturingEngine implements Engine {
  configs: EngineVmConfig[] = [];
  constructor(readonly name: EngineName, readonly defaultCmdline?: string) {}
  async capabilities() {
    return capabilitiesOf(this.name);
  }
  async start(config: EngineVmConfig): Promise<VmHandle> { this.configs.push(config); return new CapturingHandle(this.name); }
  async adopt(): Promise<VmHandle | null> { return null; }
}

/** The real micro engine on a host whose KVM probe finds no /dev/kvm. */
class NoKvmMicroEngine extends MicroEngine {
  override probe(): Promise<KvmProbe> {
    return Promise.resolve({ present: false, fullSystem: false, kind: 'absent', detail: '/dev/kvm not usable (ENOENT)' });
  }
}

async function apiWith(engines: Partial<Record<EngineName, Engine>>): Promise<{ app: FastifyInstance; vms: VmManager; store: Store; close(): Promise<void> }> {
  const dataDir = process.env.HANGAR_DATA_DIR!;
  fs.mkdirSync(dataDir, { recursive: true });
  const log = pino({ level: 'silent' });
  const store = new Store(dataDir);
  const operations = new OperationManager(store, log);
  const events = new EventBus(store);
  const images = { ensureImage, listImages, importImage, deleteImage };
  const registry = registryOf(engines);
  const vms: VmManager = new VmManager({ dataDir, store, events, operations, engines: registry, images, log });
  const host = new HostChecker({ engines: registry, budget: () => vms.budget() });
  const app = await buildServer({ version: 'test', dataDir, vms, operations, events, host, images, engines: registry, log });
  return { app, vms, store, async close() { await app.close(); vms.shutdown(); store.close(); } };
}

async function call(app: FastifyInstance, method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, body?: unknown): Promise<{ status: number; body: any }> {
  const r = await app.inject({ method, url, ...(body !== undefined ? { payload: body as object } : {}) });
  return { status: r.statusCode, body: r.json() };
}

async function waitOp(app: FastifyInstance, res: { status: number; body: any }): Promise<any> {
  assert.equal(res.status, 202, JSON.stringify(res.body));
  const w = await call(app, 'GET', `${res.body.operation}/wait?timeout=10`);
  return w.body.metadata;
}

test('API: import, list, get, delete (refused while a VM uses it); schema and file errors', async () => {
  const micro = new CapturingEngine('micro', DEFAULT_BOOT_ARGS);
  const api = await apiWith({ micro });
  try {
    const kernel = file('guest.elf', elfBytes());
    const created = await call(api.app, 'POST', '/1.0/images', { name: 'guest', kernel });
    assert.equal(created.status, 201);
    assert.equal(created.body.type, 'sync');
    assert.equal(created.body.metadata.name, 'guest');
    assert.equal((await call(api.app, 'GET', '/1.0/images/guest')).body.metadata.origin, 'imported');
    assert.equal((await call(api.app, 'GET', '/1.0/images/nope')).status, 404);
    assert.deepEqual((await call(api.app, 'GET', '/1.0/images')).body.metadata.map((i: { name: string }) => i.name), ['tiny', 'debian-12', 'guest']);

    const cases: Array<[unknown, number, string]> = [
      [{ name: 'guest', kernel }, 409, 'ALREADY_EXISTS'],
      [{ name: 'tiny', kernel }, 400, 'INVALID_ARGUMENT'],
      [{ name: 'Bad', kernel }, 400, 'INVALID_ARGUMENT'],
      [{ name: 'x', kernel, extra: 1 }, 400, 'INVALID_ARGUMENT'],
      [{ name: 'x' }, 400, 'INVALID_ARGUMENT'],
      [{ name: 'x', kernel: 'guest.elf' }, 400, 'INVALID_ARGUMENT'],
      [{ name: 'x', kernel: path.join(src, 'nope') }, 404, 'NOT_FOUND'],
      [{ name: 'x', kernel: file('text', 'hello') }, 400, 'INVALID_ARGUMENT'],
      [{ name: 'x', kernel: '/etc/shadow' }, 400, 'INVALID_ARGUMENT'],
      [{ name: 'x', kernel: '/etc/no-such-file' }, 400, 'INVALID_ARGUMENT'],
    ];
    for (const [body, status, code] of cases) {
      const r = await call(api.app, 'POST', '/1.0/images', body);
      assert.equal(r.status, status, JSON.stringify(body));
      assert.equal(r.body.error.code, code, JSON.stringify(body));
    }

    const launched = await waitOp(api.app, await call(api.app, 'POST', '/1.0/vms', { name: 'v1', image: 'guest', engine: 'micro' }));
    assert.equal(launched.status, 'success');
    const busy = await call(api.app, 'DELETE', '/1.0/images/guest');
    assert.equal(busy.status, 409);
    assert.equal(busy.body.error.code, 'INVALID_STATE');
    assert.deepEqual(busy.body.error.details.vms, ['v1']);
    assert.equal((await call(api.app, 'DELETE', '/1.0/images/tiny')).status, 400);
    assert.equal((await waitOp(api.app, await call(api.app, 'DELETE', '/1.0/vms/v1?force=true'))).status, 'success');
    const del = await call(api.app, 'DELETE', '/1.0/images/guest');
    assert.equal(del.status, 200);
    assert.deepEqual(del.body.metadata, { name: 'guest' });
    assert.equal((await call(api.app, 'DELETE', '/1.0/images/guest')).status, 404);
  } finally {
    await api.close();
  }
});

test('command line: the image\'s wins; an image without one gets the engine default; extra arguments follow', async () => {
  const micro = new CapturingEngine('micro', DEFAULT_BOOT_ARGS);
  const qemu = new CapturingEngine('qemu');
  const api = await apiWith({ micro, qemu });
  try {
    const kernel = file('guest.elf', elfBytes());
    assert.equal((await call(api.app, 'POST', '/1.0/images', { name: 'plain', kernel })).status, 201);
    assert.equal((await call(api.app, 'POST', '/1.0/images', { name: 'own', kernel, cmdline: 'console=ttyS0 mine' })).status, 201);
    const launch = async (name: string, image: string, engine: EngineName, cmdline?: string): Promise<void> => {
      const op = await waitOp(api.app, await call(api.app, 'POST', '/1.0/vms', { name, image, engine, ...(cmdline !== undefined ? { cmdline } : {}) }));
      assert.equal(op.status, 'success', JSON.stringify(op.error));
    };
    await launch('a', 'plain', 'micro');
    await launch('b', 'plain', 'micro', 'extra=1');
    await launch('c', 'own', 'micro', 'extra=2');
    await launch('d', 'plain', 'qemu');
    assert.deepEqual(micro.configs.map((c) => c.boot?.cmdline), [DEFAULT_BOOT_ARGS, `${DEFAULT_BOOT_ARGS} extra=1`, 'console=ttyS0 mine extra=2']);
    assert.equal(qemu.configs[0]!.boot?.cmdline, undefined);
    assert.equal(micro.configs[0]!.accel, 'kvm');
    assert.equal(micro.configs[0]!.boot?.initrd, undefined);
  } finally {
    await api.close();
  }
});

test('micro engine without KVM: launch is refused with UNSUPPORTED and nothing is left behind', async () => {
  const micro = new NoKvmMicroEngine({ logger: pino({ level: 'silent' }), kvm: async () => ({ present: false, fullSystem: false, kind: 'absent', detail: '/dev/kvm not usable (ENOENT)' }) });
  const api = await apiWith({ micro });
  try {
    const caps = await micro.capabilities();
    assert.equal(caps.available, false);
    assert.deepEqual(caps.accelerators, []);
    assert.match(caps.reason ?? '', /no usable KVM/);
    const info = await call(api.app, 'GET', '/1.0');
    assert.equal(info.body.metadata.engines[0].available, false);

    assert.equal((await call(api.app, 'POST', '/1.0/images', { name: 'guest', kernel: file('g.elf', elfBytes()) })).status, 201);
    const r = await call(api.app, 'POST', '/1.0/vms', { name: 'v1', image: 'guest', engine: 'micro' });
    assert.equal(r.status, 422);
    assert.equal(r.body.error.code, 'UNSUPPORTED');
    assert.match(r.body.error.message, /engine "micro" is not available on this host: no usable KVM: \/dev\/kvm not usable/);
    assert.deepEqual((await call(api.app, 'GET', '/1.0/vms')).body.metadata, []);
    assert.deepEqual((await call(api.app, 'GET', '/1.0/operations')).body.metadata, []);
    assert.deepEqual((await call(api.app, 'GET', '/1.0/events')).body.metadata, []);
    assert.equal(fs.existsSync(path.join(process.env.HANGAR_DATA_DIR!, 'vms')), false);

    // Even asked directly, the engine runs on KVM only.
    await rejectsWith(micro.start({ id: 'x', name: 'x', cpus: 1, memoryBytes: 64 * 2 ** 20, boot: { kernel: '/k' }, disks: [], nics: [], accel: 'tcg', runDir: path.join(dir, 'run'), consoleLog: path.join(dir, 'c.log') }), 'UNSUPPORTED', /KVM only/);
    assert.equal(fs.existsSync(path.join(dir, 'run')), false);
  } finally {
    await api.close();
  }
});
