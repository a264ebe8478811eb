/**
 * Who a VM process runs as: a uid and gid of its own, taken from a range no
 * account uses, plus the shared system group `hangar-vm` as a supplementary
 * group (it only grants reading images and passing through the folders
 * above a VM's files).
 *
 * A uid of its own, rather than one shared `hangar-vm` user, means a VM
 * process that has been taken over by its guest still cannot signal, ptrace
 * or read the files of any other VM. The uids have no passwd entry (as with
 * Firecracker's jailer); they are claimed by creating
 * /run/hangar/vm-uids/<uid> exclusively, so two daemons on one host never
 * hand out the same one, and the claim goes with the next boot.
 */
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { HangarError } from '../../common/errors.js';

export const VM_GROUP = 'hangar-vm';
/**
 * Above the ranges systemd hands out (system, regular, DynamicUser 61184–65519,
 * containers 0x80000–0x6FFFFFFF) and below 2^31, where nothing else is assigned.
 */
export const DEFAULT_UID_BASE = 0x77000000;
export const DEFAULT_UID_COUNT = 65536;

export const CLAIM_DIR = '/run/hangar/vm-uids';

function groupGid(name: string): number | null {
  try {
    for (const line of fs.readFileSync('/etc/group', 'utf8').split('\n')) {
      const f = line.split(':');
      if (f[0] === name && f[2] !== undefined) return Number(f[2]);
    }
  } catch { /* no /etc/group */ }
  return null;
}

/** The gid of the `hangar-vm` system group, created (groupadd --system) on first use. */
export function vmGroupGid(): number {
  const have = groupGid(VM_GROUP);
  if (have !== null) return have;
  try {
    execFileSync('groupadd', ['--system', VM_GROUP], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    // Another daemon may have created it a moment ago.
    const again = groupGid(VM_GROUP);
    if (again !== null) return again;
    throw new HangarError('UNAVAILABLE', `cannot create the ${VM_GROUP} group: ${(e as Error).message}`);
  }
  const gid = groupGid(VM_GROUP);
  if (gid === null) throw new HangarError('UNAVAILABLE', `groupadd created no ${VM_GROUP} group`);
  return gid;
}

/** Ids that /etc/passwd or /etc/group name: never handed to a VM. */
function namedIds(): Set<number> {
  const ids = new Set<number>();
  for (const f of ['/etc/passwd', '/etc/group']) {
    try {
      for (const line of fs.readFileSync(f, 'utf8').split('\n')) {
        const n = Number(line.split(':')[2]);
        if (Number.isInteger(n)) ids.add(n);
      }
    } catch { /* absent */ }
  }
  return ids;
}

export interface UidRange {
  base: number;
  count: number;
}

/**
 * Claims a free uid for the VM whose files are in `runDir`, starting at a
 * place derived from `vmId` (so a VM usually gets the same uid each run).
 * A claim whose runDir no longer exists is stale (its daemon and data
 * directory are gone) and is taken over.
 */
export function claimUid(vmId: string, runDir: string, range: UidRange): number {
  fs.mkdirSync(CLAIM_DIR, { recursive: true, mode: 0o700 });
  const named = namedIds();
  const start = crypto.createHash('sha256').update(vmId).digest().readUInt32BE(0) % range.count;
  for (let i = 0; i < range.count; i++) {
    const uid = range.base + ((start + i) % range.count);
    if (named.has(uid)) continue;
    const claim = path.join(CLAIM_DIR, String(uid));
    try {
      fs.writeFileSync(claim, runDir, { flag: 'wx', mode: 0o600 });
      return uid;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new HangarError('UNAVAILABLE', `cannot claim a VM uid: ${(e as Error).message}`);
    }
    let owner = '';
    try { owner = fs.readFileSync(claim, 'utf8'); } catch { /* released meanwhile */ }
    if (owner === runDir || (owner !== '' && !fs.existsSync(owner))) {
      fs.writeFileSync(claim, runDir, { mode: 0o600 });
      return uid;
    }
  }
  throw new HangarError('RESOURCE_EXHAUSTED', `all ${range.count} VM uids from ${range.base} are in use`);
}

/** Gives a uid back, if `runDir` still holds its claim. */
export function releaseUid(uid: number, runDir: string): void {
  const claim = path.join(CLAIM_DIR, String(uid));
  try {
    if (fs.readFileSync(claim, 'utf8') === runDir) fs.unlinkSync(claim);
  } catch { /* not claimed */ }
}
