/**
 * Fuzzing hangar-vmm's control API. route() gets random methods, paths
 * (known resources, trailing slashes, %-escapes good and bad, odd ids,
 * query strings) and bodies (valid bodies with fields dropped, retyped,
 * stretched or added; JSON of every shape) against a real controller that
 * has not started a VM: every answer is 2xx or 405, every refusal a
 * HangarError with a 4xx status (never 500), and a refused request leaves
 * the configuration exactly as it was. Then a live ControlServer on a Unix
 * socket gets malformed HTTP, bad JSON and oversized bodies: each is
 * answered 4xx or closed, and the server still answers afterwards.
 * Seeds are fixed; HANGAR_FUZZ_SCALE=N runs N times as many requests.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { HangarError } from '../../src/common/errors.js';
import { createLogger } from '../../src/common/log.js';
import { ControlServer, route } from '../../src/vmm/api.js';
import { ConsoleHub } from '../../src/vmm/console.js';
import { VmmController } from '../../src/vmm/controller.js';
import { forSeeds, fuzzScale, type Rng } from '../helpers/fuzz.js';

const METHODS = ['GET', 'PUT', 'PATCH', 'POST', 'DELETE', 'HEAD', 'OPTIONS', 'BREW', 'get', ''];
const PATHS = ['/', '/vm', '/metrics', '/machine-config', '/boot-source', '/drives/', '/network-interfaces/', '/entropy', '/actions', '/openapi.json', '/nope'];
const IDS = ['d1', 'root', 'a'.repeat(64), 'a'.repeat(65), '..', '.', 'a.b', 'a%2Fb', '%', '%zz', '%E0%A4%A', '%00', 'x y', '', 'é', '%C3%A9'];

function randomJson(r: Rng, depth = 0): unknown {
  switch (r.int(depth > 2 ? 6 : 9)) {
    case 0: return null;
    case 1: return r.bool();
    case 2: return r.pick([0, -1, 1, 1.5, 2 ** 53, -(2 ** 31), 1e308, 32, 33, 64, 128, 4096, 4097]);
    case 3: return r.pick(['', 'x', '/', '/abs/path', 'rel/path', 'a\nb', 'a\u0000b', 'Paused', 'Resumed', 'InstanceStart', 'Pause', 'x'.repeat(5000), 'tap0', '02:00:00:00:00:01']);
    case 4: return undefined;
    case 5: return r.u32();
    case 6: return Array.from({ length: r.int(4) }, () => randomJson(r, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = r.int(4); i > 0; i--) o[r.pick(['vcpu_count', 'mem_size_mib', 'smt', 'kernel_image_path', 'drive_id', 'state', 'action_type', '__proto__', 'constructor', 'x'])] = randomJson(r, depth + 1);
      return o;
    }
  }
}

/** A valid body for `p`, then bent in one random way. */
function body(r: Rng, p: string, id: string): unknown {
  const valid: Record<string, Record<string, unknown>> = {
    '/machine-config': { vcpu_count: 2, mem_size_mib: 256, smt: false },
    '/boot-source': { kernel_image_path: '/nonexistent-hangar-fuzz/vmlinux', boot_args: 'console=ttyS0' },
    '/drives/': { drive_id: id, path_on_host: '/nonexistent-hangar-fuzz/disk.img', is_read_only: true },
    '/network-interfaces/': { iface_id: id, host_dev_name: 'tap-fz0', guest_mac: '02:00:00:00:00:01' },
    '/entropy': {},
    '/actions': { action_type: r.pick(['Pause', 'Resume', 'SendCtrlAltDel', 'Stop', 'InstanceStart', 'Explode']) },
    '/vm': { state: r.pick(['Paused', 'Resumed', 'Running']) },
  };
  const b = { ...(valid[p] ?? {}) };
  const keys = Object.keys(b);
  switch (r.int(6)) {
    case 0: return b;
    case 1: if (keys.length) delete b[r.pick(keys)]; return b;
    case 2: if (keys.length) b[r.pick(keys)] = randomJson(r); return b;
    case 3: b[r.pick(['extra', 'smt', 'track_dirty_pages', 'serial', 'initrd_path', 'conservative_cpuid'])] = randomJson(r); return b;
    default: return randomJson(r);
  }
}

function snapshot(ctl: VmmController): string {
  return JSON.stringify({ mc: ctl.machineConfig, bs: ctl.bootSource ?? null, drives: [...ctl.drives], nets: [...ctl.nets], rng: ctl.entropy, state: ctl.state });
}

test('random requests against route(): 2xx/405 or a 4xx HangarError, never 500; refusals change nothing', async () => {
  const ctl = new VmmController('fz', createLogger('test', 'silent'), new ConsoleHub());
  const seen = new Map<number, number>();
  await forSeeds(0xa91, 3000, async (r) => {
    let p = r.pick(PATHS);
    const id = r.pick(IDS);
    const bodyPath = p;
    if (p.endsWith('/') && p !== '/') p += id;
    if (r.int(10) === 0) p += r.pick(['/', '//', '?x=1', '?%', '#f', '/extra']);
    const method = r.pick(METHODS);
    const b = r.int(8) === 0 ? undefined : body(r, bodyPath, id);
    // An InstanceStart that could pass validation would build a real VM; the loader's own fuzz covers what follows.
    if (ctl.bootSource && JSON.stringify(b)?.includes('InstanceStart')) return;
    const before = snapshot(ctl);
    let status: number;
    try {
      status = (await route(ctl, method, p, b)).status;
      assert.ok([200, 204, 405].includes(status), `${method} ${p} answered ${status}`);
    } catch (e) {
      assert.ok(e instanceof HangarError, `${method} ${p} ${JSON.stringify(b)} threw ${String(e)}`);
      status = e.status;
      assert.ok(status >= 400 && status < 500, `${method} ${p} ${JSON.stringify(b)} → ${status} ${e.code}: ${e.message}`);
      assert.equal(snapshot(ctl), before, `${method} ${p} was refused but changed the configuration`);
    }
    seen.set(status, (seen.get(status) ?? 0) + 1);
  });
  // The generator reaches both sides: accepted configuration and each kind of refusal.
  for (const s of [200, 204, 400, 404, 405, 409]) assert.ok((seen.get(s) ?? 0) > 0, `no ${s} answers among ${JSON.stringify([...seen])}`);
  assert.equal((await route(ctl, 'GET', '/', undefined)).status, 200);
});

/** Sends raw bytes on a fresh connection; resolves with the status code of the answer, or null when closed without one. */
function raw(sock: string, bytes: Buffer): Promise<number | null> {
  return new Promise((resolve) => {
    const c = net.connect(sock);
    let text = '';
    c.on('data', (d) => { text += d.toString('latin1'); });
    c.on('error', () => {});
    c.on('close', () => resolve(/^HTTP\/1\.1 (\d{3})/.exec(text) ? Number(/^HTTP\/1\.1 (\d{3})/.exec(text)![1]) : null));
    c.setTimeout(10_000, () => c.destroy());
    c.end(bytes);
  });
}

test('a live control socket answers malformed HTTP, bad JSON and oversized bodies with 4xx and keeps serving', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-vmm-apifuzz-'));
  const sock = path.join(dir, 'api.sock');
  const ctl = new VmmController('fz', createLogger('test', 'silent'), new ConsoleHub());
  const srv = new ControlServer(ctl);
  await srv.listen(sock);
  try {
    const req = (method: string, p: string, b: string | Buffer, extra = '') => Buffer.concat([
      Buffer.from(`${method} ${p} HTTP/1.1\r\nhost: x\r\ncontent-length: ${Buffer.byteLength(b)}\r\n${extra}connection: close\r\n\r\n`, 'latin1'), Buffer.from(b),
    ]);
    const fixed: Array<[string, Buffer]> = [
      ['bad JSON', req('PUT', '/machine-config', '{"vcpu_count": 1,')],
      ['oversized body', req('PUT', '/boot-source', Buffer.alloc(256 * 1024, 0x20))],
      ['bad escape', req('PUT', '/drives/%E0%A4%A', '{}')],
      ['garbage request line', Buffer.from('\x00\x01\x02 / HTTP/9\r\n\r\n', 'latin1')],
      ['no HTTP at all', Buffer.from('hello\r\n\r\n')],
      ['bad header', Buffer.from('PUT / HTTP/1.1\r\nbad header line\r\n\r\n')],
      ['wrong content-length', Buffer.from('PUT /entropy HTTP/1.1\r\ncontent-length: -5\r\n\r\n{}')],
    ];
    for (const [what, bytes] of fixed) {
      const s = await raw(sock, bytes);
      assert.ok(s === null || (s >= 400 && s < 500), `${what}: answered ${s}`);
    }
    await forSeeds(0x50c, 40, async (r) => {
      const bytes = r.int(2) ? req(r.pick(METHODS) || 'PUT', r.pick(PATHS) + r.pick(IDS), r.bytes(r.int(2048))) : r.bytes(1 + r.int(512));
      const s = await raw(sock, bytes);
      assert.ok(s === null || s < 500, `answered ${s}`);
    });
    assert.equal(await raw(sock, req('GET', '/', '')), 200, 'still serving');
    assert.equal(snapshot(ctl), snapshot(new VmmController('fz', createLogger('test', 'silent'), new ConsoleHub())), 'configuration untouched');
  } finally {
    srv.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  assert.ok(fuzzScale() >= 1);
});
