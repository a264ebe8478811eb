/**
 * The one TAP opener (src/kvm/tap.ts) against the real kernel, inside a
 * network namespace this test creates: a descriptor on a TAP the way the
 * daemon made it (`ip tuntap add`, then attach), the flags the kernel
 * reports for it (no packet information; a virtio-net header only when
 * asked), non-blocking reads, a transient TAP that goes with its
 * descriptor, and the errors.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isHangarError } from '../../src/common/errors.js';
import { openTapFd } from '../../src/kvm/tap.js';

const NS = `hangar-tapopen-${process.pid}`;
const isRoot = process.getuid?.() === 0;
const ts = fileURLToPath(import.meta.url).endsWith('.ts');
const tapModule = new URL(`../../src/kvm/tap.${ts ? 'ts' : 'js'}`, import.meta.url).href;
let nsCreated = false;

before(() => {
  if (!isRoot) return;
  execFileSync('ip', ['netns', 'add', NS]);
  nsCreated = true;
});

after(() => {
  if (nsCreated) execFileSync('ip', ['netns', 'del', NS]);
});

/** Runs ES module code with the opener as `openTapFd` in a Node process inside the namespace; returns its JSON. */
function inNamespace(code: string): Record<string, unknown> {
  const src = `const { openTapFd } = await import(${JSON.stringify(tapModule)});
const fs = await import('node:fs');
const { execFileSync } = await import('node:child_process');
const link = (n) => { try { return execFileSync('ip', ['-d', 'link', 'show', n], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }); } catch { return null; } };
const failure = (f) => { try { f(); return null; } catch (e) { return { code: e.code, message: e.message, errno: e.details?.errno }; } };
${code}`;
  const r = spawnSync('ip', ['netns', 'exec', NS, process.execPath, ...(ts ? ['--import', 'tsx'] : []), '--input-type=module', '-e', src], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `${r.error?.message ?? ''} ${r.stderr}`); // a blocking descriptor hangs the read: killed, a failure
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

test('a bad name is refused before anything is opened', () => {
  for (const name of ['', 'a-name-longer-than-15', 'has space', '..', 'x/y']) {
    assert.throws(() => openTapFd(name, { vnetHdr: false }), (e: unknown) => isHangarError(e) && e.code === 'INVALID_ARGUMENT', JSON.stringify(name));
  }
});

test('attaches to the daemon\'s TAP with the flags asked for; a transient one goes with its descriptor', { skip: !isRoot && 'needs root (network namespace, /dev/net/tun)' }, () => {
  const r = inNamespace(`
execFileSync('ip', ['tuntap', 'add', 'dev', 'hgt-made', 'mode', 'tap']);
const made = openTapFd('hgt-made', { vnetHdr: true });
const madeLink = link('hgt-made');
const busy = failure(() => openTapFd('hgt-made', { vnetHdr: true }));
let read;
try { fs.readSync(made.fd, Buffer.alloc(2048)); read = 'data'; } catch (e) { read = e.code; }
fs.closeSync(made.fd);
const madeAfterClose = link('hgt-made') !== null;
const plain = openTapFd('hgt-plain', { vnetHdr: false });
const plainLink = link('hgt-plain');
fs.closeSync(plain.fd);
const plainAfterClose = link('hgt-plain') !== null;
const notTap = failure(() => openTapFd('lo', { vnetHdr: false }));
console.log(JSON.stringify({ made: made.name, madeLink, busy, read, madeAfterClose, plain: plain.name, plainLink, plainAfterClose, notTap }));
`);
  assert.equal(r.made, 'hgt-made');
  assert.match(String(r.madeLink), /tun type tap pi off vnet_hdr on/, 'IFF_NO_PI, IFF_VNET_HDR');
  assert.deepEqual(r.busy && { code: (r.busy as { code: string }).code, errno: (r.busy as { errno: number }).errno }, { code: 'UNAVAILABLE', errno: 16 }, 'a second descriptor on a single-queue TAP: EBUSY');
  assert.equal(r.read, 'EAGAIN', 'non-blocking: nothing to read is EAGAIN, not a hang');
  assert.equal(r.madeAfterClose, true, 'the daemon\'s TAP stays when the descriptor closes');
  assert.equal(r.plain, 'hgt-plain');
  assert.match(String(r.plainLink), /tun type tap pi off vnet_hdr off/, 'no virtio-net header when not asked');
  assert.equal(r.plainAfterClose, false, 'a TAP the descriptor made goes with it');
  const notTap = r.notTap as { code: string; message: string; errno: number };
  assert.equal(notTap.code, 'UNAVAILABLE');
  assert.equal(notTap.errno, 22, 'lo is not a TAP: EINVAL');
  assert.match(notTap.message, /cannot attach to TAP lo: TUNSETIFF failed with EINVAL/);
});
