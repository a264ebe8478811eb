/**
 * Rebuilding a machine from a snapshot in a fresh hangar-vmm: everything in
 * the snapshot file is checked first (format.ts, manifest.ts,
 * checkStateSections) against this host and the limits of the machine it
 * describes; only then is the KVM VM made, guest memory mapped privately
 * from the memory file (nothing read up front), the devices built as the
 * manifest says (same slots, same disks, the same MAC), the vCPUs created
 * and put in their saved state, the device models given theirs, and last
 * the irqchip, PIT and kvmclock (after the devices have driven their
 * interrupt lines, so KVM's own record of line levels matches the devices).
 * A failure anywhere releases what was made and says what was refused.
 */
import fs from 'node:fs';
import { HangarError, toHangarError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import { Kvm, type Vcpu, type Vm } from '../../kvm/kvm.js';
import type { LoadedKernel } from '../boot/loader.js';
import { checkLimits, createDevices, createVm, releaseParts } from '../builder.js';
import type { DeviceManager } from '../device-manager.js';
import { Machine, type MachineConfig } from '../machine.js';
import type { GuestRam } from '../memory.js';
import type { VirtioBlock } from '../virtio/blk.js';
import { stateError } from './check.js';
import { checkStateSections, cpuStateSupport, restoreVcpu, restoreVmState } from './cpu-state.js';
import { decodeSnapshotFile, MAX_SNAPSHOT_FILE, type Sections } from './format.js';
import { parseManifest, type SnapshotManifest } from './manifest.js';
import { mapMemoryFile } from './memory-file.js';
import type { SnapshotPaths } from './create.js';

/** Reads and checks a snapshot file: its sections and manifest. Builds nothing. */
export function readSnapshotFile(p: string): { sections: Sections; manifest: SnapshotManifest } {
  let fd: number;
  try {
    fd = fs.openSync(p, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new HangarError(code === 'ENOENT' ? 'NOT_FOUND' : 'INVALID_ARGUMENT', `snapshot file ${p}: ${code ?? (e as Error).message}`);
  }
  let file: Buffer;
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new HangarError('INVALID_ARGUMENT', `snapshot file ${p} is not a regular file`);
    if (st.size > MAX_SNAPSHOT_FILE) throw new HangarError('INVALID_ARGUMENT', `snapshot file ${p} is ${st.size} bytes (at most ${MAX_SNAPSHOT_FILE})`);
    file = Buffer.alloc(st.size);
    let got = 0;
    while (got < st.size) {
      const n = fs.readSync(fd, file, got, st.size - got, got);
      if (n === 0) break;
      got += n;
    }
    file = file.subarray(0, got);
  } finally {
    fs.closeSync(fd);
  }
  const sections = decodeSnapshotFile(file);
  const raw = sections.get('manifest');
  if (!raw) throw stateError('file', 'section "manifest" is missing');
  return { sections, manifest: parseManifest(raw) };
}

/** What the loader would have said about the kernel, from the manifest (vmInfo shows it). */
function kernelOf(m: SnapshotManifest): LoadedKernel {
  return { kind: m.machine.kernel_kind, entry: m.machine.kernel_entry, start: 0, end: 0, apsAtEntry: m.machine.aps_at_entry, cmdline: m.machine.cmdline, e820: [] };
}

/** The machine configuration the snapshot describes. */
export function configOf(m: SnapshotManifest): MachineConfig {
  return {
    vcpus: m.machine.vcpus, memBytes: m.machine.mem_bytes, kernel: '', cmdline: m.machine.cmdline,
    drives: m.drives.map(({ capacity_sectors: _cap, ...d }) => d),
    nets: m.nets.map((n) => ({ iface_id: n.iface_id, host_dev_name: n.host_dev_name, guest_mac: n.guest_mac })),
    rng: m.rng, conservativeCpuid: m.machine.conservative_cpuid,
  };
}

export interface RestoredMachine {
  machine: Machine;
  manifest: SnapshotManifest;
}

/** Builds a machine in the state of the snapshot at `paths`; nothing runs yet (start it paused or running). */
export async function restoreMachine(paths: SnapshotPaths, log: Logger, onConsoleOutput: (b: Uint8Array) => void): Promise<RestoredMachine> {
  const { sections, manifest } = readSnapshotFile(paths.snapshotPath);
  const cfg = configOf(manifest);
  checkLimits(cfg);
  const kvm = Kvm.open();
  let vm: Vm | undefined;
  let mem: GuestRam | undefined;
  let devices: DeviceManager | undefined;
  const vcpus: Vcpu[] = [];
  try {
    vm = createVm(kvm, cfg.vcpus);
    const support = cpuStateSupport(vm);
    checkStateSections(sections, cfg.vcpus, support, new Set(kvm.msrIndexList()));
    const tscKhz = manifest.machine.tsc_khz;
    mem = mapMemoryFile(paths.memFilePath, cfg.memBytes, Buffer.from(manifest.snapshot_id, 'hex'));
    vm.setUserMemoryRegion(0, 0, cfg.memBytes, mem.hostAddr);
    let machine: Machine | undefined;
    const made = createDevices(vm, mem, cfg, log, onConsoleOutput, () => machine);
    devices = made.devices;
    const legacy = made.legacy;
    devices.takeCmdline();
    const placed = devices.virtioDevices();
    for (const d of manifest.drives) {
      const blk = placed.find((p) => p.kind === 'blk' && p.id === d.drive_id)?.device.device as VirtioBlock | undefined;
      if (blk && blk.capacitySectors !== BigInt(d.capacity_sectors)) {
        throw new HangarError('INVALID_ARGUMENT', `drive ${d.drive_id}: ${d.path_on_host} now holds ${blk.capacitySectors} sectors, the guest knows ${d.capacity_sectors}`);
      }
    }
    for (let i = 0; i < cfg.vcpus; i++) {
      const v = vm.createVcpu(i);
      vcpus.push(v);
      restoreVcpu(v, i, sections);
    }
    const hereKhz = vcpus[0]!.tscKhz();
    if (tscKhz > 0 && hereKhz > 0 && Math.abs(hereKhz - tscKhz) > tscKhz / 1000) log.warn({ saved: tscKhz, here: hereKhz }, 'snapshot: TSC rate differs from the saved one; guest time may run at another speed');
    legacy.serial.restoreState(manifest.devices.serial);
    legacy.i8042.restoreState(manifest.devices.i8042);
    legacy.rtc.restoreState(manifest.devices.rtc);
    manifest.devices.virtio.forEach((x, i) => placed[i]!.device.restore(x.state));
    restoreVmState(vm, sections);
    machine = new Machine({ cfg, log, kvm, vm, mem, devices, legacy, kernel: kernelOf(manifest) });
    for (const v of vcpus) machine.vcpus.add(v);
    log.info({ snapshot: paths.snapshotPath, id: manifest.snapshot_id, vcpus: cfg.vcpus, memBytes: cfg.memBytes }, 'machine restored from snapshot');
    return { machine, manifest };
  } catch (e) {
    releaseParts({ kvm, vm, mem, devices, vcpus });
    throw toHangarError(e, 'ENGINE_FAILED');
  }
}
