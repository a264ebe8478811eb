/**
 * Internal snapshots of qcow2 files that no VM process has open: the
 * disks of a stopped VM, handled with qemu-img. qemu-img takes the same
 * image locks QEMU does, so it refuses (and changes nothing) while a VM
 * process holds the file.
 *
 * Each qemu-img step changes one file, and qcow2 updates its snapshot table
 * atomically (a crash halfway can only leak clusters, which `qemu-img check
 * -r leaks` gives back); steps over several files are made atomic by the
 * snapshot manager's intents.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { HangarError } from '../../common/errors.js';
import type { DiskSnapshotInfo } from '../../engines/snapshot-control.js';

export interface BackingFile {
  path: string;
  format: string;
}

/** What the snapshot manager does to files; tests may count or fail its calls. */
export interface OfflineDiskTool {
  /** Internal snapshots of a qcow2 file. `shared`: read even while a VM process has it open (read-only look). */
  listSnapshots(file: string, opts?: { shared?: boolean }): Promise<DiskSnapshotInfo[]>;
  createSnapshot(file: string, name: string): Promise<void>;
  /** Reverts the file's contents to the snapshot (the snapshot stays). */
  applySnapshot(file: string, name: string): Promise<void>;
  deleteSnapshot(file: string, name: string): Promise<void>;
  backingOf(file: string, opts?: { shared?: boolean }): Promise<BackingFile | null>;
  /**
   * Writes a new qcow2 file `dst` with the contents of `src` (or of its
   * snapshot `snapshot`), on the same backing file when `src` has one, and
   * without `src`'s internal snapshots. `dst` must not exist.
   */
  copy(src: string, dst: string, opts?: { snapshot?: string; shared?: boolean }): Promise<void>;
}

const QEMU_IMG = 'qemu-img';

function run(args: string[], what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(QEMU_IMG, args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (!err) { resolve(stdout); return; }
      const why = (stderr || err.message).trim().split('\n').slice(-3).join(' ');
      const locked = /lock/i.test(why);
      reject(new HangarError(locked ? 'INVALID_STATE' : 'ENGINE_FAILED', `${what}: ${why}`, { args }));
    });
  });
}

interface QemuImgInfo {
  format?: string;
  snapshots?: Array<{ name?: string; 'vm-state-size'?: number }>;
  'full-backing-filename'?: string;
  'backing-filename'?: string;
  'backing-filename-format'?: string;
}

async function info(file: string, shared: boolean): Promise<QemuImgInfo> {
  const out = await run(['info', '--output=json', ...(shared ? ['-U'] : []), '-f', 'qcow2', file], `reading ${file}`);
  return JSON.parse(out) as QemuImgInfo;
}

export const qemuImgTool: OfflineDiskTool = {
  async listSnapshots(file, opts = {}) {
    const i = await info(file, opts.shared ?? false);
    return (i.snapshots ?? []).map((s) => ({ name: String(s.name ?? ''), vmStateBytes: Number(s['vm-state-size'] ?? 0) }));
  },
  async createSnapshot(file, name) {
    await run(['snapshot', '-c', name, file], `snapshot "${name}" of ${file}`);
  },
  async applySnapshot(file, name) {
    await run(['snapshot', '-a', name, file], `restoring snapshot "${name}" of ${file}`);
  },
  async deleteSnapshot(file, name) {
    await run(['snapshot', '-d', name, file], `deleting snapshot "${name}" of ${file}`);
  },
  async backingOf(file, opts = {}) {
    const i = await info(file, opts.shared ?? false);
    const p = i['full-backing-filename'] ?? i['backing-filename'];
    return p ? { path: p, format: i['backing-filename-format'] ?? 'raw' } : null;
  },
  async copy(src, dst, opts = {}) {
    if (fs.existsSync(dst)) throw new HangarError('ALREADY_EXISTS', `${dst} already exists`, { path: dst });
    const shared = opts.shared ?? false;
    const backing = await qemuImgTool.backingOf(src, { shared });
    const args = ['convert', '-f', 'qcow2', '-O', 'qcow2'];
    if (shared) args.push('-U');
    if (opts.snapshot !== undefined) args.push('-l', `snapshot.name=${opts.snapshot}`);
    // Only what differs from the shared backing file is copied: a clone of an image-based disk stays small.
    if (backing) args.push('-B', backing.path, '-F', backing.format);
    args.push(src, dst);
    try {
      await run(args, `copying ${src}${opts.snapshot ? ` at snapshot "${opts.snapshot}"` : ''}`);
      fs.chmodSync(dst, 0o600);
    } catch (e) {
      fs.rmSync(dst, { force: true });
      throw e;
    }
  },
};
