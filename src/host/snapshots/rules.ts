/**
 * The rules of snapshots that need no disk to check: which disks a
 * snapshot covers, and when a restore would lose data nobody saved.
 */
import { HangarError } from '../../common/errors.js';
import type { VmRecord } from '../store.js';
import type { SnapshotRecord } from './store.js';

/** A VM disk as a file, as the disk source resolves it. */
export interface VmDiskFile {
  /** Device id ('root', 'data', ...). */
  name: string;
  /** "pool/volume". */
  volume: string;
  path: string;
  format: 'raw' | 'qcow2';
  readOnly: boolean;
}

/** The start of a failed start's lastExit reason (vms.ts START_FAILED): the guest never ran. */
const START_FAILED = 'start-failed';

/**
 * The disks a snapshot covers: every writable disk, which must all be
 * qcow2 (internal snapshots live inside qcow2 files; a raw disk left out
 * would not go back with the others). Read-only disks never change and are
 * left out. UNSUPPORTED when that leaves none or a writable disk is raw.
 */
export function snapshotDisks(vm: string, disks: VmDiskFile[]): VmDiskFile[] {
  const writable = disks.filter((d) => !d.readOnly);
  const raw = writable.filter((d) => d.format !== 'qcow2');
  if (raw.length > 0) {
    throw new HangarError('UNSUPPORTED', `VM "${vm}" has writable raw disks (${raw.map((d) => d.name).join(', ')}): snapshots need every writable disk in qcow2`, { vm, disks: raw.map((d) => d.name) });
  }
  if (writable.length === 0) {
    throw new HangarError('UNSUPPORTED', `VM "${vm}" has no writable qcow2 disk to hold a snapshot`, { vm });
  }
  return writable;
}

const LIVE_STATES = new Set(['running', 'paused', 'starting', 'stopping']);

/**
 * Why restoring now would lose data no snapshot holds, or null when it would not:
 *  - the VM is running or paused (or starting/stopping): its memory, and what it wrote to its disks, are newer than any snapshot;
 *  - the VM is stopped but ran after its newest snapshot was taken (its last exit is later): its disks changed since.
 * A VM that has not run since its newest snapshot loses nothing: that snapshot holds its disks as they are.
 * A start that failed does not count as having run.
 */
export function restoreRefusal(vm: Pick<VmRecord, 'name' | 'state' | 'lastExit'>, newest: Pick<SnapshotRecord, 'name' | 'createdAt'> | null): string | null {
  if (LIVE_STATES.has(vm.state)) {
    return `VM "${vm.name}" is ${vm.state}: restoring would lose its current memory and every disk change since its last snapshot`;
  }
  const exit = vm.lastExit;
  if (exit && !exit.reason.startsWith(START_FAILED) && (newest === null || exit.at > newest.createdAt)) {
    return newest
      ? `VM "${vm.name}" has run since its newest snapshot "${newest.name}" (it last stopped at ${exit.at}): restoring would lose the disk changes made since`
      : `VM "${vm.name}" has run and has no snapshot of its current disks`;
  }
  return null;
}
