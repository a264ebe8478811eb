/**
 * Taking a snapshot of a paused machine: its KVM state (cpu-state.ts), the
 * state of every device model and what the machine is made of (manifest.ts)
 * go into the snapshot file (format.ts); guest memory goes into the memory
 * file (memory-file.ts). Both are written under temporary names, flushed to
 * disk, then renamed into place (memory first): a failure anywhere leaves
 * whatever was at those paths before, and a crash between the two renames
 * leaves a pair whose snapshot ids differ, which a load refuses.
 *
 * Everything runs synchronously on the device thread: no device model (a
 * NIC receiving from its TAP, say) can touch guest memory or its own state
 * between the moment its state is read and the moment memory is written.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { HangarError } from '../../common/errors.js';
import { VMM_VERSION } from '../controller.js';
import type { Machine } from '../machine.js';
import type { VirtioBlock } from '../virtio/blk.js';
import { cpuStateSupport, saveVcpu, saveVmState } from './cpu-state.js';
import { encodeSnapshotFile, type Sections } from './format.js';
import { MANIFEST_FORMAT, type SnapshotManifest } from './manifest.js';
import { tempPathFor, writeMemoryFile } from './memory-file.js';

export interface SnapshotPaths {
  snapshotPath: string;
  memFilePath: string;
}

export interface SnapshotCreateResult {
  snapshotBytes: number;
  /** Guest memory bytes written (zero blocks and untouched pages are holes in the file). */
  memDataBytes: number;
  memUntouchedBytes: number;
  /** Milliseconds: reading KVM and device state, writing memory, the whole thing. */
  stateMs: number;
  memoryMs: number;
  totalMs: number;
}

/** Refuses paths whose folder is missing, and the same path for both files. */
function checkPaths(p: SnapshotPaths): void {
  if (path.resolve(p.snapshotPath) === path.resolve(p.memFilePath)) throw new HangarError('INVALID_ARGUMENT', 'snapshot_path and mem_file_path must be different files');
  for (const f of [p.snapshotPath, p.memFilePath]) {
    const folder = fs.statSync(path.dirname(f), { throwIfNoEntry: false });
    if (!folder) throw new HangarError('NOT_FOUND', `folder of ${f} does not exist`);
    if (!folder.isDirectory()) throw new HangarError('INVALID_ARGUMENT', `${path.dirname(f)} is not a folder`);
    if (fs.statSync(f, { throwIfNoEntry: false })?.isDirectory()) throw new HangarError('INVALID_ARGUMENT', `${f} is a folder`);
  }
}

/** The manifest and the KVM sections of `m`; call only while every vCPU is parked. */
function captureState(m: Machine, id: Buffer): Sections {
  const vm = m.vm;
  const support = cpuStateSupport(vm);
  const state: Sections = new Map();
  const vcpus = m.vcpus.vcpuList();
  vcpus.forEach((v, i) => saveVcpu(vm.kvm, v, i, support, state));
  saveVmState(vm, support, state);
  const legacy = m.legacyDevices();
  const placed = m.devices.virtioDevices();
  const cfg = m.cfg;
  const manifest: SnapshotManifest = {
    format: MANIFEST_FORMAT,
    vmm_version: VMM_VERSION,
    created_at: new Date().toISOString(),
    snapshot_id: id.toString('hex'),
    machine: {
      vcpus: cfg.vcpus, mem_bytes: cfg.memBytes, conservative_cpuid: cfg.conservativeCpuid ?? true, cmdline: m.kernel.cmdline,
      kernel_kind: m.kernel.kind, kernel_entry: m.kernel.entry, aps_at_entry: m.kernel.apsAtEntry, tsc_khz: vcpus[0]?.tscKhz() ?? 0,
    },
    drives: (cfg.drives ?? []).map((d) => {
      const blk = placed.find((p) => p.kind === 'blk' && p.id === d.drive_id)?.device.device as VirtioBlock | undefined;
      return { ...d, capacity_sectors: Number(blk?.capacitySectors ?? 0n) };
    }),
    nets: (cfg.nets ?? []).map((n) => ({ iface_id: n.iface_id, host_dev_name: n.host_dev_name, guest_mac: placed.find((p) => p.kind === 'net' && p.id === n.iface_id)?.mac ?? n.guest_mac ?? '' })),
    rng: cfg.rng ?? false,
    devices: {
      serial: legacy.serial.saveState(),
      i8042: legacy.i8042.saveState(),
      rtc: legacy.rtc.saveState(),
      virtio: placed.map((p) => ({ kind: p.kind, id: p.id, state: p.device.snapshot() })),
    },
  };
  // The manifest first: a reader finds what the machine is before its state.
  return new Map([['manifest', Buffer.from(JSON.stringify(manifest))], ...state]);
}

/** Writes a snapshot of the paused machine `m` to the two files. */
export function createSnapshot(m: Machine, paths: SnapshotPaths): SnapshotCreateResult {
  if (m.state !== 'Paused') throw new HangarError('INVALID_STATE', `snapshots are taken of a paused VM; this one is ${m.state}`);
  checkPaths(paths);
  const t0 = performance.now();
  const id = randomBytes(16);
  const file = encodeSnapshotFile(captureState(m, id));
  const t1 = performance.now();
  const memTmp = tempPathFor(paths.memFilePath);
  const snapTmp = tempPathFor(paths.snapshotPath);
  try {
    const mem = writeMemoryFile(m.mem, memTmp, id);
    const t2 = performance.now();
    const fd = fs.openSync(snapTmp, 'wx', 0o600);
    try {
      fs.writeSync(fd, file);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(memTmp, paths.memFilePath);
    fs.renameSync(snapTmp, paths.snapshotPath);
    const t3 = performance.now();
    return { snapshotBytes: file.length, memDataBytes: mem.dataBytes, memUntouchedBytes: mem.untouchedBytes, stateMs: t1 - t0, memoryMs: t2 - t1, totalMs: t3 - t0 };
  } catch (e) {
    for (const f of [memTmp, snapTmp]) { try { fs.unlinkSync(f); } catch { /* not there */ } }
    if (e instanceof HangarError) throw e;
    const err = e as NodeJS.ErrnoException;
    // The client's paths, the host's disk: never a 500 for what the host refused.
    const code = ['ENOSPC', 'EDQUOT', 'EFBIG'].includes(err.code ?? '') ? 'RESOURCE_EXHAUSTED'
      : ['EACCES', 'EPERM', 'EROFS', 'EISDIR', 'ENOTDIR', 'ENAMETOOLONG', 'ENOENT'].includes(err.code ?? '') ? 'INVALID_ARGUMENT' : 'UNAVAILABLE';
    throw new HangarError(code, `writing the snapshot failed: ${err.message}`);
  }
}
