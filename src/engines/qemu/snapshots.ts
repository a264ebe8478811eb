/**
 * Internal snapshots of a running QEMU VM over QMP.
 *
 * `snapshot-save` / `snapshot-load` / `snapshot-delete` run as QEMU jobs
 * (QEMU 6.0+): QEMU keeps a concluded job, with its error, until it is
 * dismissed, so the outcome is read from `query-jobs` whoever started it —
 * a daemon restarted in the middle finds the job of its predecessor by id.
 * The machine state goes into one qcow2 disk (Hangar picks the root disk,
 * else the first writable qcow2 one); every listed disk gets the snapshot.
 * A disk-only snapshot of a running VM uses a QMP `transaction` of
 * `blockdev-snapshot-internal-sync` actions: all disks in one atomic step.
 *
 * A disk is found by the name cmdline.ts gives it, `disk-<id>`: the node
 * name of its format node (-blockdev), or the name of its BlockBackend
 * (-drive, whose nodes QEMU names itself, `#blockNNN`).
 */
import { HangarError } from '../../common/errors.js';
import type { DiskSnapshotInfo, LiveSnapshotControl, LiveSnapshotTarget, SnapshotJobOutcome, SnapshotJobProgress } from '../snapshot-control.js';

/** The part of QmpClient these functions use (tests pass a fake). */
export interface QmpExecutor {
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts?: { timeoutMs?: number }): Promise<T>;
}

interface QueryBlockEntry {
  device?: string;
  inserted?: {
    'node-name'?: string;
    ro?: boolean;
    drv?: string;
    image?: { snapshots?: Array<{ name?: string; 'vm-state-size'?: number }> };
  };
}

interface QueryJobEntry {
  id: string;
  type?: string;
  status: string;
  'current-progress'?: number;
  'total-progress'?: number;
  error?: string;
}

/** The name cmdline.ts gives a disk's format node (or BlockBackend). */
export const backendName = (diskId: string): string => `disk-${diskId}`;

/** How often a running job is looked at. */
const JOB_POLL_MS = 100;
/** Longest a snapshot job may take before the daemon stops waiting (it keeps running in QEMU). */
export const SNAPSHOT_JOB_TIMEOUT_MS = 30 * 60 * 1000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function queryBlock(qmp: QmpExecutor): Promise<QueryBlockEntry[]> {
  return (await qmp.execute<QueryBlockEntry[]>('query-block')) ?? [];
}

/** The query-block entry of each disk, by disk id; INVALID_STATE when the process lacks one. */
async function entries(qmp: QmpExecutor, disks: string[]): Promise<Map<string, QueryBlockEntry>> {
  const all = await queryBlock(qmp);
  const out = new Map<string, QueryBlockEntry>();
  for (const id of disks) {
    const name = backendName(id);
    const e = all.find((b) => b.inserted?.['node-name'] === name) ?? all.find((b) => b.device === name);
    if (!e?.inserted?.['node-name']) throw new HangarError('INVALID_STATE', `the VM process has no disk "${id}"`, { disk: id });
    out.set(id, e);
  }
  return out;
}

/** Node names of the given disks, in order. */
export async function nodeNames(qmp: QmpExecutor, disks: string[]): Promise<string[]> {
  const found = await entries(qmp, disks);
  return disks.map((id) => found.get(id)!.inserted!['node-name']!);
}

export async function listDiskSnapshots(qmp: QmpExecutor, disks: string[]): Promise<Map<string, DiskSnapshotInfo[]>> {
  const found = await entries(qmp, disks);
  const out = new Map<string, DiskSnapshotInfo[]>();
  for (const [id, b] of found) {
    const snaps = b.inserted?.image?.snapshots ?? [];
    out.set(id, snaps.map((x) => ({ name: String(x.name ?? ''), vmStateBytes: Number(x['vm-state-size'] ?? 0) })));
  }
  return out;
}

async function findJob(qmp: QmpExecutor, jobId: string): Promise<QueryJobEntry | undefined> {
  const jobs = (await qmp.execute<QueryJobEntry[]>('query-jobs')) ?? [];
  return jobs.find((j) => j.id === jobId);
}

/**
 * Polls a job until it has concluded, reporting progress; dismisses it and
 * returns its outcome. `found: false` when QEMU knows no such job.
 */
export async function finishJob(qmp: QmpExecutor, jobId: string, timeoutMs = SNAPSHOT_JOB_TIMEOUT_MS, onProgress?: SnapshotJobProgress): Promise<SnapshotJobOutcome> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = await findJob(qmp, jobId);
    if (!job) return { found: false };
    const total = job['total-progress'] ?? 0;
    if (onProgress && total > 0) onProgress((100 * (job['current-progress'] ?? 0)) / total);
    if (job.status === 'concluded') {
      await qmp.execute('job-dismiss', { id: jobId });
      return job.error !== undefined ? { found: true, error: job.error } : { found: true };
    }
    if (Date.now() > deadline) {
      throw new HangarError('TIMEOUT', `snapshot job ${jobId} did not finish within ${Math.round(timeoutMs / 1000)} s (it goes on inside QEMU)`, { job: jobId });
    }
    await sleep(JOB_POLL_MS);
  }
}

/** Starts a job with `command`, waits for it, throws ENGINE_FAILED with QEMU's words when it failed. */
async function runJob(qmp: QmpExecutor, what: string, command: string, args: Record<string, unknown>, onProgress?: SnapshotJobProgress): Promise<void> {
  const jobId = String(args['job-id']);
  await qmp.execute(command, args);
  const outcome = await finishJob(qmp, jobId, SNAPSHOT_JOB_TIMEOUT_MS, onProgress);
  if (!outcome.found) throw new HangarError('ENGINE_FAILED', `${what}: QEMU lost job ${jobId}`, { job: jobId });
  if (outcome.error !== undefined) throw new HangarError('ENGINE_FAILED', `${what}: ${outcome.error}`, { job: jobId });
}

async function targetNodes(qmp: QmpExecutor, t: LiveSnapshotTarget): Promise<{ vmstate: string; devices: string[] }> {
  if (!t.disks.includes(t.vmstateDisk)) throw new HangarError('INVALID_ARGUMENT', `the machine state disk "${t.vmstateDisk}" is not one of the snapshot's disks`);
  const devices = await nodeNames(qmp, t.disks);
  return { vmstate: devices[t.disks.indexOf(t.vmstateDisk)]!, devices };
}

export function qemuSnapshotControl(qmp: QmpExecutor): LiveSnapshotControl {
  return {
    async save(name, target, jobId, onProgress) {
      const { vmstate, devices } = await targetNodes(qmp, target);
      await runJob(qmp, `snapshot "${name}"`, 'snapshot-save', { 'job-id': jobId, tag: name, vmstate, devices }, onProgress);
    },
    async load(name, target, jobId, onProgress) {
      const { vmstate, devices } = await targetNodes(qmp, target);
      await runJob(qmp, `restore of snapshot "${name}"`, 'snapshot-load', { 'job-id': jobId, tag: name, vmstate, devices }, onProgress);
    },
    async delete(name, disks, jobId) {
      if (disks.length === 0) return;
      const devices = await nodeNames(qmp, disks);
      await runJob(qmp, `delete of snapshot "${name}"`, 'snapshot-delete', { 'job-id': jobId, tag: name, devices });
    },
    async saveDisksOnly(name, disks) {
      const nodes = await nodeNames(qmp, disks);
      const actions = nodes.map((node) => ({ type: 'blockdev-snapshot-internal-sync', data: { device: node, name } }));
      await qmp.execute('transaction', { actions }, { timeoutMs: 120_000 });
    },
    list: (disks) => listDiskSnapshots(qmp, disks),
    finishJob: (jobId, timeoutMs) => finishJob(qmp, jobId, timeoutMs),
  };
}
