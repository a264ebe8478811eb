/**
 * The built-in tiny image: built from Debian packages on first use, cached,
 * and shaped the way the engines expect (bzImage kernel; gzip'd newc
 * initramfs with /init, busybox and the virtio and ACPI button modules).
 * Uses <projectRoot>/.cache/images unless HANGAR_IMAGE_DIR is set, so the
 * build happens once per checkout.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { execFile, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { projectRoot } from '../../src/common/paths.js';
import { isHangarError } from '../../src/common/errors.js';

process.env.HANGAR_IMAGE_DIR ??= path.join(projectRoot(), '.cache', 'images');
// Scratch image folders go next to the checkout's cache, which HANGAR_IMAGE_DIR may have kept from being made.
fs.mkdirSync(path.join(projectRoot(), '.cache'), { recursive: true });
const { ensureImage, listImages } = await import('../../src/host/images/index.js');
const { listCpio } = await import('../../src/host/images/cpio.js');
const { isBzImage, TINY_MODULES } = await import('../../src/host/images/tiny.js');

test('ensureImage("tiny") builds (or finds) a bootable kernel and initramfs', { timeout: 600_000 }, async () => {
  const stages: string[] = [];
  const ready = await ensureImage('tiny', (stage) => stages.push(stage));
  assert.ok(ready.initrd !== undefined && ready.cmdline !== undefined, 'the built-in image has an initrd and a command line');
  const img = { ...ready, initrd: ready.initrd, cmdline: ready.cmdline };
  assert.equal(img.name, 'tiny');
  assert.ok(isBzImage(fs.readFileSync(img.kernel)), 'kernel is a bzImage');
  assert.match(img.cmdline, /console=ttyS0/);
  assert.equal(img.sizeBytes, fs.statSync(img.kernel).size + fs.statSync(img.initrd).size);

  const files = listCpio(zlib.gunzipSync(fs.readFileSync(img.initrd)));
  const byName = new Map(files.map((f) => [f.name, f]));
  assert.ok(byName.get('init'), 'has /init');
  assert.equal(byName.get('init')!.mode & 0o111, 0o111, '/init is executable');
  assert.ok(byName.get('bin/busybox')!.size > 500_000, 'has a (static) busybox');
  for (const m of TINY_MODULES) assert.ok(byName.has(`lib/modules/${m}.ko`), `has module ${m}`);
  assert.ok(byName.has('etc/acpi/PWRF/00000080'), 'has the power button action');

  // Idempotent: the second call returns the cached image without building.
  const again: string[] = [];
  const img2 = await ensureImage('tiny', (s) => again.push(s));
  assert.deepEqual(img2, img);
  assert.deepEqual(again, []);

  const listed = listImages().find((i) => i.name === 'tiny');
  assert.equal(listed?.status, 'ready');
  assert.equal(listed?.kernel, img.kernel);
});

test('ensureImage of an unknown image is NOT_FOUND', async () => {
  await assert.rejects(ensureImage('no-such-image'), (e: unknown) => isHangarError(e) && e.code === 'NOT_FOUND');
  await assert.rejects(ensureImage('__proto__'), (e: unknown) => isHangarError(e) && e.code === 'NOT_FOUND');
});

test('listImages reports "missing" for an image not built in an empty image dir', async () => {
  const dir = fs.mkdtempSync(path.join(projectRoot(), '.cache', 'images-empty-'));
  const saved = process.env.HANGAR_IMAGE_DIR;
  try {
    process.env.HANGAR_IMAGE_DIR = dir;
    const tiny = listImages().find((i) => i.name === 'tiny');
    assert.equal(tiny?.status, 'missing');
    assert.equal(tiny?.kernel, undefined);
  } finally {
    process.env.HANGAR_IMAGE_DIR = saved;
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** Runs ensureImage in a separate Node process (.ts under tsx, .js when compiled); resolves with what it printed. */
function ensureInOtherProcess(imageDirPath: string): Promise<{ image: { kernel: string }; stages: string[] }> {
  const ts = fileURLToPath(import.meta.url).endsWith('.ts');
  const mod = new URL(`../../src/host/images/index.${ts ? 'ts' : 'js'}`, import.meta.url).href;
  const code = `const m = await import(${JSON.stringify(mod)}); const stages = []; const image = await m.ensureImage('tiny', (s) => stages.push(s)); console.log(JSON.stringify({ image, stages }));`;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [...(ts ? ['--import', 'tsx'] : []), '--input-type=module', '-e', code], { env: { ...process.env, HANGAR_IMAGE_DIR: imageDirPath }, timeout: 300_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(String(stdout).trim().split('\n').pop()!)),
    );
  });
}

test('two processes building at once share one build; a stale lock is taken over', { timeout: 600_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(projectRoot(), '.cache', 'images-race-'));
  try {
    // A lock left by a builder that died: the pid of a process that has exited.
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    fs.writeFileSync(path.join(dir, 'tiny.lock'), String(dead));
    const [a, b] = await Promise.all([ensureInOtherProcess(dir), ensureInOtherProcess(dir)]);
    assert.equal(a.image.kernel, path.join(dir, 'tiny', 'vmlinuz'));
    assert.deepEqual(a.image, b.image);
    const builders = [a, b].filter((r) => r.stages.includes('downloading packages'));
    assert.equal(builders.length, 1, `exactly one process built (${JSON.stringify([a.stages, b.stages])})`);
    // Nothing left behind but the image itself.
    assert.deepEqual(fs.readdirSync(dir), ['tiny']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
