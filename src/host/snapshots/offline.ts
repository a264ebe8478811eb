/**
 * Internal snapshots of qcow2 files that no VM process has open: the
 * disks of a stopped VM, handled with qemu-img through the storage area's
 * wrapper (src/host/storage/qemu-img.ts). qemu-img takes the same image
 * locks QEMU does, so it refuses (and changes nothing) while a VM process
 * holds the file.
 *
 * Each qemu-img step changes one file, and qcow2 updates its snapshot table
 * atomically (a crash halfway can only leak clusters, which `qemu-img check
 * -r leaks` gives back); steps over several files are made atomic by the
 * snapshot manager's intents.
 */
import fs from 'node:fs';
import { HangarError } from '../../common/errors.js';
import type { DiskSnapshotInfo } from '../../engines/snapshot-control.js';
import { QEMU_IMG_LONG_TIMEOUT_MS, qemuImgInfo, qemuImgSnapshot, qemuImgSnapshotList, runQemuImg } from '../storage/qemu-img.js';

/** What the snapshot manager does to files; tests may count or fail its calls. */
export interface OfflineDiskTool {
  /** Internal snapshots of a qcow2 file. `shared`: read even while a VM process has it open (read-only look). */
  listSnapshots(file: string, opts?: { shared?: boolean }): Promise<DiskSnapshotInfo[]>;
  createSnapshot(file: string, name: string): Promise<void>;
  /** Reverts the file's contents to the snapshot (the snapshot stays). */
  applySnapshot(file: string, name: string): Promise<void>;
  deleteSnapshot(file: string, name: string): Promise<void>;
  /**
   * Writes a new qcow2 file `dst` with the contents of `src` (or of its
   * snapshot `snapshot`), on the same backing file when `src` has one, and
   * without `src`'s internal snapshots. `dst` must not exist.
   */
  copy(src: string, dst: string, opts?: { snapshot?: string; shared?: boolean }): Promise<void>;
}

export const qemuImgTool: OfflineDiskTool = {
  async listSnapshots(file, opts = {}) {
    return (await qemuImgSnapshotList(file, { forceShare: opts.shared ?? false })).map((s) => ({ name: s.name, vmStateBytes: s.vmStateBytes }));
  },
  createSnapshot: (file, name) => qemuImgSnapshot(file, 'create', name),
  applySnapshot: (file, name) => qemuImgSnapshot(file, 'apply', name),
  deleteSnapshot: (file, name) => qemuImgSnapshot(file, 'delete', name),
  async copy(src, dst, opts = {}) {
    if (fs.existsSync(dst)) throw new HangarError('ALREADY_EXISTS', `${dst} already exists`, { path: dst });
    const shared = opts.shared ?? false;
    const info = await qemuImgInfo(src, { format: 'qcow2', forceShare: shared });
    const args = ['convert', '-f', 'qcow2', '-O', 'qcow2'];
    if (shared) args.push('-U');
    if (opts.snapshot !== undefined) args.push('-l', `snapshot.name=${opts.snapshot}`);
    // Only what differs from the shared backing file is copied: a clone of an image-based disk stays small.
    const backing = info.fullBackingFilename ?? info.backingFilename;
    if (backing) args.push('-B', backing, '-F', info.backingFormat ?? 'raw');
    args.push(src, dst);
    try {
      await runQemuImg(args, { timeoutMs: QEMU_IMG_LONG_TIMEOUT_MS, failCode: 'ENGINE_FAILED' });
      fs.chmodSync(dst, 0o600);
    } catch (e) {
      fs.rmSync(dst, { force: true });
      throw e;
    }
  },
};
