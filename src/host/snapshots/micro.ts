/**
 * Snapshots of micro-engine VMs (hangar-vmm). Their disks are raw files, so
 * there are no internal snapshots to keep things in: a snapshot is a folder
 * of files instead, `<runDir>/snapshots/<name>/` (root's, mode 0700; the run
 * folder is sticky, so a confined hangar-vmm can neither enter nor replace
 * it; it goes when the VM is deleted):
 *
 *   vm.snap, vm.mem   hangar-vmm's state and memory files (PUT /snapshot/create),
 *                     for a snapshot with memory
 *   disk-<id>.raw     a copy of each writable disk, taken while the guest is paused
 *                     (a reflink where the file system can, else a full copy)
 *
 * Create: a memory snapshot pauses the VM, has hangar-vmm write its two files
 * (into the run folder, where a confined process may write; then moved
 * here), copies the disks and resumes a VM that was running; a disk snapshot
 * of a live VM pauses it for the copies only; a stopped VM's disks are just
 * copied. Restore: any process is ended, the copies are written back over
 * the disks (same files, so their ownership and grants stay), and a memory
 * snapshot starts a fresh hangar-vmm from its files (the guest runs on from
 * the snapshot); a disk snapshot restarts the VM if it was live.
 */
import fs from 'node:fs';
import path from 'node:path';
import { HangarError } from '../../common/errors.js';
import type { VmHandle } from '../../engines/engine.js';
import type { VmDiskFile } from './rules.js';
import type { SnapshotDiskRecord } from './store.js';

export const MICRO_STATE_FILE = 'vm.snap';
export const MICRO_MEMORY_FILE = 'vm.mem';

/** What the daemon needs of a live micro-engine VM (MicroVmHandle). */
interface MicroSnapshotHandle {
  snapshot(files: { snapshotPath: string; memFilePath: string }, opts?: { leavePaused?: boolean }): Promise<void>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  queryState(): Promise<'running' | 'paused'>;
}

export function isMicroHandle(h: VmHandle | null): h is VmHandle & MicroSnapshotHandle {
  return h !== null && h.engine === 'micro' && typeof (h as Partial<MicroSnapshotHandle>).snapshot === 'function';
}

/** The disks a micro snapshot covers: every writable one (all raw: the micro engine takes no other). */
export function microSnapshotDisks(disks: VmDiskFile[]): VmDiskFile[] {
  return disks.filter((d) => !d.readOnly);
}

export function microSnapshotDir(runDir: string, name: string): string {
  return path.join(runDir, 'snapshots', name);
}

export function microSnapshotFiles(dir: string): { snapshotPath: string; memFilePath: string } {
  return { snapshotPath: path.join(dir, MICRO_STATE_FILE), memFilePath: path.join(dir, MICRO_MEMORY_FILE) };
}

const diskCopy = (dir: string, disk: string): string => path.join(dir, `disk-${disk}.raw`);

/** Where snapshot `dir` keeps its copy of disk `disk`. */
export const microDiskCopy = diskCopy;

/** Copies a raw disk file; a reflink where the file system can. Writing over an existing file keeps its inode. */
function copyDisk(from: string, to: string): void {
  fs.copyFileSync(from, to, fs.constants.COPYFILE_FICLONE);
}

/**
 * Writes snapshot `dir` of a VM: with `handle` (its live process) paused for the copies, and with
 * memory when `memory`. Returns the bytes of machine state (the memory file's size; 0 without).
 * `scratch` is where hangar-vmm may write (the VM's run folder). On failure the folder is removed.
 */
export async function createMicroSnapshot(opts: {
  dir: string; scratch: string; handle: VmHandle | null; memory: boolean; disks: SnapshotDiskRecord[];
}): Promise<number> {
  const { dir, handle, memory, disks } = opts;
  if (handle !== null && !isMicroHandle(handle)) throw new HangarError('INTERNAL', 'not a micro-engine VM process');
  if (memory && !handle) throw new HangarError('INVALID_STATE', 'a memory snapshot needs the VM running or paused');
  if (!memory && disks.length === 0) throw new HangarError('UNSUPPORTED', 'the VM has no writable disk: only a memory snapshot (--memory) has anything to keep');
  fs.mkdirSync(path.dirname(dir), { recursive: true, mode: 0o700 });
  fs.mkdirSync(dir, { mode: 0o700 });
  let resume = false;
  try {
    if (handle) {
      resume = (await handle.queryState()) === 'running';
      if (memory) {
        // hangar-vmm writes where it may (a confined one: its run folder); the files then move here.
        const base = path.join(opts.scratch, `snapshot-${path.basename(dir)}`);
        const staged = { snapshotPath: `${base}.snap`, memFilePath: `${base}.mem` };
        for (const f of Object.values(staged)) fs.rmSync(f, { force: true });
        try {
          await handle.snapshot(staged, { leavePaused: true });
          const final = microSnapshotFiles(dir);
          fs.renameSync(staged.snapshotPath, final.snapshotPath);
          fs.renameSync(staged.memFilePath, final.memFilePath);
        } finally {
          for (const f of [staged.snapshotPath, staged.memFilePath]) fs.rmSync(f, { force: true });
        }
      } else if (resume) {
        await handle.pause();
      }
    }
    for (const d of disks) copyDisk(d.path, diskCopy(dir, d.name));
    return memory ? fs.statSync(microSnapshotFiles(dir).memFilePath).size : 0;
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  } finally {
    if (handle && resume) await handle.resume();
  }
}

/** Whether snapshot `dir` holds everything it should: each disk's copy, and the two files of a memory snapshot. */
export function microSnapshotComplete(dir: string, memory: boolean, disks: SnapshotDiskRecord[]): boolean {
  const files = [...disks.map((d) => diskCopy(dir, d.name)), ...(memory ? Object.values(microSnapshotFiles(dir)) : [])];
  return fs.existsSync(dir) && files.every((f) => fs.existsSync(f));
}

/** Writes the disks' copies back over the disks (the VM must have no process). */
export function restoreMicroDisks(dir: string, disks: SnapshotDiskRecord[]): void {
  for (const d of disks) {
    const copy = diskCopy(dir, d.name);
    if (!fs.existsSync(copy)) throw new HangarError('NOT_FOUND', `snapshot ${path.basename(dir)} has no copy of disk ${d.name}`);
    copyDisk(copy, d.path);
  }
}

/**
 * A copy's new disk (hangar copy): the raw file `from` into the new file `to` (which must not exist),
 * a reflink where the file system can, mode 0600; nothing is left at `to` on failure.
 */
export function copyMicroDiskTo(from: string, to: string): void {
  if (!fs.existsSync(from)) throw new HangarError('NOT_FOUND', `no disk to copy at ${from}`, { path: from });
  try {
    fs.copyFileSync(from, to, fs.constants.COPYFILE_EXCL | fs.constants.COPYFILE_FICLONE);
    fs.chmodSync(to, 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') fs.rmSync(to, { force: true });
    throw e;
  }
}

export function removeMicroSnapshot(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}
