/**
 * Builds the qemu-system-x86_64 argument vector for one VM. Pure: no files
 * are touched, so the argv can be unit-tested and logged as it is.
 *
 * Machine type: `q35` by default. `microvm` (also supported) reaches the
 * tiny image's prompt about a second sooner under TCG, but it has no HPET and
 * no ACPI PM timer: on a loaded host the guest kernel fails to calibrate its
 * TSC against the PIT ("tsc: Unable to calibrate against PIT ... Marking TSC
 * unstable") and then hangs before printing anything more. q35 has both
 * reference timers, so it boots reliably however busy the host is, and its
 * ACPI power button makes `system_powerdown` work. Devices are virtio-pci on
 * q35 and virtio-mmio (found through ACPI) on microvm.
 */
import path from 'node:path';
import { HangarError } from '../../common/errors.js';
import { DEVICE_ID_RULE, TAP_NAME_RULE, VM_NAME_RULE, isDeviceId, isMac, isTapName, isVmName } from '../../api/names.js';
import type { EngineVmConfig } from '../engine.js';
import type { VmProcessIdentity } from '../base/identity.js';
import { blockdevNodes, deviceOption, diskDevice, diskPortCount, diskPortName, MAX_DISK_PORTS, type DiskIoMode } from './disks.js';

export type QemuMachine = 'microvm' | 'q35';

export interface QemuRunFiles {
  qmpSocket: string;
  consoleSocket: string;
  pidFile: string;
  /** QEMU's own stdout/stderr (warnings, start errors). */
  processLog: string;
}

/** Where the engine keeps a VM's sockets and files inside its runDir. */
export function runFiles(runDir: string): QemuRunFiles {
  return {
    qmpSocket: path.join(runDir, 'qmp.sock'),
    consoleSocket: path.join(runDir, 'console.sock'),
    pidFile: path.join(runDir, 'qemu.pid'),
    processLog: path.join(runDir, 'qemu.log'),
  };
}

/** The descriptor QEMU inherits for its console log (the writer's pipe), and the fd set it goes in. */
export const CONSOLE_LOG_FD = 3;
const CONSOLE_LOG_FDSET = 1;

export interface CmdlineOptions {
  machine?: QemuMachine;
  /** Descriptors QEMU inherits for the NICs' TAPs, one per NIC in order (absent: QEMU opens each TAP by name). */
  tapFds?: number[];
  /** Per disk id: whether its file takes O_DIRECT (the engine probes it); absent: 'buffered', which works everywhere. */
  diskIo?: Record<string, DiskIoMode>;
}

/** The first descriptor of the NICs' TAPs (after the console log's). */
export const FIRST_TAP_FD = CONSOLE_LOG_FD + 1;

const MiB = 1024 * 1024;
/** sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;

/** QEMU option values are comma-separated: a literal comma is written twice. */
export function optValue(value: string): string {
  return value.replace(/,/g, ',,');
}

/** The -chardev argument of the QMP socket: unique to one VM, so it also identifies its process. */
export function qmpChardevArg(files: QemuRunFiles): string {
  return `socket,id=qmp,path=${optValue(files.qmpSocket)},server=on,wait=off`;
}

/**
 * This VM's QEMU: the process whose argv holds exactly this VM's QMP
 * chardev argument (as buildQemuArgs wrote it, commas doubled).
 */
export function qemuIdentity(runDir: string): VmProcessIdentity {
  const files = runFiles(runDir);
  const arg = qmpChardevArg(files);
  return { pidFile: files.pidFile, matches: (argv) => argv.includes(arg) };
}

function invalid(message: string, details?: Record<string, unknown>): never {
  throw new HangarError('INVALID_ARGUMENT', message, details);
}

function checkPath(what: string, p: string): void {
  if (!path.isAbsolute(p)) invalid(`${what} must be an absolute path, got "${p}"`);
  // A newline or NUL cannot be passed to QEMU safely.
  if (/[\0\n\r]/.test(p)) invalid(`${what} contains a control character`);
}

/**
 * Checks what the argv's safety depends on (absolute paths, no control
 * characters, socket paths that fit, well-formed device ids); throws
 * INVALID_ARGUMENT naming the first problem. Sizes and counts are not
 * checked here: the daemon checked them against the engine's limits at create.
 */
export function validateConfig(c: EngineVmConfig): void {
  if (!isVmName(c.name)) invalid(`VM name "${c.name}" is not valid: ${VM_NAME_RULE}`);
  if (c.accel !== 'kvm' && c.accel !== 'tcg') invalid(`accel must be kvm or tcg, got ${String(c.accel)}`);
  checkPath('runDir', c.runDir);
  checkPath('consoleLog', c.consoleLog);
  checkPath('kernel', c.boot.kernel);
  if (c.boot.initrd !== undefined) checkPath('initrd', c.boot.initrd);
  if (c.boot.cmdline !== undefined && /[\0\n\r]/.test(c.boot.cmdline)) invalid('kernel command line contains a control character');
  const files = runFiles(c.runDir);
  for (const s of [files.qmpSocket, files.consoleSocket]) {
    if (Buffer.byteLength(s) > MAX_SOCKET_PATH) invalid(`runDir is too long for a Unix socket path (${s})`);
  }
  const ids = new Set<string>();
  if (c.disks.length > MAX_DISK_PORTS) invalid(`at most ${MAX_DISK_PORTS} disks, got ${c.disks.length}`);
  for (const d of c.disks) {
    if (!isDeviceId(d.id)) invalid(`disk id "${d.id}" must be ${DEVICE_ID_RULE}`);
    if (ids.has(`d:${d.id}`)) invalid(`disk id "${d.id}" is used twice`);
    ids.add(`d:${d.id}`);
    checkPath(`disk ${d.id}`, d.path);
    if (d.format !== 'raw' && d.format !== 'qcow2') invalid(`disk ${d.id}: format must be raw or qcow2`);
    // virtio-blk serials are at most 20 bytes.
    if (d.serial !== undefined && !/^[A-Za-z0-9_.-]{1,20}$/.test(d.serial)) invalid(`disk ${d.id}: serial must be 1-20 letters, digits, "_", "." or "-"`);
  }
  for (const n of c.nics) {
    if (!isDeviceId(n.id)) invalid(`nic id "${n.id}" must be ${DEVICE_ID_RULE}`);
    if (ids.has(`n:${n.id}`)) invalid(`nic id "${n.id}" is used twice`);
    ids.add(`n:${n.id}`);
    if (!isTapName(n.tap)) invalid(`nic ${n.id}: tap name "${n.tap}" is not a valid interface name (${TAP_NAME_RULE})`);
    if (!isMac(n.mac)) invalid(`nic ${n.id}: mac "${n.mac}" is not a MAC address`);
    // Bit 0 of the first octet marks multicast, which a NIC cannot own.
    if (parseInt(n.mac.slice(0, 2), 16) & 1) invalid(`nic ${n.id}: mac "${n.mac}" is a multicast address`);
  }
}

/** The argv (without the program name) for one VM. Throws INVALID_ARGUMENT on a bad config. */
export function buildQemuArgs(c: EngineVmConfig, opts: CmdlineOptions = {}): string[] {
  validateConfig(c);
  const machine = opts.machine ?? 'q35';
  const files = runFiles(c.runDir);
  const bus = machine === 'microvm' ? 'device' : 'pci';
  const args: string[] = [];

  // No default devices, no config files from /etc, no window: everything the VM has is below.
  args.push('-nodefaults', '-no-user-config', '-display', 'none');
  args.push('-name', `guest=${optValue(c.name)},debug-threads=on`);
  // A guest reboot ends the process; the daemon decides whether to start it again.
  args.push('-no-reboot');

  // Multi-threaded TCG gives each vCPU its own host thread; one vCPU needs no more.
  if (c.accel === 'kvm') args.push('-accel', 'kvm', '-cpu', 'host');
  else args.push('-accel', c.cpus > 1 ? 'tcg,thread=multi' : 'tcg');

  if (machine === 'microvm') {
    // acpi=on: the power button (system_powerdown) reaches the guest through ACPI.
    args.push('-machine', 'microvm,acpi=on');
    // virtio-mmio version 2 (modern) rather than the legacy register layout.
    args.push('-global', 'virtio-mmio.force-legacy=false');
  } else {
    args.push('-machine', 'q35');
  }
  args.push('-smp', String(c.cpus));
  args.push('-m', `${Math.ceil(c.memoryBytes / MiB)}M`);

  args.push('-kernel', c.boot.kernel);
  if (c.boot.initrd !== undefined) args.push('-initrd', c.boot.initrd);
  if (c.boot.cmdline !== undefined && c.boot.cmdline !== '') args.push('-append', c.boot.cmdline);

  // Disks: two block nodes each (file, format) and a virtio-blk device; on q35 each
  // sits behind a PCIe root port of its own, with spare ports for hot-plug (disks.ts).
  if (bus === 'pci') {
    for (let i = 1; i <= diskPortCount(c.disks.length); i++) {
      args.push('-device', `pcie-root-port,id=${diskPortName(i)},chassis=${i}`);
    }
  }
  c.disks.forEach((d, i) => {
    for (const node of blockdevNodes(d, opts.diskIo?.[d.id] ?? 'buffered')) args.push('-blockdev', JSON.stringify(node));
    args.push('-device', deviceOption(diskDevice(d, bus, bus === 'pci' ? diskPortName(i + 1) : undefined)));
  });
  c.nics.forEach((n, i) => {
    const fd = opts.tapFds?.[i];
    args.push('-netdev', fd !== undefined ? `tap,id=net-${n.id},fd=${fd}` : `tap,id=net-${n.id},ifname=${n.tap},script=no,downscript=no`);
    args.push('-device', `virtio-net-${bus},netdev=net-${n.id},id=dev-net-${n.id},mac=${n.mac.toLowerCase()}`);
  });

  // Serial console on a Unix socket (one client at a time); logfile keeps every
  // byte the guest writes, whether or not anybody is connected. It is the pipe
  // to the console log writer (fd CONSOLE_LOG_FD, see console-log/writer.ts),
  // which bounds and rotates c.consoleLog: QEMU itself would let it grow forever.
  args.push('-add-fd', `fd=${CONSOLE_LOG_FD},set=${CONSOLE_LOG_FDSET},opaque=console-log`);
  args.push(
    '-chardev',
    `socket,id=console,path=${optValue(files.consoleSocket)},server=on,wait=off,logfile=/dev/fdset/${CONSOLE_LOG_FDSET},logappend=on`,
  );
  args.push('-serial', 'chardev:console');
  // QMP in control mode on its own socket.
  args.push('-chardev', qmpChardevArg(files));
  args.push('-mon', 'chardev=qmp,mode=control');
  args.push('-pidfile', files.pidFile);
  // Once running, QEMU needs no new processes and no privilege changes.
  args.push('-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
  args.push('-msg', 'timestamp=on');
  return args;
}
