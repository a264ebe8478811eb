/**
 * What an engine offers for snapshots of a VM whose process runs: internal
 * snapshots kept inside the VM's own qcow2 disks, taken, loaded and deleted
 * through the VM process itself (which has those files open and locked, so
 * nothing else may write them meanwhile). The daemon's snapshot manager
 * (src/host/snapshots/) drives this; a stopped VM's disks are handled with
 * qemu-img instead.
 *
 * Disks are named by their Hangar device id (DiskAttachment.id). Long steps
 * run as engine jobs with ids the caller chooses, so a restarted daemon can
 * find a job its predecessor started and wait for its outcome.
 */

/** One internal snapshot as a disk lists it. */
export interface DiskSnapshotInfo {
  /** The snapshot's name (QEMU's "tag"). */
  name: string;
  /** Bytes of saved machine state (RAM, devices) in this disk; 0 for a disk-only snapshot. */
  vmStateBytes: number;
}

export interface LiveSnapshotTarget {
  /** The disks whose contents the snapshot covers (writable qcow2 disks). */
  disks: string[];
  /** The disk that holds the machine state (one of `disks`). */
  vmstateDisk: string;
}

/** Outcome of an engine job, as the engine still reports it. */
export interface SnapshotJobOutcome {
  /** False: the engine knows no job of that id (never started, or already dismissed). */
  found: boolean;
  /** Present when the job ended with an error. */
  error?: string;
}

/** A start from a memory snapshot: its name and the disks it covers (EngineVmConfig.loadSnapshot). */
export interface StartSnapshot extends LiveSnapshotTarget {
  name: string;
  /** A micro-engine snapshot is a pair of files instead (src/host/snapshots/micro.ts): hangar-vmm's state and memory. */
  files?: { snapshotPath: string; memFilePath: string };
}

/** The id of the load job of a start from a snapshot (a restarted daemon looks for it). */
export const startJobId = (snapshot: string): string => `hangar-start-${snapshot}`;

export type SnapshotJobProgress = (percent: number) => void;

export interface LiveSnapshotControl {
  /** Saves RAM, device state and every disk in `target` under `name` (the guest pauses meanwhile, then runs on). */
  save(name: string, target: LiveSnapshotTarget, jobId: string, onProgress?: SnapshotJobProgress): Promise<void>;
  /** Loads the snapshot: the disks go back to it and the guest continues from the saved state. */
  load(name: string, target: LiveSnapshotTarget, jobId: string, onProgress?: SnapshotJobProgress): Promise<void>;
  /** Deletes the snapshot from `disks`. */
  delete(name: string, disks: string[], jobId: string): Promise<void>;
  /** Disks only, all in one atomic step (crash-consistent, like pulling the plug). */
  saveDisksOnly(name: string, disks: string[]): Promise<void>;
  /** The internal snapshots of each disk, by disk id. */
  list(disks: string[]): Promise<Map<string, DiskSnapshotInfo[]>>;
  /** Waits for a job started earlier (perhaps by another daemon) to end and dismisses it. */
  finishJob(jobId: string, timeoutMs: number): Promise<SnapshotJobOutcome>;
}
