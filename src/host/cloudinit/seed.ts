/**
 * Builds a VM's cloud-init NoCloud seed: a small FAT disk image labelled
 * CIDATA holding meta-data, user-data and (when given) network-config.
 * cloud-init finds it by its label (it accepts "cidata" and "CIDATA"; FAT
 * labels are upper case by convention, so mkfs.vfat gets no warning).
 *
 * No loop device and no mount: mkfs.vfat writes the file system into a
 * plain file and mtools' mcopy copies the files into it, so building a seed
 * needs no privileges and leaves nothing attached to the host. The image is
 * built beside its final name and renamed into place, so a failure halfway
 * leaves the previous seed (or none) untouched.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { HangarError } from '../../common/errors.js';
import { renderMetaData, renderUserData, type SeedContent } from './config.js';

export const SEED_LABEL = 'CIDATA';
/** The seed's name inside the VM's folder. */
export const SEED_FILE = 'cidata.img';

const TOOL_TIMEOUT_MS = 20_000;

/** Where a tool lives: sbin folders are not on every PATH (mkfs.vfat is in /usr/sbin). */
function tool(name: string, pkg: string): string {
  for (const dir of ['/usr/sbin', '/sbin', '/usr/bin', '/bin']) {
    const p = path.join(dir, name);
    if (fs.existsSync(p)) return p;
  }
  throw new HangarError('UNAVAILABLE', `${name} (Debian package ${pkg}) is not installed: Hangar needs it to build cloud-init seeds`);
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    // MTOOLS_SKIP_CHECK: our image has no disk geometry worth checking.
    execFile(cmd, args, { timeout: TOOL_TIMEOUT_MS, env: { ...process.env, MTOOLS_SKIP_CHECK: '1', LC_ALL: 'C' } }, (err, _stdout, stderr) => {
      if (!err) { resolve(); return; }
      const why = String(stderr).trim().split('\n').slice(-3).join(' ') || err.message;
      reject(new HangarError('ENGINE_FAILED', `building the cloud-init seed: ${path.basename(cmd)} failed: ${why}`));
    });
  });
}

/** The files a seed holds, by name, as they will be written. */
export function seedFiles(c: SeedContent): Record<string, string> {
  const files: Record<string, string> = { 'meta-data': renderMetaData(c), 'user-data': renderUserData(c) };
  if (c.cloudInit.networkConfig !== undefined) files['network-config'] = c.cloudInit.networkConfig;
  return files;
}

/** Size of the FAT image: the files with room to spare, at least 1 MiB (FAT12 handles up to 32 MiB). */
function imageKiB(files: Record<string, string>): number {
  const bytes = Object.values(files).reduce((n, s) => n + Buffer.byteLength(s), 0);
  return 1024 + Math.ceil((bytes * 2) / 1024);
}

/**
 * Writes the seed for `c` to `dest` (replacing an earlier one) and returns
 * `dest`. The file is 0600: the VM sandbox grants the VM process read access.
 */
export async function buildSeed(dest: string, c: SeedContent): Promise<string> {
  const mkfs = tool('mkfs.vfat', 'dosfstools');
  const mcopy = tool('mcopy', 'mtools');
  const dir = path.dirname(dest);
  const work = fs.mkdtempSync(path.join(dir, '.cidata-'));
  const img = path.join(work, 'seed.img');
  try {
    const files = seedFiles(c);
    for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(work, name), text, { mode: 0o600 });
    // -C: create the file; the volume id is derived from the instance id, so a VM's seed is the same at every start.
    const volid = `${c.instanceId.replace(/[^0-9a-f]/gi, '')}00000000`.slice(0, 8);
    await run(mkfs, ['-C', '-n', SEED_LABEL, '-i', volid, img, String(imageKiB(files))]);
    fs.chmodSync(img, 0o600);
    await run(mcopy, ['-i', img, ...Object.keys(files).map((n) => path.join(work, n)), '::/']);
    fs.renameSync(img, dest);
    return dest;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
