/**
 * VM snapshots: create, list, restore, delete, and copies of a VM (from its
 * current disks or from a snapshot). Design and rules: docs/snapshots.md.
 *
 * Snapshots are qcow2 internal snapshots inside the VM's own disks. A
 * stopped VM's disks are handled with qemu-img (offline.ts); a running VM's
 * through its process (QMP jobs, src/engines/qemu/snapshots.ts), which also
 * saves RAM and device state for a memory snapshot.
 *
 * Every operation runs under the VM's lock (ordered with start, stop and
 * the rest) and follows one pattern: an intent row is committed before any
 * disk is touched; the disks change; the result and the intent's removal
 * commit together. A crash anywhere leaves an intent, and reconcile() (at
 * daemon start) settles it against what the disks say: a create is kept
 * when every disk has the snapshot and undone otherwise, a delete or a
 * restore is finished, a copy is undone.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { HangarError, toHangarError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import type { VmHandle } from '../../engines/engine.js';
import { startJobId, type LiveSnapshotControl, type StartSnapshot } from '../../engines/snapshot-control.js';
import type { Operation, Vm, VmSpec } from '../api/schemas.js';
import type { EventBus } from '../events.js';
import type { OperationManager, ReportProgress } from '../operations.js';
import type { Store, VmRecord } from '../store.js';
import type { OfflineDiskTool } from './offline.js';
import { restoreRefusal, snapshotDisks, type VmDiskFile } from './rules.js';
import * as micro from './micro.js';
import { isSnapshotName, SNAPSHOT_NAME_RULE, type Snapshot, type SnapshotCreateRequest, type VmCopyRequest } from './schemas.js';
import { SnapshotStore, type IntentDetail, type IntentRecord, type SnapshotDiskRecord, type SnapshotRecord } from './store.js';

/** What the snapshot manager needs of the VM manager (src/host/vms.ts implements it). */
export interface VmAccess {
  /** Runs fn under the VM's lock, ordered with every other action on that VM. */
  withVmLock<T>(name: string, fn: () => Promise<T>): Promise<T>;
  /** The VM's process if this daemon holds one. */
  liveHandle(name: string): VmHandle | null;
  /** Under the lock: starts the VM; from an internal snapshot when `loadSnapshot` names one. */
  startLocked(name: string, progress?: ReportProgress, loadSnapshot?: StartSnapshot): Promise<void>;
  /** Under the lock: ends the VM's process at once. */
  killLocked(name: string): Promise<void>;
  /** Under the lock: resumes a paused VM. */
  resumeLocked(name: string): Promise<void>;
  toVm(rec: VmRecord): Vm;
  /** Throws when one more VM of this size may not be defined. */
  checkCreate(name: string, want: { cpus: number; memoryBytes: number }): void;
  /** The VM's run folder (micro-engine snapshots live in it: micro.ts). */
  runDir(name: string): string;
}

/** A new volume claimed for a copy's disk: its file is written, then commit() or release(). */
export interface CopyTarget {
  volume: string;
  path: string;
  /** Makes the volume ready and the new VM's (call inside the transaction that records the VM). */
  commit(): void;
  /** Drops the claim (the copy failed). */
  release(): void;
}

/** Where a VM's disks are, and where a copy's go (over the storage service: disks.ts). */
export interface DiskSource {
  /** The VM's disks, root first, as files. */
  disksOf(rec: VmRecord): VmDiskFile[];
  /**
   * Claims the new volume a copy of `disk` gets in the new VM `vm`; `from` says what it is copied from.
   * `format`: qcow2 (QEMU VMs: an overlay on the source's backing file) or raw (micro-engine VMs).
   */
  claimCopy(vm: string, disk: VmDiskFile, from: string, format?: 'qcow2' | 'raw'): CopyTarget;
  /** Records that the new VM `vm` uses the read-only `disk` too (inside the transaction that records the VM). */
  shareReadOnly(vm: string, disk: VmDiskFile): void;
  /** The copy has the source's ISO: a volume one is in use by the copy too (iso-media.ts). */
  shareIso?(vm: string, iso: string | undefined): void;
  /** The new VM's spec: the source's, with each copied disk on its new volume (disk name → volume). */
  copySpec(spec: VmSpec, volumes: Map<string, string>): VmSpec;
}

export interface SnapshotManagerDeps {
  store: Store;
  events: EventBus;
  operations: OperationManager;
  vms: VmAccess;
  disks: DiskSource;
  offline: OfflineDiskTool;
  log: Logger;
}

/** How long reconciliation waits for a snapshot job a crashed daemon left running in QEMU. */
const RECOVER_JOB_WAIT_MS = 5 * 60 * 1000;

const now = (): string => new Date().toISOString();
/** Micro-engine VMs keep snapshots as files (micro.ts), not inside qcow2 disks. */
const isMicro = (rec: VmRecord): boolean => rec.spec.engine === 'micro';
const jobId = (): string => `hangar-snap-${randomUUID().slice(0, 8)}`;

export class SnapshotManager {
  readonly snaps: SnapshotStore;
  /** Names of VMs a copy is making (not yet in the store). */
  private readonly copying = new Set<string>();

  constructor(private readonly d: SnapshotManagerDeps) {
    this.snaps = new SnapshotStore(d.store);
  }

  /**
   * Every step of a snapshot operation passes here once it is done: a debug
   * log line and the operation's progress. (The crash tests hook this method
   * from a test-only preload to kill the daemon at a named step.)
   */
  stepReached(step: string, progress?: ReportProgress): void {
    this.d.log.debug({ step }, 'snapshot step');
    progress?.({ stage: step });
  }

  // --- reading ---------------------------------------------------------------

  view(vm: string, s: SnapshotRecord): Snapshot {
    return {
      name: s.name, vm, createdAt: s.createdAt, memory: s.memory, vmState: s.vmState,
      disks: s.disks.map((x) => ({ name: x.name, volume: x.volume })), vmStateBytes: s.vmStateBytes,
    };
  }

  list(vm: string): Snapshot[] {
    const rec = this.d.store.requireVm(vm);
    return this.snaps.list(rec.id).map((s) => this.view(vm, s));
  }

  get(vm: string, name: string): Snapshot {
    const rec = this.d.store.requireVm(vm);
    return this.view(vm, this.snaps.require(vm, rec.id, name));
  }

  /** The first free name of the form snapN. */
  private nextName(vmId: string): string {
    const taken = new Set(this.snaps.list(vmId).map((s) => s.name));
    for (let i = 0; ; i++) if (!taken.has(`snap${i}`)) return `snap${i}`;
  }

  private liveOf(rec: VmRecord): { handle: VmHandle; control: LiveSnapshotControl } | null {
    if (rec.state !== 'running' && rec.state !== 'paused') return null;
    const handle = this.d.vms.liveHandle(rec.name);
    if (!handle) return null;
    if (!handle.snapshots) throw new HangarError('UNSUPPORTED', `engine "${rec.spec.engine}" cannot snapshot a running VM: stop it first`, { vm: rec.name, engine: rec.spec.engine });
    return { handle, control: handle.snapshots };
  }

  private diskRecords(rec: VmRecord): SnapshotDiskRecord[] {
    const all = this.d.disks.disksOf(rec);
    return (isMicro(rec) ? micro.microSnapshotDisks(all) : snapshotDisks(rec.name, all)).map((d) => ({ name: d.name, volume: d.volume, path: d.path }));
  }

  /** A micro-engine VM's snapshot folder (micro.ts). */
  private microDir(rec: VmRecord, name: string): string {
    return micro.microSnapshotDir(this.d.vms.runDir(rec.name), name);
  }

  // --- create ------------------------------------------------------------------

  private checkCreate(rec: VmRecord, memory: boolean): void {
    if (rec.state === 'starting' || rec.state === 'stopping') {
      throw new HangarError('INVALID_STATE', `VM "${rec.name}" is ${rec.state}: snapshot it once it has settled`, { vm: rec.name, state: rec.state });
    }
    if (memory && rec.state !== 'running' && rec.state !== 'paused') {
      throw new HangarError('INVALID_STATE', `VM "${rec.name}" is ${rec.state}: a memory snapshot needs a running or paused VM`, { vm: rec.name, state: rec.state });
    }
  }

  create(vm: string, req: SnapshotCreateRequest): Operation {
    const rec = this.d.store.requireVm(vm);
    const name = req.name ?? this.nextName(rec.id);
    if (!isSnapshotName(name)) throw new HangarError('INVALID_ARGUMENT', `snapshot name "${name}" is not valid: ${SNAPSHOT_NAME_RULE}`);
    const memory = req.memory ?? false;
    if (this.snaps.get(rec.id, name)) throw new HangarError('ALREADY_EXISTS', `VM "${vm}" already has a snapshot "${name}"`, { vm, snapshot: name });
    this.checkCreate(rec, memory);
    this.diskRecords(rec);
    return this.d.operations.run(`Snapshotting VM ${vm} as ${name}${memory ? ' (with memory)' : ''}`, [vm], (progress) =>
      this.d.vms.withVmLock(vm, () => this.doCreate(vm, name, memory, progress)));
  }

  private async doCreate(vm: string, name: string, memory: boolean, progress: ReportProgress): Promise<Snapshot> {
    const rec = this.d.store.requireVm(vm);
    this.checkCreate(rec, memory);
    if (this.snaps.get(rec.id, name)) throw new HangarError('ALREADY_EXISTS', `VM "${vm}" already has a snapshot "${name}"`, { vm, snapshot: name });
    const disks = this.diskRecords(rec);
    if (isMicro(rec)) return this.doCreateMicro(rec, name, memory, disks, progress);
    const live = this.liveOf(rec);
    if (memory && !live) throw new HangarError('INVALID_STATE', `VM "${vm}" has no running process: a memory snapshot needs one`, { vm });
    const detail: IntentDetail = {
      kind: 'create', vm, snapshot: name, memory, vmState: rec.state, disks, jobId: memory ? jobId() : null, createdAt: now(),
    };
    const intent = this.snaps.addIntent(rec.id, detail);
    this.stepReached('create:intent', progress);
    try {
      const ids = disks.map((x) => x.name);
      if (live && memory) {
        await live.control.save(name, { disks: ids, vmstateDisk: ids[0]! }, detail.jobId!, (pct) => progress({ stage: 'saving', percent: pct }));
      } else if (live) {
        await live.control.saveDisksOnly(name, ids);
      } else {
        for (const x of disks) {
          await this.d.offline.createSnapshot(x.path, name);
          this.stepReached(`create:disk:${x.name}`, progress);
        }
      }
      this.stepReached('create:saved', progress);
      const bytes = memory ? ((await live!.control.list([ids[0]!])).get(ids[0]!)?.find((s) => s.name === name)?.vmStateBytes ?? 0) : 0;
      const snap: SnapshotRecord = { vmId: rec.id, name, memory, vmState: rec.state, vmStateBytes: bytes, disks, createdAt: detail.createdAt };
      this.d.store.transaction(() => {
        this.snaps.insert(snap);
        this.snaps.removeIntent(intent.id);
      });
      this.d.log.info({ vm, snapshot: name, memory }, 'snapshot created');
      return this.view(vm, snap);
    } catch (e) {
      // Not a crash: the request failed. Whatever a disk already got is taken back.
      await this.undoCreate(rec, intent, detail as Extract<IntentDetail, { kind: 'create' }>, false).catch((u: unknown) =>
        this.d.log.error({ vm, snapshot: name, err: String(u) }, 'could not undo a failed snapshot; the next daemon start retries'));
      throw e;
    }
  }

  /** doCreate for a micro-engine VM: the snapshot is a folder of files (micro.ts). */
  private async doCreateMicro(rec: VmRecord, name: string, memory: boolean, disks: SnapshotDiskRecord[], progress: ReportProgress): Promise<Snapshot> {
    const vm = rec.name;
    const handle = rec.state === 'running' || rec.state === 'paused' ? this.d.vms.liveHandle(vm) : null;
    if (memory && !handle) throw new HangarError('INVALID_STATE', `VM "${vm}" has no running process: a memory snapshot needs one`, { vm });
    const detail: IntentDetail = { kind: 'create', vm, snapshot: name, memory, vmState: rec.state, disks, jobId: null, createdAt: now() };
    const intent = this.snaps.addIntent(rec.id, detail);
    this.stepReached('create:intent', progress);
    try {
      const bytes = await micro.createMicroSnapshot({ dir: this.microDir(rec, name), scratch: this.d.vms.runDir(vm), handle, memory, disks });
      this.stepReached('create:saved', progress);
      const snap: SnapshotRecord = { vmId: rec.id, name, memory, vmState: rec.state, vmStateBytes: bytes, disks, createdAt: detail.createdAt };
      this.d.store.transaction(() => {
        this.snaps.insert(snap);
        this.snaps.removeIntent(intent.id);
      });
      this.d.log.info({ vm, snapshot: name, memory, engine: 'micro' }, 'snapshot created');
      return this.view(vm, snap);
    } catch (e) {
      micro.removeMicroSnapshot(this.microDir(rec, name));
      this.snaps.removeIntent(intent.id);
      throw e;
    }
  }

  /** Which of `disks` hold snapshot `name`, and its machine state bytes on each. */
  private async presence(rec: VmRecord, disks: SnapshotDiskRecord[], name: string): Promise<Map<string, number | null>> {
    const out = new Map<string, number | null>();
    const live = this.liveOf(rec);
    if (live) {
      const lists = await live.control.list(disks.map((x) => x.name));
      for (const x of disks) out.set(x.name, lists.get(x.name)?.find((s) => s.name === name)?.vmStateBytes ?? null);
      return out;
    }
    for (const x of disks) {
      if (!fs.existsSync(x.path)) { out.set(x.name, null); continue; }
      const list = await this.d.offline.listSnapshots(x.path);
      out.set(x.name, list.find((s) => s.name === name)?.vmStateBytes ?? null);
    }
    return out;
  }

  /** Removes snapshot `name` from those of `disks` that hold it. */
  private async removeFromDisks(rec: VmRecord, disks: SnapshotDiskRecord[], name: string, progress?: ReportProgress, step = 'delete'): Promise<void> {
    if (isMicro(rec)) {
      micro.removeMicroSnapshot(this.microDir(rec, name));
      this.stepReached(`${step}:files`, progress);
      return;
    }
    const have = await this.presence(rec, disks, name);
    const holding = disks.filter((x) => have.get(x.name) != null);
    const live = this.liveOf(rec);
    if (live) {
      await live.control.delete(name, holding.map((x) => x.name), jobId());
      this.stepReached(`${step}:disks`, progress);
      return;
    }
    for (const x of holding) {
      await this.d.offline.deleteSnapshot(x.path, name);
      this.stepReached(`${step}:disk:${x.name}`, progress);
    }
  }

  /**
   * Settles a create that did not finish: kept when every disk holds the
   * snapshot (with machine state on the first, for a memory snapshot) and
   * `keepComplete`; otherwise taken back from every disk.
   */
  private async undoCreate(rec: VmRecord, intent: IntentRecord, c: Extract<IntentDetail, { kind: 'create' }>, keepComplete: boolean): Promise<'kept' | 'undone'> {
    if (isMicro(rec)) {
      const dir = this.microDir(rec, c.snapshot);
      if (keepComplete && micro.microSnapshotComplete(dir, c.memory, c.disks) && !this.snaps.get(rec.id, c.snapshot)) {
        const bytes = c.memory ? fs.statSync(micro.microSnapshotFiles(dir).memFilePath).size : 0;
        this.d.store.transaction(() => {
          this.snaps.insert({ vmId: rec.id, name: c.snapshot, memory: c.memory, vmState: c.vmState, vmStateBytes: bytes, disks: c.disks, createdAt: c.createdAt });
          this.snaps.removeIntent(intent.id);
        });
        return 'kept';
      }
      micro.removeMicroSnapshot(dir);
      this.snaps.removeIntent(intent.id);
      return 'undone';
    }
    const live = this.liveOf(rec);
    if (live && c.jobId) await live.control.finishJob(c.jobId, RECOVER_JOB_WAIT_MS);
    const have = await this.presence(rec, c.disks, c.snapshot);
    const complete = c.disks.every((x) => have.get(x.name) != null) && (!c.memory || (have.get(c.disks[0]!.name) ?? 0) > 0);
    if (keepComplete && complete && !this.snaps.get(rec.id, c.snapshot)) {
      const snap: SnapshotRecord = {
        vmId: rec.id, name: c.snapshot, memory: c.memory, vmState: c.vmState,
        vmStateBytes: c.memory ? (have.get(c.disks[0]!.name) ?? 0) : 0, disks: c.disks, createdAt: c.createdAt,
      };
      this.d.store.transaction(() => {
        this.snaps.insert(snap);
        this.snaps.removeIntent(intent.id);
      });
      return 'kept';
    }
    await this.removeFromDisks(rec, c.disks, c.snapshot, undefined, 'undo');
    this.snaps.removeIntent(intent.id);
    return 'undone';
  }

  // --- delete ------------------------------------------------------------------

  remove(vm: string, name: string): Operation {
    const rec = this.d.store.requireVm(vm);
    this.snaps.require(vm, rec.id, name);
    return this.d.operations.run(`Deleting snapshot ${name} of VM ${vm}`, [vm], (progress) =>
      this.d.vms.withVmLock(vm, async () => {
        const cur = this.d.store.requireVm(vm);
        if (cur.state === 'starting' || cur.state === 'stopping') throw new HangarError('INVALID_STATE', `VM "${vm}" is ${cur.state}`, { vm, state: cur.state });
        const snap = this.snaps.require(vm, cur.id, name);
        const intent = this.snaps.addIntent(cur.id, { kind: 'delete', vm, snapshot: name, disks: snap.disks, jobId: null });
        this.stepReached('delete:intent', progress);
        await this.finishDelete(cur, intent, snap.disks, name, progress);
        this.d.log.info({ vm, snapshot: name }, 'snapshot deleted');
        return { vm, name, deleted: true };
      }));
  }

  private async finishDelete(rec: VmRecord, intent: IntentRecord, disks: SnapshotDiskRecord[], name: string, progress?: ReportProgress): Promise<void> {
    await this.removeFromDisks(rec, disks, name, progress, 'delete');
    this.d.store.transaction(() => {
      this.snaps.remove(rec.id, name);
      this.snaps.removeIntent(intent.id);
    });
  }

  // --- restore -----------------------------------------------------------------

  private refuse(rec: VmRecord): void {
    const why = restoreRefusal(rec, this.snaps.newest(rec.id));
    if (why) throw new HangarError('INVALID_STATE', `${why}; restore with force (--force) to do it anyway`, { vm: rec.name, state: rec.state });
  }

  restore(vm: string, name: string, force: boolean): Operation {
    const rec = this.d.store.requireVm(vm);
    this.snaps.require(vm, rec.id, name);
    if (!force) this.refuse(rec);
    return this.d.operations.run(`Restoring VM ${vm} to snapshot ${name}`, [vm], (progress) =>
      this.d.vms.withVmLock(vm, () => this.doRestore(vm, name, force, progress)));
  }

  private async doRestore(vm: string, name: string, force: boolean, progress: ReportProgress): Promise<Vm> {
    const rec = this.d.store.requireVm(vm);
    const snap = this.snaps.require(vm, rec.id, name);
    if (!force) this.refuse(rec);
    if (rec.state === 'starting' || rec.state === 'stopping') throw new HangarError('INVALID_STATE', `VM "${vm}" is ${rec.state}`, { vm, state: rec.state });
    // The VM's writable disks must still be the ones the snapshot holds.
    const current = this.diskRecords(rec).map((x) => `${x.name}=${x.path}`).sort().join(',');
    const held = snap.disks.map((x) => `${x.name}=${x.path}`).sort().join(',');
    if (current !== held) throw new HangarError('INVALID_STATE', `VM "${vm}"'s disks changed since snapshot "${name}" was taken`, { vm, snapshot: name });
    if (isMicro(rec)) return this.doRestoreMicro(rec, snap, progress);
    const live = this.liveOf(rec);
    const wasPaused = rec.state === 'paused';
    // The load job's id: a restarted daemon waits for it (a stopped VM's start loads with a known id).
    const loadJob = snap.memory ? (live ? jobId() : startJobId(name)) : null;
    const detail: IntentDetail = { kind: 'restore', vm, snapshot: name, memory: snap.memory, disks: snap.disks, jobId: loadJob };
    const intent = this.snaps.addIntent(rec.id, detail);
    this.stepReached('restore:intent', progress);
    try {
      if (snap.memory && live) {
        const ids = snap.disks.map((x) => x.name);
        await live.control.load(name, { disks: ids, vmstateDisk: ids[0]! }, detail.jobId!, (pct) => progress({ stage: 'loading', percent: pct }));
        this.stepReached('restore:loaded', progress);
        // The snapshot was of a running guest: it runs on from there.
        if (wasPaused) await this.d.vms.resumeLocked(vm);
      } else if (snap.memory) {
        // QEMU starts paused, loads the snapshot (disks, RAM, devices as they were) and runs on.
        const ids = snap.disks.map((x) => x.name);
        await this.d.vms.startLocked(vm, progress, { name, disks: ids, vmstateDisk: ids[0]! });
        this.stepReached('restore:started', progress);
      } else {
        if (live) {
          await this.d.vms.killLocked(vm);
          this.stepReached('restore:stopped', progress);
        }
        await this.applyOffline(snap.disks, name, progress);
        if (live) {
          await this.d.vms.startLocked(vm, progress);
          this.stepReached('restore:started', progress);
        }
      }
    } catch (e) {
      const err = toHangarError(e);
      // A restore that failed halfway is finished on the disks, so they are never half old, half new.
      await this.settleRestore(this.d.store.requireVm(vm), detail.disks, name).catch((u: unknown) =>
        this.d.log.error({ vm, snapshot: name, err: String(u) }, 'could not finish a failed restore; the next daemon start retries'));
      this.snaps.removeIntent(intent.id);
      throw new HangarError(err.code, `${err.message} (the VM is left stopped with its disks at snapshot "${name}")`, { vm, snapshot: name });
    }
    this.snaps.removeIntent(intent.id);
    this.d.log.info({ vm, snapshot: name, memory: snap.memory }, 'snapshot restored');
    return this.d.vms.toVm(this.d.store.requireVm(vm));
  }

  /**
   * doRestore for a micro-engine VM: the process (if any) is ended, the disks' copies written back,
   * and a memory snapshot starts a fresh hangar-vmm from its files; a disk snapshot restarts a VM
   * that was live. A failure leaves the VM stopped (its disks at the snapshot when the copies were written).
   */
  private async doRestoreMicro(rec: VmRecord, snap: SnapshotRecord, progress: ReportProgress): Promise<Vm> {
    const vm = rec.name;
    const dir = this.microDir(rec, snap.name);
    if (!micro.microSnapshotComplete(dir, snap.memory, snap.disks)) throw new HangarError('NOT_FOUND', `the files of snapshot "${snap.name}" of VM "${vm}" are missing from ${dir}`, { vm, snapshot: snap.name });
    const wasLive = this.d.vms.liveHandle(vm) !== null;
    const intent = this.snaps.addIntent(rec.id, { kind: 'restore', vm, snapshot: snap.name, memory: snap.memory, disks: snap.disks, jobId: null });
    this.stepReached('restore:intent', progress);
    try {
      if (wasLive) {
        await this.d.vms.killLocked(vm);
        this.stepReached('restore:stopped', progress);
      }
      micro.restoreMicroDisks(dir, snap.disks);
      this.stepReached('restore:disks', progress);
      if (snap.memory) {
        await this.d.vms.startLocked(vm, progress, { name: snap.name, disks: snap.disks.map((x) => x.name), vmstateDisk: '', files: micro.microSnapshotFiles(dir) });
        this.stepReached('restore:started', progress);
      } else if (wasLive) {
        await this.d.vms.startLocked(vm, progress);
        this.stepReached('restore:started', progress);
      }
    } catch (e) {
      const err = toHangarError(e);
      if (this.d.vms.liveHandle(vm)) await this.d.vms.killLocked(vm).catch(() => undefined);
      this.snaps.removeIntent(intent.id);
      throw new HangarError(err.code, `${err.message} (the VM is left stopped)`, { vm, snapshot: snap.name });
    }
    this.snaps.removeIntent(intent.id);
    this.d.log.info({ vm, snapshot: snap.name, memory: snap.memory, engine: 'micro' }, 'snapshot restored');
    return this.d.vms.toVm(this.d.store.requireVm(vm));
  }

  private async applyOffline(disks: SnapshotDiskRecord[], name: string, progress?: ReportProgress): Promise<void> {
    for (const x of disks) {
      await this.d.offline.applySnapshot(x.path, name);
      this.stepReached(`restore:disk:${x.name}`, progress);
    }
  }

  /** After a failed or cut-short restore: any process is ended, and every disk is put at the snapshot. */
  private async settleRestore(rec: VmRecord, disks: SnapshotDiskRecord[], name: string): Promise<void> {
    if (this.d.vms.liveHandle(rec.name)) await this.d.vms.killLocked(rec.name);
    await this.applyOffline(disks, name);
  }

  // --- copy --------------------------------------------------------------------

  copy(source: string, req: VmCopyRequest): Operation {
    const src = this.d.store.requireVm(source);
    const target = req.name;
    if (this.d.store.getVm(target) || this.copying.has(target)) throw new HangarError('ALREADY_EXISTS', `a VM named "${target}" already exists`, { name: target });
    if (req.snapshot !== undefined) this.snaps.require(source, src.id, req.snapshot);
    else if (src.state !== 'stopped' && src.state !== 'crashed') {
      throw new HangarError('INVALID_STATE', `VM "${source}" is ${src.state}: copy a stopped VM, or copy one of its snapshots (SRC/SNAPSHOT)`, { vm: source, state: src.state });
    }
    this.d.vms.checkCreate(target, { cpus: src.spec.cpus, memoryBytes: src.spec.memoryBytes });
    this.copying.add(target);
    const from = req.snapshot !== undefined ? `${source}/${req.snapshot}` : source;
    return this.d.operations.run(`Copying VM ${from} to ${target}`, [source, target], async (progress) => {
      try {
        return await this.d.vms.withVmLock(source, () => this.doCopy(source, req.snapshot ?? null, target, progress));
      } finally {
        this.copying.delete(target);
      }
    });
  }

  private async doCopy(source: string, snapshot: string | null, target: string, progress: ReportProgress): Promise<Vm> {
    const src = this.d.store.requireVm(source);
    if (this.d.store.getVm(target)) throw new HangarError('ALREADY_EXISTS', `a VM named "${target}" already exists`, { name: target });
    const all = this.d.disks.disksOf(src);
    let writable = all.filter((x) => !x.readOnly);
    let shared = false;
    if (snapshot !== null) {
      const snap = this.snaps.require(source, src.id, snapshot);
      const held = new Set(snap.disks.map((x) => x.path));
      const missing = writable.filter((x) => !held.has(x.path));
      if (missing.length > 0) throw new HangarError('INVALID_STATE', `snapshot "${snapshot}" does not hold disk(s) ${missing.map((x) => x.name).join(', ')} of VM "${source}"`, { vm: source, snapshot });
      // A snapshot never changes while it exists: it can be read while the VM runs.
      shared = src.state !== 'stopped' && src.state !== 'crashed';
    } else {
      if (src.state !== 'stopped' && src.state !== 'crashed') throw new HangarError('INVALID_STATE', `VM "${source}" is ${src.state}: copy a stopped VM`, { vm: source, state: src.state });
      writable = isMicro(src) ? micro.microSnapshotDisks(all) : snapshotDisks(source, all);
    }
    const from = (x: VmDiskFile): string => `${x.volume}${snapshot !== null ? `@${snapshot}` : ''}`;
    const plan: Array<{ disk: VmDiskFile; to: CopyTarget }> = [];
    try {
      for (const x of writable) plan.push({ disk: x, to: this.d.disks.claimCopy(target, x, from(x), isMicro(src) ? 'raw' : 'qcow2') });
    } catch (e) {
      for (const p of plan) p.to.release();
      throw e;
    }
    const intent = this.snaps.addIntent(src.id, { kind: 'copy', vm: source, snapshot, target, files: plan.map((p) => p.to.path) });
    this.stepReached('copy:intent', progress);
    try {
      for (const p of plan) {
        if (isMicro(src)) {
          // Raw files: from the snapshot's own copy of the disk, or the stopped VM's disk itself.
          micro.copyMicroDiskTo(snapshot !== null ? micro.microDiskCopy(this.microDir(src, snapshot), p.disk.name) : p.disk.path, p.to.path);
        } else {
          await this.d.offline.copy(p.disk.path, p.to.path, { ...(snapshot !== null ? { snapshot } : {}), shared });
        }
        this.stepReached(`copy:disk:${p.disk.name}`, progress);
      }
      const volumes = new Map(plan.map((p) => [p.disk.name, p.to.volume]));
      const rec: VmRecord = {
        id: randomUUID(), name: target, spec: this.d.disks.copySpec(src.spec, volumes), state: 'stopped', pid: null, accel: null,
        startedAt: null, lastExit: null, createdAt: now(),
      };
      this.d.store.transaction(() => {
        this.d.store.insertVm(rec);
        for (const p of plan) p.to.commit();
        for (const x of all.filter((y) => y.readOnly)) this.d.disks.shareReadOnly(target, x);
        this.d.disks.shareIso?.(target, rec.spec.iso);
        this.d.events.emit(target, 'created', `copy of ${snapshot !== null ? `${source}/${snapshot}` : source}`);
        this.snaps.removeIntent(intent.id);
      });
      this.d.log.info({ source, snapshot, target }, 'VM copied');
      return this.d.vms.toVm(rec);
    } catch (e) {
      this.undoCopy(plan.map((p) => p.to.path));
      for (const p of plan) p.to.release();
      this.snaps.removeIntent(intent.id);
      throw e;
    }
  }

  private undoCopy(files: string[]): void {
    for (const f of files) fs.rmSync(f, { force: true });
  }

  // --- reconciliation ------------------------------------------------------------

  /**
   * Daemon start, after the VM manager has re-adopted running VMs: settles
   * every intent a crash left (rules in docs/snapshots.md, "Crashes").
   * Each runs under its VM's lock; one that fails is logged and kept for
   * the next start.
   */
  async reconcile(): Promise<void> {
    for (const intent of this.snaps.intents()) {
      const vm = intent.detail.vm;
      try {
        await this.d.vms.withVmLock(vm, () => this.settle(intent));
      } catch (e) {
        this.d.log.error({ vm, intent: intent.detail.kind, err: String(e) }, 'could not settle an interrupted snapshot operation');
      }
    }
  }

  private async settle(intent: IntentRecord): Promise<void> {
    const d = intent.detail;
    const rec = this.d.store.getVm(d.vm);
    const log = this.d.log.child({ vm: d.vm, intent: d.kind });
    if (d.kind === 'copy') {
      // The new VM was never recorded (that and the intent's removal are one transaction): its files go.
      this.undoCopy(d.files);
      this.snaps.removeIntent(intent.id);
      log.warn({ target: d.target }, 'an interrupted copy was undone');
      return;
    }
    if (!rec || rec.id !== intent.vmId) {
      this.snaps.removeIntent(intent.id);
      log.warn('an interrupted snapshot operation of a VM that is gone was dropped');
      return;
    }
    switch (d.kind) {
      case 'create': {
        const outcome = await this.undoCreate(rec, intent, d, true);
        log.warn({ snapshot: d.snapshot, outcome }, outcome === 'kept' ? 'an interrupted snapshot was complete on every disk: kept' : 'an interrupted snapshot was undone');
        return;
      }
      case 'delete':
        await this.finishDelete(rec, intent, d.disks, d.snapshot);
        log.warn({ snapshot: d.snapshot }, 'an interrupted snapshot delete was finished');
        return;
      case 'restore': {
        if (isMicro(rec)) {
          // The copies are written back again, so the disks are never half old, half new; the VM stays as it is.
          if (!this.d.vms.liveHandle(rec.name)) micro.restoreMicroDisks(this.microDir(rec, d.snapshot), d.disks);
          this.snaps.removeIntent(intent.id);
          log.warn({ snapshot: d.snapshot }, 'an interrupted restore was settled');
          return;
        }
        const live = this.liveOf(rec);
        if (live) {
          // The process runs: either it never was touched (old state), or it runs from the snapshot
          // (started from it, or its load job finished); a load job that failed leaves it half loaded.
          const outcome = d.jobId ? await live.control.finishJob(d.jobId, RECOVER_JOB_WAIT_MS) : { found: false };
          if (outcome.found && outcome.error !== undefined) await this.settleRestore(rec, d.disks, d.snapshot);
          else if (outcome.found && rec.state === 'paused') await this.d.vms.resumeLocked(rec.name);
        } else {
          await this.applyOffline(d.disks, d.snapshot);
        }
        this.snaps.removeIntent(intent.id);
        log.warn({ snapshot: d.snapshot, live: live !== null }, 'an interrupted restore was settled');
        return;
      }
    }
  }
}
