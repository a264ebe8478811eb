/**
 * hangar-vmm against hostile input, one finding each: a guest filling the
 * i8042 output queue, ELF notes whose lengths wrap the parser's arithmetic,
 * and control-API requests with a malformed %-escape, non-boolean flags or
 * relative host paths. Each would have grown memory, hung the VMM, answered
 * 500, or been accepted before its fix.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createLogger } from '../../src/common/log.js';
import { route } from '../../src/vmm/api.js';
import { ConsoleHub } from '../../src/vmm/console.js';
import { VmmController } from '../../src/vmm/controller.js';
import { I8042, I8042_OUTPUT_MAX } from '../../src/vmm/devices/i8042.js';
import { buildGuest, makeBzImage } from '../helpers/vmm.js';
import { runLoaderJob } from './loader-harness.js';

const irq = { gsi: 1, pulse() {}, set() {} };
let dir = '';
let elf = '';

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-vmm-input-'));
  elf = buildGuest('hello');
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('i8042: a guest writing without reading cannot grow the output queue past the hardware FIFO', () => {
  const k = new I8042(irq, () => {});
  const one = Uint8Array.of(0);
  // Keyboard-command writes to port 0x60 each queue an ACK; self-test commands on 0x64 queue 0x55.
  for (let i = 0; i < 200_000; i++) {
    if (i % 2) k.pioWrite(0, one); else k.pioWrite(4, Uint8Array.of(0xaa));
  }
  const m = k.metrics();
  assert.equal(m.queued, I8042_OUTPUT_MAX, 'the queue is full, not longer');
  assert.equal(m.dropped, 200_000 - I8042_OUTPUT_MAX, 'the rest were dropped and counted');
  // The guest still reads what the FIFO holds, in order, then an empty buffer.
  const data = new Uint8Array(1);
  k.pioRead(0, data);
  assert.equal(data[0], 0x55, 'first queued byte: the first self-test answer');
  for (let i = 1; i < I8042_OUTPUT_MAX; i++) k.pioRead(0, data);
  k.pioRead(4, data);
  assert.equal(data[0]! & 1, 0, 'output buffer empty after draining the FIFO');
  k.sendCtrlAltDel();
  assert.equal(k.metrics().queued, 8, 'the host can queue again once the guest drained it');
});

/** The hello guest with its PT_NOTE's first note header replaced (and not Hangar's type, so the scan goes on). */
function elfWithNote(name: string, namesz: number, descsz: number): string {
  const img = Buffer.from(fs.readFileSync(elf));
  const phoff = Number(img.readBigUInt64LE(32));
  const phnum = img.readUInt16LE(56);
  let noteAt = -1;
  for (let i = 0; i < phnum; i++) {
    const o = phoff + 56 * i;
    if (img.readUInt32LE(o) === 4) noteAt = Number(img.readBigUInt64LE(o + 8));
  }
  assert.ok(noteAt > 0, 'the test guest has a PT_NOTE segment');
  img.writeUInt32LE(namesz, noteAt);
  img.writeUInt32LE(descsz, noteAt + 4);
  img.writeUInt32LE(0x1234, noteAt + 8);
  const p = path.join(dir, name);
  fs.writeFileSync(p, img);
  return p;
}

test('ELF notes whose lengths wrap around (namesz 0xfffffffc, 0xfffffff4) end the scan; the kernel still loads', async () => {
  for (const [namesz, descsz] of [[0xfffffffc, 0xfffffff8], [0xfffffff4, 0], [0xfffffffc, 0], [0, 0xfffffff4], [0xffffffff, 0xffffffff]] as const) {
    const kernel = elfWithNote(`note-${namesz.toString(16)}-${descsz.toString(16)}.elf`, namesz, descsz);
    const r = await runLoaderJob({ kind: 'one', kernel, dir, memBytes: 64 * 2 ** 20 });
    assert.equal(r.t, 'done', `namesz 0x${namesz.toString(16)} descsz 0x${descsz.toString(16)}: ${r.message ?? ''}`);
    assert.equal(r.result, 'loaded', 'a malformed note is ignored, not fatal');
  }
});

test('a bzImage cut off before its 64-bit entry (+0x200) is refused, not entered in zeroed memory', async () => {
  const full = path.join(dir, 'full.bzImage');
  makeBzImage(elf, full);
  const img = fs.readFileSync(full);
  const pmOffset = (img[0x1f1]! + 1) * 512;
  for (const keep of [0x10, 0x1ff, 0x200]) {
    const cut = path.join(dir, `cut-${keep}.bzImage`);
    const short = Buffer.from(img.subarray(0, pmOffset + keep));
    short.writeUInt32LE(keep, 0x260); // init_size no larger than what is there
    fs.writeFileSync(cut, short);
    const r = await runLoaderJob({ kind: 'one', kernel: cut, dir, memBytes: 64 * 2 ** 20 });
    assert.equal(r.t, 'done', r.message);
    assert.equal(r.result, 'refused', `protected-mode part of ${keep} bytes`);
  }
});

function controller(): VmmController {
  return new VmmController('sec', createLogger('test', 'silent'), new ConsoleHub());
}

async function status(ctl: VmmController, method: string, url: string, body?: unknown): Promise<{ status: number; message: string }> {
  try {
    const r = await route(ctl, method, url, body);
    return { status: r.status, message: '' };
  } catch (e) {
    const he = e as { status?: number; message: string };
    return { status: he.status ?? 500, message: he.message };
  }
}

test('control API: a malformed %-escape in a path is 400, not 500', async () => {
  const ctl = controller();
  for (const url of ['/drives/%', '/drives/%E0%A4%A', '/network-interfaces/%zz']) {
    const r = await status(ctl, 'PUT', url, { drive_id: 'a', path_on_host: '/a', iface_id: 'a', host_dev_name: 'tap0' });
    assert.equal(r.status, 400, `${url}: ${r.message}`);
    assert.match(r.message, /escape/);
  }
  assert.equal(ctl.drives.size + ctl.nets.size, 0, 'nothing was recorded');
});

test('control API: smt and track_dirty_pages must be booleans', async () => {
  const ctl = controller();
  for (const field of ['smt', 'track_dirty_pages']) {
    for (const v of ['yes', 1, null, {}, []]) {
      const r = await status(ctl, 'PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: 256, [field]: v });
      assert.equal(r.status, 400, `${field}=${JSON.stringify(v)}`);
      assert.match(r.message, new RegExp(`"${field}" must be true or false`));
    }
    assert.equal((await status(ctl, 'PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: 256, [field]: false })).status, 204);
  }
  assert.deepEqual(ctl.machineConfig, { vcpu_count: 2, mem_size_mib: 256, track_dirty_pages: false });
});

test('control API and --config: kernel, initrd and drive paths must be absolute', async () => {
  const ctl = controller();
  const cases: Array<[string, unknown, string]> = [
    ['/boot-source', { kernel_image_path: 'vmlinux' }, 'kernel_image_path'],
    ['/boot-source', { kernel_image_path: './vmlinux' }, 'kernel_image_path'],
    ['/boot-source', { kernel_image_path: '../../etc/shadow' }, 'kernel_image_path'],
    ['/boot-source', { kernel_image_path: '/k', initrd_path: 'initrd.img' }, 'initrd_path'],
    ['/drives/d', { drive_id: 'd', path_on_host: 'disk.img' }, 'path_on_host'],
  ];
  for (const [url, body, field] of cases) {
    const r = await status(ctl, 'PUT', url, body);
    assert.equal(r.status, 400, `${url} ${JSON.stringify(body)}`);
    assert.match(r.message, new RegExp(`"${field}" must be an absolute path`));
  }
  assert.equal(ctl.bootSource, undefined);
  assert.equal(ctl.drives.size, 0);
  const { parseConfigFile } = await import('../../src/vmm/config.js');
  assert.throws(() => parseConfigFile({ 'boot-source': { kernel_image_path: 'vmlinux' } }), /"boot-source.kernel_image_path" must be an absolute path/);
  assert.throws(() => parseConfigFile({ 'boot-source': { kernel_image_path: '/k' }, drives: [{ drive_id: 'a', path_on_host: 'x' }] }), /"drives\[0\].path_on_host" must be an absolute path/);
});
