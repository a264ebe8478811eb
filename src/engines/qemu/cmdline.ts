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
 *
 * Firmware boot (config.firmware, q35 only): no -kernel; SeaBIOS (QEMU's
 * default) or OVMF as two pflash drives (shared code read-only, the VM's own
 * variable store writable) runs the boot loader of the CD-ROM, then of the
 * first disk (bootindex 0 and 1). The CD-ROM is an ide-cd on q35's built-in
 * AHCI controller, read through a descriptor the engine opened (fd CDROM_FD),
 * so a confined QEMU needs no access to the folder the ISO lives in.
 * config.vnc adds a standard VGA card, a USB tablet (an absolute pointer, so
 * a VNC client's cursor matches the guest's) and a VNC server on a Unix socket.
 */
import path from 'node:path';
import { HangarError } from '../../common/errors.js';
import { DEVICE_ID_RULE, TAP_NAME_RULE, VM_NAME_RULE, isDeviceId, isMac, isTapName, isVmName } from '../../api/names.js';
import type { EngineVmConfig, HostForward } from '../engine.js';
import type { VmProcessIdentity } from '../base/identity.js';
import { OVMF_CODE_FILE, ovmfDir, vmVarsFile } from './firmware.js';
import { blockdevNodes, deviceOption, diskDevice, diskPortCount, diskPortName, MAX_DISK_PORTS, type DiskIoMode } from './disks.js';
import { balloonArgs } from './balloon.js';

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
/** The descriptor QEMU inherits for the CD-ROM's ISO (opened read-only by the engine), and its fd set. */
export const CDROM_FD = 4;
const CDROM_FDSET = 2;

/** Where a VM's VNC socket goes unless the daemon names another place. */
export function vncSocketPath(runDir: string): string {
  return path.join(runDir, 'vnc.sock');
}

export interface CmdlineOptions {
  machine?: QemuMachine;
  /** OVMF's code volume for UEFI VMs (default <ovmfDir()>/OVMF_CODE_4M.fd). */
  ovmfCode?: string;
  /** Per disk id: whether its file takes O_DIRECT (the engine probes it); absent: 'buffered', which works everywhere. */
  diskIo?: Record<string, DiskIoMode>;
  /** Descriptors QEMU inherits for the NICs' TAPs, one per NIC in order (absent: QEMU opens each TAP by name). */
  tapFds?: number[];
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
  if (c.firmware !== undefined) {
    if (c.firmware.kind !== 'bios' && c.firmware.kind !== 'uefi') invalid(`firmware must be bios or uefi, got ${String(c.firmware.kind)}`);
    if (c.firmware.varsFile !== undefined) checkPath('UEFI variable store', c.firmware.varsFile);
  } else {
    if (c.boot === undefined) invalid('a VM needs a kernel to boot or firmware');
    checkPath('kernel', c.boot.kernel);
    if (c.boot.initrd !== undefined) checkPath('initrd', c.boot.initrd);
    if (c.boot.cmdline !== undefined && /[\0\n\r]/.test(c.boot.cmdline)) invalid('kernel command line contains a control character');
  }
  if (c.cdrom !== undefined) checkPath('cdrom', c.cdrom);
  if (c.loadSnapshot !== undefined && !/^[A-Za-z][A-Za-z0-9._-]{0,62}$/.test(c.loadSnapshot.name)) invalid(`snapshot name "${c.loadSnapshot.name}" is not valid`);
  const files = runFiles(c.runDir);
  if (c.guestAgent !== undefined) checkPath('guest agent socket', c.guestAgent.socket);
  if (c.vnc !== undefined) checkPath('VNC socket', c.vnc.socket);
  for (const s of [files.qmpSocket, files.consoleSocket, ...(c.guestAgent ? [c.guestAgent.socket] : []), ...(c.vnc ? [c.vnc.socket] : [])]) {
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
    if (n.user) {
      for (const f of n.user.forwards) checkHostForward(n.id, f);
    } else if (!isTapName(n.tap)) invalid(`nic ${n.id}: tap name "${n.tap}" is not a valid interface name (${TAP_NAME_RULE})`);
    if (!isMac(n.mac)) invalid(`nic ${n.id}: mac "${n.mac}" is not a MAC address`);
    // Bit 0 of the first octet marks multicast, which a NIC cannot own.
    if (parseInt(n.mac.slice(0, 2), 16) & 1) invalid(`nic ${n.id}: mac "${n.mac}" is a multicast address`);
  }
}

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

function checkHostForward(nic: string, f: HostForward): void {
  if (f.proto !== 'tcp' && f.proto !== 'udp') invalid(`nic ${nic}: forward protocol must be tcp or udp`);
  if (!IPV4_RE.test(f.address)) invalid(`nic ${nic}: forward address "${f.address}" is not an IPv4 address`);
  for (const p of [f.hostPort, f.guestPort]) if (!Number.isInteger(p) || p < 1 || p > 65535) invalid(`nic ${nic}: forward port ${p} is not 1-65535`);
}

/** QEMU's hostfwd rule: `tcp:127.0.0.1:8080-:80` (the guest address left to QEMU: the one its DHCP hands out). */
export function hostfwdRule(f: HostForward): string {
  return `${f.proto}:${f.address}:${f.hostPort}-:${f.guestPort}`;
}

/**
 * The guest agent channel: a virtio-serial controller with one port named
 * org.qemu.guest_agent.0 (the name qemu-ga's udev rule and systemd unit look
 * for), backed by a Unix socket QEMU listens on. The daemon connects to it
 * only to run exec; nothing on the port is ever needed to boot.
 */
export function guestAgentArgs(socket: string, bus: 'pci' | 'device'): string[] {
  return [
    '-device', `virtio-serial-${bus},id=vser0`,
    '-chardev', `socket,id=qga,path=${optValue(socket)},server=on,wait=off`,
    '-device', 'virtserialport,bus=vser0.0,chardev=qga,name=org.qemu.guest_agent.0',
  ];
}

/** The argv (without the program name) for one VM. Throws INVALID_ARGUMENT on a bad config. */
export function buildQemuArgs(c: EngineVmConfig, opts: CmdlineOptions = {}): string[] {
  validateConfig(c);
  const machine = opts.machine ?? 'q35';
  // SeaBIOS/OVMF, the AHCI CD-ROM and the VGA card are q35's; microvm has none of them.
  if (machine === 'microvm' && (c.firmware || c.cdrom !== undefined || c.cdromDrive || c.vnc)) invalid('firmware boot, CD-ROMs and displays need machine q35');
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

  if (c.firmware) {
    if (c.firmware.kind === 'uefi') {
      const code = opts.ovmfCode ?? path.join(ovmfDir(), OVMF_CODE_FILE);
      const vars = c.firmware.varsFile ?? vmVarsFile(c.runDir);
      args.push('-drive', `if=pflash,unit=0,format=raw,readonly=on,file=${optValue(code)}`);
      args.push('-drive', `if=pflash,unit=1,format=raw,file=${optValue(vars)}`);
    }
    // SeaBIOS is q35's own firmware: nothing to add for bios.
  } else if (c.boot) {
    args.push('-kernel', c.boot.kernel);
    if (c.boot.initrd !== undefined) args.push('-initrd', c.boot.initrd);
    if (c.boot.cmdline !== undefined && c.boot.cmdline !== '') args.push('-append', c.boot.cmdline);
  }

  if (c.cdrom !== undefined) {
    args.push('-add-fd', `fd=${CDROM_FD},set=${CDROM_FDSET},opaque=cdrom`);
    args.push('-drive', `if=none,id=cdrom,media=cdrom,readonly=on,format=raw,file=/dev/fdset/${CDROM_FDSET}`);
    args.push('-device', `ide-cd,drive=cdrom,bus=ide.0,id=dev-cdrom${c.firmware ? ',bootindex=0' : ''}`);
  } else if (c.cdromDrive) {
    // An empty drive, for an ISO inserted later over QMP (media.ts).
    args.push('-drive', 'if=none,id=cdrom,media=cdrom,readonly=on');
    args.push('-device', `ide-cd,drive=cdrom,bus=ide.0,id=dev-cdrom${c.firmware ? ',bootindex=0' : ''}`);
  }

  // Disks: two block nodes each (file, format) and a virtio-blk device; on q35 each
  // sits behind a PCIe root port of its own, with spare ports for hot-plug (disks.ts).
  if (bus === 'pci') {
    for (let i = 1; i <= diskPortCount(c.disks.length); i++) {
      args.push('-device', `pcie-root-port,id=${diskPortName(i)},chassis=${i}`);
    }
  }
  c.disks.forEach((d, i) => {
    for (const node of blockdevNodes(d, opts.diskIo?.[d.id] ?? 'buffered')) args.push('-blockdev', JSON.stringify(node));
    const dev = diskDevice(d, bus, bus === 'pci' ? diskPortName(i + 1) : undefined);
    // The firmware boots the first disk (the root disk) when the CD-ROM does not boot.
    if (c.firmware && i === 0) dev.bootindex = 1;
    args.push('-device', deviceOption(dev));
  });
  c.nics.forEach((n, i) => {
    const fd = opts.tapFds?.[i];
    if (n.user) args.push('-netdev', [`user,id=net-${n.id}`, ...n.user.forwards.map((f) => `hostfwd=${hostfwdRule(f)}`)].join(','));
    else args.push('-netdev', fd !== undefined ? `tap,id=net-${n.id},fd=${fd}` : `tap,id=net-${n.id},ifname=${n.tap},script=no,downscript=no`);
    args.push('-device', `virtio-net-${bus},netdev=net-${n.id},id=dev-net-${n.id},mac=${n.mac.toLowerCase()}`);
  });

  if (c.guestAgent !== undefined) args.push(...guestAgentArgs(c.guestAgent.socket, bus));
  if (c.vnc) {
    args.push('-device', 'VGA,id=video');
    args.push('-device', 'qemu-xhci,id=usb', '-device', 'usb-tablet,bus=usb.0,id=tablet');
    // Only the socket's folder guards it (the runDir: root and the VM's own uid); no password, no TCP.
    args.push('-vnc', `unix:${optValue(c.vnc.socket)}`);
  }
  args.push(...balloonArgs(bus));

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
  // A start from an internal snapshot: QEMU waits (-S) until start() has loaded it over QMP
  // (snapshot-load names its disks; -loadvm would insist that every writable drive, the UEFI
  // variable store included, holds snapshots) and then lets it run on from there.
  if (c.loadSnapshot !== undefined) args.push('-S');
  // Once running, QEMU needs no new processes and no privilege changes.
  args.push('-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
  args.push('-msg', 'timestamp=on');
  return args;
}
