/**
 * inspectDiskImage against hostile and damaged files made with the real
 * qemu-img: backing files and data files outside Hangar's folders (directly,
 * by a relative name, through a symlink), json: and protocol backing names,
 * a virtual size over the quota, truncated and corrupt qcow2, random bytes,
 * other image formats, backing loops; and the good cases it must let through.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { HangarError } from '../../src/common/errors.js';
import { inspectDiskImage, namesProtocol, type InspectRefusal } from '../../src/host/storage/inspect.js';
import { createOverlay } from '../../src/host/storage/overlay.js';
import { parseConvertProgress, qemuImgInfo, readableQemuImgError } from '../../src/host/storage/qemu-img.js';

let base: string;
let root: string;
let outside: string;

const MiB = 1024 * 1024;

function qemuImg(...args: string[]): void {
  execFileSync('qemu-img', args, { stdio: 'pipe', env: { ...process.env, LC_ALL: 'C' } });
}

function inRoot(name: string): string {
  return path.join(root, name);
}

async function refused(file: string, reason: InspectRefusal, opts: { maxVirtualBytes?: number; code?: string } = {}): Promise<HangarError> {
  try {
    await inspectDiskImage(file, { allowedRoots: [root], ...(opts.maxVirtualBytes !== undefined ? { maxVirtualBytes: opts.maxVirtualBytes } : {}) });
  } catch (e) {
    assert.ok(e instanceof HangarError, `expected a HangarError, got ${String(e)}`);
    assert.equal(e.details?.reason, reason, `reason for ${file}: ${e.message}`);
    if (opts.code) assert.equal(e.code, opts.code);
    assert.ok(e.message.includes(file) || e.message.includes(path.basename(file)), `the message names the file: ${e.message}`);
    return e;
  }
  assert.fail(`${file} was accepted; expected refusal "${reason}"`);
}

before(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-inspect-'));
  root = path.join(base, 'root');
  outside = path.join(base, 'outside');
  fs.mkdirSync(root);
  fs.mkdirSync(outside);
});

after(() => {
  fs.rmSync(base, { recursive: true, force: true });
});

test('a plain qcow2 and a raw disk with a partition table pass, with format and sizes', async () => {
  qemuImg('create', '-q', '-f', 'qcow2', inRoot('plain.qcow2'), '64M');
  const q = await inspectDiskImage(inRoot('plain.qcow2'), { allowedRoots: [root], maxVirtualBytes: 64 * MiB });
  assert.equal(q.format, 'qcow2');
  assert.equal(q.virtualBytes, 64 * MiB);
  assert.deepEqual(q.chain, []);

  const mbr = Buffer.alloc(4 * MiB);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  mbr.fill(7, 1024, 2048);
  fs.writeFileSync(inRoot('disk.raw'), mbr);
  const r = await inspectDiskImage(inRoot('disk.raw'), { allowedRoots: [root] });
  assert.equal(r.format, 'raw');
  assert.equal(r.virtualBytes, 4 * MiB);
  assert.equal(r.rawContent, 'MBR / boot sector');

  fs.writeFileSync(inRoot('blank.raw'), Buffer.alloc(MiB));
  assert.equal((await inspectDiskImage(inRoot('blank.raw'), { allowedRoots: [root] })).format, 'raw');
});

test('a backing chain inside the roots passes and is listed, nearest first', async () => {
  fs.writeFileSync(inRoot('chain-base.raw'), Buffer.alloc(MiB));
  qemuImg('create', '-q', '-f', 'qcow2', '-b', inRoot('chain-base.raw'), '-F', 'raw', inRoot('chain-mid.qcow2'));
  // A relative backing name, resolved against the image's own folder.
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'chain-mid.qcow2', '-F', 'qcow2', inRoot('chain-top.qcow2'), '2M');
  const i = await inspectDiskImage(inRoot('chain-top.qcow2'), { allowedRoots: [root] });
  assert.equal(i.virtualBytes, 2 * MiB);
  assert.deepEqual(i.backing, { path: inRoot('chain-mid.qcow2'), format: 'qcow2' });
  assert.deepEqual(i.chain.map((l) => [path.basename(l.path), l.format]), [['chain-mid.qcow2', 'qcow2'], ['chain-base.raw', 'raw']]);
});

test('a backing file outside the roots (/etc/shadow) is refused', async () => {
  qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', '/etc/shadow', '-F', 'raw', inRoot('shadow.qcow2'), '1G');
  const e = await refused(inRoot('shadow.qcow2'), 'backing-outside-roots', { code: 'INVALID_ARGUMENT' });
  assert.match(e.message, /\/etc\/shadow.*outside Hangar's storage folders/);
});

test('a relative backing name that climbs out of the roots is refused', async () => {
  qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', '../../../../../../etc/passwd', '-F', 'raw', inRoot('climb.qcow2'), '1G');
  await refused(inRoot('climb.qcow2'), 'backing-outside-roots');
});

test('a backing file reached through a symlink inside the roots that points outside is refused', async () => {
  fs.writeFileSync(path.join(outside, 'secret.raw'), Buffer.alloc(MiB));
  fs.symlinkSync(path.join(outside, 'secret.raw'), inRoot('link.raw'));
  qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', inRoot('link.raw'), '-F', 'raw', inRoot('via-link.qcow2'), '1M');
  await refused(inRoot('via-link.qcow2'), 'backing-outside-roots');
});

test('a missing backing file outside the roots gets the same answer as an existing one (no probing)', async () => {
  qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', '/nonexistent/hangar/x.raw', '-F', 'raw', inRoot('ghost.qcow2'), '1M');
  await refused(inRoot('ghost.qcow2'), 'backing-outside-roots');
  qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', inRoot('not-there.raw'), '-F', 'raw', inRoot('ghost2.qcow2'), '1M');
  await refused(inRoot('ghost2.qcow2'), 'backing-missing');
});

test('json: and protocol backing names are refused before anything opens them', async () => {
  qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', 'json:{"driver":"file","filename":"/etc/shadow"}', '-F', 'raw', inRoot('json.qcow2'), '1G');
  const e = await refused(inRoot('json.qcow2'), 'backing-protocol');
  assert.match(e.message, /json:/);
  qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', 'nbd://127.0.0.1:10809/x', '-F', 'raw', inRoot('nbd.qcow2'), '1G');
  await refused(inRoot('nbd.qcow2'), 'backing-protocol');
  assert.equal(namesProtocol('file:/etc/shadow'), true);
  assert.equal(namesProtocol('/srv/a:b.qcow2'), false);
  assert.equal(namesProtocol('sub/a:b.qcow2'), false);
});

test('an external data file outside the roots is refused; one inside is allowed', async () => {
  const data = path.join(outside, 'data.raw');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${data},data_file_raw=on`, inRoot('datafile.qcow2'), '16M');
  await refused(inRoot('datafile.qcow2'), 'data-file-outside-roots');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${inRoot('data-in.raw')},data_file_raw=on`, inRoot('datafile-in.qcow2'), '16M');
  const ok = await inspectDiskImage(inRoot('datafile-in.qcow2'), { allowedRoots: [root] });
  assert.equal(ok.dataFile, inRoot('data-in.raw'));
});

test('a virtual size over the quota is refused with RESOURCE_EXHAUSTED', async () => {
  qemuImg('create', '-q', '-f', 'qcow2', inRoot('huge.qcow2'), '8T');
  const e = await refused(inRoot('huge.qcow2'), 'too-large', { maxVirtualBytes: 10 * 2 ** 30, code: 'RESOURCE_EXHAUSTED' });
  assert.match(e.message, /8T is over the 10G allowed/);
  fs.writeFileSync(inRoot('big.raw'), Buffer.alloc(2 * MiB));
  await refused(inRoot('big.raw'), 'too-large', { maxVirtualBytes: MiB });
});

test('a truncated qcow2 is refused', async () => {
  // Data written into it, so its tables lie beyond the first clusters.
  fs.writeFileSync(inRoot('src.raw'), Buffer.concat([Buffer.alloc(MiB, 1), Buffer.alloc(3 * MiB)]));
  qemuImg('convert', '-f', 'raw', '-O', 'qcow2', inRoot('src.raw'), inRoot('full.qcow2'));
  const whole = fs.readFileSync(inRoot('full.qcow2'));
  fs.writeFileSync(inRoot('cut.qcow2'), whole.subarray(0, 100_000));
  await refused(inRoot('cut.qcow2'), 'truncated');
  fs.writeFileSync(inRoot('cut-header.qcow2'), whole.subarray(0, 40));
  await refused(inRoot('cut-header.qcow2'), 'truncated');
});

test('a qcow2 whose refcounts qemu-img check finds wrong is refused as corrupt', async () => {
  fs.writeFileSync(inRoot('src2.raw'), Buffer.concat([Buffer.alloc(MiB, 3), Buffer.alloc(MiB)]));
  qemuImg('convert', '-f', 'raw', '-O', 'qcow2', inRoot('src2.raw'), inRoot('bad-refs.qcow2'));
  const b = fs.readFileSync(inRoot('bad-refs.qcow2'));
  const rtOffset = Number(b.readBigUInt64BE(48));
  const block = Number(b.readBigUInt64BE(rtOffset));
  b.fill(0, block, block + 65536); // every refcount of the first block says "free"
  fs.writeFileSync(inRoot('bad-refs.qcow2'), b);
  const e = await refused(inRoot('bad-refs.qcow2'), 'corrupt');
  assert.match(e.message, /qemu-img check found \d+ corruptions/);
});

test('random bytes, a qcow2 magic over random bytes, a text file and an ELF are refused as not disk images', async () => {
  fs.writeFileSync(inRoot('random.bin'), randomBytes(MiB));
  await refused(inRoot('random.bin'), 'not-a-disk-image');
  fs.writeFileSync(inRoot('odd.bin'), randomBytes(1000));
  await refused(inRoot('odd.bin'), 'not-a-disk-image');
  const fake = randomBytes(MiB);
  fake.writeUInt32BE(0x514649fb, 0);
  fake.writeUInt32BE(3, 4);
  fs.writeFileSync(inRoot('fake.qcow2'), fake);
  const e = await inspectDiskImage(inRoot('fake.qcow2'), { allowedRoots: [root] }).then(() => null, (x: unknown) => x as HangarError);
  assert.ok(e instanceof HangarError && ['corrupt', 'truncated', 'unknown-features', 'encrypted'].includes(String(e.details?.reason)), `refused: ${String(e)}`);
  fs.writeFileSync(inRoot('notes.txt'), 'hello\n');
  await refused(inRoot('notes.txt'), 'not-a-disk-image');
  fs.copyFileSync(process.execPath, inRoot('node.elf'));
  await refused(inRoot('node.elf'), 'not-a-disk-image');
  fs.writeFileSync(inRoot('empty.raw'), '');
  await refused(inRoot('empty.raw'), 'not-a-disk-image');
});

test('other image formats are refused as unsupported', async () => {
  qemuImg('create', '-q', '-f', 'vmdk', inRoot('disk.vmdk'), '16M');
  await refused(inRoot('disk.vmdk'), 'unsupported-format', { code: 'UNSUPPORTED' });
  qemuImg('create', '-q', '-f', 'vdi', inRoot('disk.vdi'), '16M');
  await refused(inRoot('disk.vdi'), 'unsupported-format');
});

test('a backing loop and a format that does not match the bytes are refused', async () => {
  qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', inRoot('loop-b.qcow2'), '-F', 'qcow2', inRoot('loop-a.qcow2'), '1M');
  qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', inRoot('loop-a.qcow2'), '-F', 'qcow2', inRoot('loop-b.qcow2'), '1M');
  await refused(inRoot('loop-a.qcow2'), 'backing-loop');
  // Says raw, holds a qcow2: QEMU would hand the guest the qcow2's bytes.
  qemuImg('create', '-q', '-f', 'qcow2', inRoot('inner.qcow2'), '1M');
  qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', inRoot('inner.qcow2'), '-F', 'raw', inRoot('mislabel.qcow2'), '1M');
  await refused(inRoot('mislabel.qcow2'), 'format-mismatch');
  await assert.rejects(inspectDiskImage(inRoot('plain.qcow2'), { allowedRoots: [root], format: 'raw' }), (e: HangarError) => e.details?.reason === 'format-mismatch');
});

test('a missing file and a folder are refused', async () => {
  await refused(inRoot('nope.qcow2'), 'not-found', { code: 'NOT_FOUND' });
  fs.mkdirSync(inRoot('dir.qcow2'));
  await refused(inRoot('dir.qcow2'), 'not-a-file');
});

test('createOverlay makes a 0600 qcow2 with an absolute backing path and explicit format, never over an existing file', async () => {
  fs.writeFileSync(inRoot('ovl-base.raw'), Buffer.alloc(2 * MiB));
  const o = await createOverlay(inRoot('ovl-base.raw'), inRoot('ovl.qcow2'), 4 * MiB);
  assert.equal(o.virtualBytes, 4 * MiB);
  const info = await qemuImgInfo(inRoot('ovl.qcow2'), { format: 'qcow2' });
  assert.equal(info.backingFilename, inRoot('ovl-base.raw'));
  assert.equal(info.backingFormat, 'raw');
  assert.equal(info.virtualBytes, 4 * MiB);
  assert.equal(fs.statSync(inRoot('ovl.qcow2')).mode & 0o777, 0o600);
  await assert.rejects(createOverlay(inRoot('ovl-base.raw'), inRoot('ovl.qcow2')), (e: HangarError) => e.code === 'ALREADY_EXISTS');
  await assert.rejects(createOverlay(inRoot('ovl-base.raw'), inRoot('small.qcow2'), MiB), (e: HangarError) => e.code === 'INVALID_ARGUMENT');
  assert.equal(fs.existsSync(inRoot('small.qcow2')), false);
  assert.deepEqual(fs.readdirSync(root).filter((n) => n.endsWith('.part')), []);
  // The overlay itself passes inspection (its base is inside the roots).
  const i = await inspectDiskImage(inRoot('ovl.qcow2'), { allowedRoots: [root] });
  assert.deepEqual(i.backing, { path: inRoot('ovl-base.raw'), format: 'raw' });
});

test('qemu-img messages are made readable and convert progress is parsed', () => {
  assert.equal(readableQemuImgError("qemu-img: /x: Could not open '/x': No such file or directory\n"), "/x: Could not open '/x': No such file or directory");
  assert.equal(readableQemuImgError('qemu-img: warning: something\nqemu-img: Use the --shrink option to perform a shrink operation.\n'), 'Use the --shrink option to perform a shrink operation.');
  assert.equal(parseConvertProgress('    (0.00/100%)\r    (45.31/100%)\r'), 45.31);
  assert.equal(parseConvertProgress('nothing'), null);
});
