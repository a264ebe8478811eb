/**
 * What a confined VM process may touch on the host, prepared by the (root)
 * daemon before the process starts:
 *
 * - the folders above its files: search (x) permission, through the group
 *   `hangar-vm` where others have none (a root-group folder such as a 0700
 *   data directory becomes root:hangar-vm 0710 — passing through, not listing);
 * - read-only files (kernel, initrd, read-only disks): readable, through the
 *   group `hangar-vm` where others cannot read them (0600 → root:hangar-vm 0640);
 * - its own writable files (disks, console log): owned by the VM's uid for
 *   the run and given back to their previous owner afterwards;
 * - its runDir: root:<vm gid> 01770, so the VM creates its sockets, pid and
 *   log files there but cannot rename or remove the daemon's files (sticky).
 */
import fs from 'node:fs';
import path from 'node:path';
import { HangarError } from '../../common/errors.js';

/** Who may pass where: the shared group, the VM's own gid, and the trees the daemon may re-permission. */
export interface AccessContext {
  groupGid: number;
  vmGid: number;
  /**
   * Folders (with everything below them) whose group and search bit the
   * daemon may change: its data directory and image directory. Folders
   * elsewhere (say /root) are never touched: a VM file below one others
   * cannot pass through is an error that names it.
   */
  trees: string[];
}

const inside = (dir: string, tree: string): boolean => {
  const rel = path.relative(path.resolve(tree), dir);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
};

/** A file whose owner was changed for a run, to be put back afterwards. */
export interface OwnerRecord {
  path: string;
  uid: number;
  gid: number;
}

function statOrThrow(p: string): fs.Stats {
  try {
    return fs.statSync(p);
  } catch (e) {
    throw new HangarError('ENGINE_FAILED', `${p}: ${(e as Error).message}`);
  }
}

/**
 * Makes every folder above `p` searchable by members of the shared group. A
 * folder of the VM's own gid (its runDir) counts as passable already.
 */
export function grantTraverse(p: string, ctx: AccessContext): void {
  const { groupGid, vmGid } = ctx;
  const dirs: string[] = [];
  for (let d = path.dirname(path.resolve(p)); ; d = path.dirname(d)) {
    dirs.push(d);
    if (d === path.dirname(d)) break;
  }
  for (const d of dirs.reverse()) {
    const st = statOrThrow(d);
    if (st.mode & 0o001) continue;
    if ((st.gid === groupGid || st.gid === vmGid) && st.mode & 0o010) continue;
    if ((st.gid !== 0 && st.gid !== groupGid) || !ctx.trees.some((t) => inside(d, t))) {
      throw new HangarError('UNAVAILABLE', `VM processes cannot pass through ${d} (group ${st.gid}, mode ${(st.mode & 0o7777).toString(8)}): give others or group ${groupGid} search permission`);
    }
    fs.chownSync(d, st.uid, groupGid);
    fs.chmodSync(d, (st.mode & 0o7777) | 0o010);
  }
}

/** Makes `file` readable by members of the shared group (and its folders searchable). */
export function grantRead(file: string, ctx: AccessContext): void {
  const { groupGid } = ctx;
  // A file that is not there is the VM binary's to report, in its own words (engines differ).
  if (!fs.existsSync(file)) return;
  grantTraverse(file, ctx);
  const st = statOrThrow(file);
  if (st.mode & 0o004) return;
  if (st.gid === groupGid && st.mode & 0o040) return;
  if ((st.gid !== 0 && st.gid !== groupGid) || !ctx.trees.some((t) => inside(path.dirname(path.resolve(file)), t))) {
    throw new HangarError('UNAVAILABLE', `VM processes cannot read ${file} (group ${st.gid}, mode ${(st.mode & 0o7777).toString(8)}): make it readable by group ${groupGid}`);
  }
  fs.chownSync(file, st.uid, groupGid);
  fs.chmodSync(file, (st.mode & 0o7777) | 0o040);
}

/** Hands `file` to uid:gid for the run; returns who owned it before, or null if it does not exist. */
export function lend(file: string, uid: number, ctx: AccessContext): OwnerRecord | null {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch {
    return null;
  }
  if (!st.isFile()) throw new HangarError('INVALID_ARGUMENT', `${file} is not a regular file`);
  grantTraverse(file, ctx);
  fs.chownSync(file, uid, ctx.vmGid);
  return { path: file, uid: st.uid, gid: st.gid };
}

/** Puts owners back; files that are gone are skipped. */
export function giveBack(records: OwnerRecord[]): void {
  for (const r of records) {
    try { fs.chownSync(r.path, r.uid, r.gid); } catch { /* removed meanwhile */ }
  }
}

/** runDir becomes root:gid 01770 (the daemon's files stay the daemon's: sticky). */
export function prepareRunDir(runDir: string, ctx: AccessContext): void {
  fs.mkdirSync(runDir, { recursive: true, mode: 0o700 });
  grantTraverse(runDir, ctx);
  fs.chownSync(runDir, 0, ctx.vmGid);
  fs.chmodSync(runDir, 0o1770);
}

/** After the run: root-only again. */
export function closeRunDir(runDir: string): void {
  try {
    fs.chownSync(runDir, 0, 0);
    fs.chmodSync(runDir, 0o700);
  } catch { /* removed meanwhile */ }
}
