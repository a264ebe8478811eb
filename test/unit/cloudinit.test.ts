/**
 * cloud-init inputs and seeds: SSH key and user-data/network-config checks,
 * the create request → VmSpec.cloudInit, the fit to an image, and the seed
 * disk itself, built for real (mkfs.vfat + mcopy) and read back with
 * mtools, as cloud-init would find it (label CIDATA, three files).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { HangarError } from '../../src/common/errors.js';
import {
  attachGuestSide, buildSeed, cloudInitSpecFrom, defaultUserData, fitCloudInitToImage, renderMetaData, validateNetworkConfig,
  validateSshKey, validateSshKeys, validateUserData, MAX_SSH_KEYS, MAX_USER_DATA, SEED_DISK_ID, SEED_FILE,
} from '../../src/host/cloudinit/index.js';
import { buildVmSpec } from '../../src/host/spec.js';
import { planDisks } from '../../src/host/disks/plan.js';
import { QEMU_LIMITS } from '../../src/engines/qemu/limits.js';
import type { EngineVmConfig } from '../../src/engines/engine.js';
import { ed25519PublicKeyLine, sshBlob } from '../helpers/ssh-keys.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-cloudinit-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const ED = ed25519PublicKeyLine('alice@laptop');
const ECDSA = 'ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHMOJQ8PCc1s+C29sbkv3PGOG9aGAwcnF+7KNGHVIJNpMKO8+PUgLXQeBq3Eus8qprsxQbtZ7+i2kDxwoHkbvWs= e';

function refused(fn: () => unknown, re: RegExp, code = 'INVALID_ARGUMENT'): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof HangarError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, re);
    return true;
  });
}

const env = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
const mtype = (img: string, file: string): string => execFileSync('mtype', ['-i', img, `::${file}`], { env }).toString('utf8');
const mfiles = (img: string): string[] =>
  execFileSync('mdir', ['-b', '-i', img, '::/'], { env }).toString('utf8').split('\n').filter(Boolean).map((l) => l.replace(/^::\//, '')).sort();
const mlabel = (img: string): string => execFileSync('mlabel', ['-s', '-i', img, '::'], { env }).toString('utf8').trim();

test('SSH keys: real key lines pass, normalised; wrong type, options, bad base64, mismatched blob, DSA, line breaks are refused', () => {
  assert.equal(validateSshKey(`  ${ED.replace(/ /g, '   ')}  `), ED);
  assert.equal(validateSshKey(ECDSA), ECDSA);
  const [type, data] = ED.split(' ') as [string, string];
  assert.equal(validateSshKey(`${type} ${data}`), `${type} ${data}`, 'the comment is optional');
  refused(() => validateSshKey('ssh-foo AAAA'), /unknown key type "ssh-foo"/);
  refused(() => validateSshKey(`command="rm -rf /" ${ED}`), /authorized_keys options are not accepted/);
  refused(() => validateSshKey(`${type} not*base64`), /not base64/);
  refused(() => validateSshKey(`${type} ${data.slice(0, 20)}`), /not an SSH public key blob|not base64/);
  refused(() => validateSshKey(`ssh-rsa ${data}`), /is a ssh-ed25519 key, but the line says ssh-rsa/);
  refused(() => validateSshKey(`ssh-dss ${sshBlob('ssh-dss', Buffer.alloc(20)).toString('base64')}`), /DSA keys .* not accepted/);
  refused(() => validateSshKey(`${ED}\n${ECDSA}`), /one line/);
  refused(() => validateSshKey(type), /no key data/);
  refused(() => validateSshKey(''), /empty/);
  refused(() => validateSshKey(`${ED} ${'x'.repeat(2000)}`), /comment is longer/);
  refused(() => validateSshKey(`ssh-ed25519 ${sshBlob('ssh-ed25519', Buffer.alloc(8000)).toString('base64')}`), /longer than 8192 bytes/);
  // The index names the culprit in a list; duplicates collapse.
  refused(() => validateSshKeys([ED, 'nope']), /^sshKeys\[1\]: unknown key type/);
  assert.deepEqual(validateSshKeys([ED, ECDSA, ED]), [ED, ECDSA]);
  refused(() => validateSshKeys(Array.from({ length: MAX_SSH_KEYS + 1 }, () => ED)), /at most 32 SSH keys/);
});

test('user-data: #cloud-config, #! scripts and MIME multipart pass; anything else, NUL, BOM, oversize are refused', () => {
  for (const ok of ['#cloud-config\npackages: [htop]\n', '#cloud-config\r\n', '#cloud-config', '#!/bin/sh\necho hi\n',
    'Content-Type: multipart/mixed; boundary="XX"\nMIME-Version: 1.0\n\n--XX\nContent-Type: text/cloud-config\n\n#cloud-config\n--XX--\n']) {
    assert.equal(validateUserData(ok), ok);
  }
  refused(() => validateUserData('packages: [htop]\n'), /must start with "#cloud-config", a "#!" script line, or MIME multipart .* starts with "packages: \[htop\]"/);
  refused(() => validateUserData('#cloud-configs\n'), /must start with/);
  refused(() => validateUserData('Subject: hello\n\nbody'), /must start with/);
  refused(() => validateUserData('#cloud-config\n\0'), /NUL byte/);
  refused(() => validateUserData('\ufeff#cloud-config\n'), /byte-order mark/);
  refused(() => validateUserData(''), /empty/);
  refused(() => validateUserData(`#cloud-config\n#${'x'.repeat(MAX_USER_DATA)}`), /at most 262144/);
});

test('network-config: version 1 or 2 at the top or under network:, else refused', () => {
  validateNetworkConfig('version: 2\nethernets:\n  eth0:\n    dhcp4: true\n');
  validateNetworkConfig('network:\n  version: 1\n  config: []\n');
  refused(() => validateNetworkConfig('ethernets: {}\n'), /version: 1" or "version: 2/);
  refused(() => validateNetworkConfig('version: 3\n'), /version: 1" or "version: 2/);
  refused(() => validateNetworkConfig(`version: 2\n#${'x'.repeat(64 * 1024)}`), /at most 65536/);
});

test('create request → VmSpec.cloudInit; none without cloud-init fields; bad input fails the whole request', () => {
  const ctx = { imageNames: ['debian-12', 'tiny'], engine: { name: 'qemu' as const, limits: QEMU_LIMITS } };
  assert.equal(buildVmSpec({ name: 'a', image: 'tiny' }, ctx).cloudInit, undefined);
  const spec = buildVmSpec({ name: 'a', image: 'debian-12', sshKeys: [ED], userData: '#cloud-config\n' }, ctx);
  assert.deepEqual(spec.cloudInit, { sshKeys: [ED], userData: '#cloud-config\n' });
  assert.deepEqual(cloudInitSpecFrom({ networkConfig: 'version: 2\n' }), { sshKeys: [], networkConfig: 'version: 2\n' });
  refused(() => buildVmSpec({ name: 'a', image: 'debian-12', sshKeys: ['ssh-ed25519 AAAA'] }, ctx), /sshKeys\[0\]/);
});

test('fit to the image: user-data for an image without cloud-init is UNSUPPORTED; keys alone are dropped', () => {
  const base = { image: 'tiny', engine: 'qemu' as const, cpus: 1, memoryBytes: 256 << 20, cmdline: '' };
  refused(() => fitCloudInitToImage({ ...base, cloudInit: { sshKeys: [], userData: '#!/bin/sh\n' } }, {}), /image "tiny" does not run cloud-init: userData cannot reach it/, 'UNSUPPORTED');
  refused(() => fitCloudInitToImage({ ...base, cloudInit: { sshKeys: [], networkConfig: 'version: 2\n' } }, { cloudInit: false }), /networkConfig/, 'UNSUPPORTED');
  assert.deepEqual(fitCloudInitToImage({ ...base, cloudInit: { sshKeys: [ED] } }, {}), base);
  const ci = { ...base, image: 'debian-12', cloudInit: { sshKeys: [ED], userData: '#!/bin/sh\n' } };
  assert.deepEqual(fitCloudInitToImage(ci, { cloudInit: true }), ci);
});

test('the seed: a FAT disk labelled CIDATA with meta-data and Hangar\'s default user-data, read back with mtools', async () => {
  const img = path.join(tmp, 'a.img');
  const id = '3f2a6c1e-8b7d-4e5f-9a0b-1c2d3e4f5a6b';
  await buildSeed(img, { instanceId: id, hostname: 'web1', cloudInit: { sshKeys: [ED, ECDSA] } });
  assert.equal((fs.statSync(img).mode & 0o777), 0o600);
  assert.match(mlabel(img), /Volume label is CIDATA/);
  assert.deepEqual(mfiles(img), ['meta-data', 'user-data']);
  const meta = mtype(img, 'meta-data');
  assert.equal(meta, renderMetaData({ instanceId: id, hostname: 'web1', cloudInit: { sshKeys: [ED, ECDSA] } }));
  assert.match(meta, new RegExp(`^instance-id: "${id}"$`, 'm'));
  assert.match(meta, /^local-hostname: "web1"$/m);
  assert.match(meta, /^public-keys:\n {2}- "ssh-ed25519 /m);
  const user = mtype(img, 'user-data');
  assert.equal(user, defaultUserData([ED, ECDSA]));
  assert.match(user, /^#cloud-config\n/);
  assert.ok(user.includes(`ssh_authorized_keys:\n  - ${JSON.stringify(ED)}\n  - ${JSON.stringify(ECDSA)}\n`), user);
  // Nothing of the build is left beside it.
  assert.deepEqual(fs.readdirSync(tmp), ['a.img']);
});

test('the seed: the user\'s own user-data replaces the default byte for byte; network-config is added; a rebuild replaces the old seed', async () => {
  const img = path.join(tmp, 'b.img');
  await buildSeed(img, { instanceId: 'i-1', hostname: 'old', cloudInit: { sshKeys: [] } });
  const userData = '#!/bin/sh\n# émoji ✓ and "quotes"\necho hello > /root/hi\n';
  const net = 'version: 2\nethernets:\n  id0:\n    match: {name: "e*"}\n    dhcp4: true\n';
  await buildSeed(img, { instanceId: 'i-1', hostname: 'new', cloudInit: { sshKeys: [ED], userData, networkConfig: net } });
  assert.deepEqual(mfiles(img), ['meta-data', 'network-config', 'user-data']);
  assert.equal(mtype(img, 'user-data'), userData);
  assert.equal(mtype(img, 'network-config'), net);
  assert.match(mtype(img, 'meta-data'), /^local-hostname: "new"$/m);
  assert.match(mtype(img, 'meta-data'), /public-keys:\n {2}- "ssh-ed25519 /);
});

test('the seed: the largest inputs accepted fit', async () => {
  const img = path.join(tmp, 'c.img');
  const big = `#cloud-config\n#${'y'.repeat(MAX_USER_DATA - 20)}\n`;
  const keys = Array.from({ length: MAX_SSH_KEYS }, (_, i) => ed25519PublicKeyLine(`k${i}-${'c'.repeat(900)}`));
  await buildSeed(img, { instanceId: 'i-2', hostname: 'big', cloudInit: { sshKeys: keys, userData: big, networkConfig: `version: 2\n#${'n'.repeat(60 * 1024)}\n` } });
  assert.equal(mtype(img, 'user-data'), big);
});

test('attachGuestSide: the seed as a read-only raw disk after the VM\'s disks for cloud-init images only; the agent socket where the engine has one', async () => {
  const runDir = path.join(tmp, 'vm1');
  fs.mkdirSync(runDir);
  const config = (): EngineVmConfig => ({
    id: 'abc', name: 'vm1', cpus: 1, memoryBytes: 256 << 20, boot: { kernel: '/k' }, accel: 'tcg', runDir, consoleLog: path.join(runDir, 'console.log'),
    disks: [{ id: 'root', path: '/r.qcow2', format: 'qcow2' }], nics: [],
  });
  const vm = { id: 'abc', name: 'vm1', spec: { cloudInit: { sshKeys: [ED] } } };
  const c1 = config();
  await attachGuestSide(c1, vm, { cloudInit: true }, { devices: ['virtio-blk', 'guest-agent'] });
  assert.deepEqual(c1.disks.map((d) => d.id), ['root', SEED_DISK_ID]);
  assert.deepEqual(c1.disks[1], { id: 'cidata', path: path.join(runDir, SEED_FILE), format: 'raw', readOnly: true, serial: 'cidata' });
  assert.deepEqual(c1.guestAgent, { socket: path.join(runDir, 'qga.sock') });
  assert.match(mtype(c1.disks[1]!.path, 'meta-data'), /local-hostname: "vm1"/);
  const c2 = config();
  await attachGuestSide(c2, vm, {}, { devices: ['virtio-blk'] });
  assert.deepEqual(c2.disks.map((d) => d.id), ['root']);
  assert.equal(c2.guestAgent, undefined);
  // A VM disk may not take the seed's name.
  const c3 = config();
  c3.disks.push({ id: 'cidata', path: '/x', format: 'raw' });
  await assert.rejects(attachGuestSide(c3, vm, { cloudInit: true }, { devices: [] }), /that name is the cloud-init seed's/);
});

test('the seed\'s disk name is reserved: a VM disk cannot be called cidata', () => {
  refused(() => planDisks('vm1', [{ name: 'cidata', size: '1G' }]), /"cidata" is the name of the cloud-init seed disk/);
});
