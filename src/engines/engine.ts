/**
 * The Engine contract: the only thing the daemon knows about how a VM runs.
 * A VM is always a separate process (QEMU or hangar-vmm), so a crashing guest
 * or device model cannot take the daemon down, and a daemon restart does not
 * stop running VMs: the daemon re-adopts them with `adopt()`.
 */
import type { Duplex } from 'node:stream';
import type { Accel, EngineCapabilities, EngineName } from '../api/engine.js';
import type { ConsoleLogLimit } from '../common/console-log/limits.js';
import type { GuestExecRequest, GuestExecResult } from './guest.js';
import type { LiveSnapshotControl, StartSnapshot } from './snapshot-control.js';

export type { GuestExecRequest, GuestExecResult } from './guest.js';
export type { Accel, BootMode, EngineCapabilities, EngineLimits, EngineName } from '../api/engine.js';

/** Direct kernel boot. */
export interface KernelBoot {
  kernel: string;
  initrd?: string;
  cmdline?: string;
}

export interface DiskAttachment {
  id: string;
  path: string;
  format: 'raw' | 'qcow2';
  readOnly?: boolean;
  serial?: string;
  /** Files below `path` in its qcow2 backing chain (an image's base disk): the VM reads them, never writes them. */
  backingFiles?: string[];
}

/**
 * Boot through firmware: the guest's own boot loader, found on the CD-ROM or
 * the disks in boot order. `bios` is SeaBIOS; `uefi` is OVMF with the VM's
 * own variable store (`varsFile`, default <runDir>/uefi-vars.fd), which the
 * engine makes from the empty template on first start.
 */
export interface FirmwareBoot {
  kind: 'bios' | 'uefi';
  varsFile?: string;
}

/** A graphical console served by VNC on a Unix socket (VMs booted by firmware). */
export interface VncDisplay {
  socket: string;
}

export interface NicAttachment {
  id: string;
  /** The host TAP the daemon made (empty for a user-mode NIC). */
  tap: string;
  mac: string;
  /** QEMU user-mode networking instead of a TAP (no bridge; outbound through QEMU; forwards are hostfwd). */
  user?: UserNetwork;
}

/** A host port QEMU's user-mode network forwards to the guest (hostfwd). */
export interface HostForward {
  proto: 'tcp' | 'udp';
  /** Host address to listen on (0.0.0.0: every address). */
  address: string;
  hostPort: number;
  guestPort: number;
}

export interface UserNetwork {
  forwards: HostForward[];
}

/** Everything an engine needs to start one VM; the daemon validated it and prepared every path. */
export interface EngineVmConfig {
  id: string;
  name: string;
  cpus: number;
  memoryBytes: number;
  /** Direct kernel boot; absent when `firmware` boots the VM. */
  boot?: KernelBoot;
  /** Firmware boot (ignores `boot`); absent: direct kernel boot. */
  firmware?: FirmwareBoot;
  /** An ISO image attached as a read-only CD-ROM, first in boot order. The daemon checked where it comes from. */
  cdrom?: string;
  /** A CD-ROM drive even without `cdrom`: empty, so media can be inserted while the VM runs (VmHandle.changeMedium). */
  cdromDrive?: boolean;
  /** A display (VGA) and a VNC server on this Unix socket; absent: headless. */
  vnc?: VncDisplay;
  disks: DiskAttachment[];
  nics: NicAttachment[];
  accel: Accel;
  /** Per-VM runtime folder the engine may put sockets and pid files in. */
  runDir: string;
  /** File the engine appends all serial console output to, even while nobody is attached. */
  consoleLog: string;
  /** How big consoleLog may grow before it is rotated (default DEFAULT_CONSOLE_LOG_LIMIT: 2 files of 8 MiB). */
  consoleLogLimit?: ConsoleLogLimit;
  /** A guest agent channel (QEMU: virtio-serial port org.qemu.guest_agent.0) behind this Unix socket, for exec(). */
  guestAgent?: { socket: string };
  /** Start from this internal snapshot (machine state and disks) instead of booting; see src/host/snapshots/. */
  loadSnapshot?: StartSnapshot;
}

/** Why a VM process ended. */
export type ExitReason = 'poweroff' | 'reboot' | 'stopped' | 'killed' | 'crashed';

export interface VmExit {
  reason: ExitReason;
  detail?: string;
  exitCode?: number | null;
  signal?: string | null;
}

export interface VmStats {
  pid: number;
  rssBytes: number;
  cpuSeconds: number;
  state: 'running' | 'paused';
}

/** Block I/O counters of one disk, cumulative since the VM process started. */
export interface DiskCounters {
  id: string;
  readBytes: number;
  writeBytes: number;
  readOps: number;
  writeOps: number;
}

/** What the VM process itself counts, for monitoring (src/host/monitor). */
export interface DeviceCounters {
  disks: DiskCounters[];
  /** Memory as the guest reports it (balloon statistics); null when the VM has no way to tell. */
  guestMemory: { totalBytes: number; usedBytes: number } | null;
}

/** A running VM process, started or re-adopted. */
export interface VmHandle {
  readonly pid: number;
  readonly engine: EngineName;
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Asks the guest to power off (ACPI button, or a Ctrl-Alt-Del equivalent); resolves once asked. */
  requestShutdown(): Promise<void>;
  /** Ends the VM process at once. Resolves when it has exited. */
  kill(): Promise<void>;
  /** Current run state as the VM process reports it. */
  queryState(): Promise<'running' | 'paused'>;
  stats(): Promise<VmStats>;
  /** Disk I/O and guest-reported memory, as the VM process counts them (absent: the engine exposes none). */
  deviceCounters?(): Promise<DeviceCounters>;
  /** A fresh bidirectional stream to the serial console. Output flows while it is open. */
  openConsole(): Promise<Duplex>;
  /**
   * Writes what the VM's display shows to `file` (in the VM's runDir, where
   * the VM process may create files), as PNG or PPM. Absent on engines
   * without displays; INVALID_STATE for a VM that has none.
   */
  screendump?(file: string, format: 'png' | 'ppm'): Promise<void>;
  /** Called once when the VM process ends, with the reason. */
  onExit(listener: (exit: VmExit) => void): void;
  /** Drops control connections without touching the VM (daemon shutting down). */
  detach(): void;
  /**
   * Runs a command in the guest through its agent (present when the config
   * had a guestAgent). AGENT_UNAVAILABLE when no agent answers.
   */
  exec?(req: GuestExecRequest): Promise<GuestExecResult>;
  /** Snapshots through the running process; absent when the engine has none (capabilities().snapshots). */
  readonly snapshots?: LiveSnapshotControl;
  /** Puts an ISO into the VM's CD-ROM drive (null: ejects it) while it runs; absent: the engine cannot. */
  changeMedium?(file: string | null): Promise<void>;
  /** What the running VM's CD-ROM drive holds as the engine sees it: null without a drive. */
  cdromMedium?(): Promise<{ inserted: boolean; file: string | null; trayOpen: boolean } | null>;
  /** Hot-plugs a disk into the running guest (absent: the engine cannot; the VM must be stopped). */
  attachDisk?(disk: DiskAttachment): Promise<void>;
  /** Unplugs a disk: resolves once the guest has let it go and the engine has closed its file. */
  detachDisk?(id: string): Promise<void>;
  /** Hot-plugs a NIC (its TAP exists and is on its bridge) into the running guest (absent: the engine cannot). */
  attachNic?(nic: NicAttachment): Promise<void>;
  /** Unplugs a NIC: resolves once the guest has let it go and the engine has closed its TAP. */
  detachNic?(id: string): Promise<void>;
  /** Adds a host port forward to a running VM's user-mode NIC (absent: the engine has no user-mode networking). */
  addHostForward?(nicId: string, fwd: HostForward): Promise<void>;
  removeHostForward?(nicId: string, fwd: HostForward): Promise<void>;
  /** Tells the running VM that a disk's file has grown to `sizeBytes` (the guest sees the new capacity). */
  resizeDisk?(id: string, sizeBytes: number): Promise<void>;
}

export interface Engine {
  readonly name: EngineName;
  /** Kernel command line for images that bring none (extra arguments are appended); absent: none. */
  readonly defaultCmdline?: string;
  /**
   * What this engine can run on this host: availability, devices,
   * accelerators and the one its VMs get (`defaultAccel`), and `limits`,
   * which the daemon checks a VM's size against once, at create. A config
   * passed to start() is within these limits.
   */
  capabilities(): Promise<EngineCapabilities>;
  start(config: EngineVmConfig): Promise<VmHandle>;
  /** Reconnects to a VM started earlier; null when its process is gone. */
  adopt(config: EngineVmConfig, pid: number): Promise<VmHandle | null>;
  /**
   * The pid of this VM's process if one runs now, else null: `hint` (the pid
   * the daemon recorded) when it is still this VM's process, otherwise the
   * pid the engine's own files in runDir name (a pid file). A pid counts only
   * when /proc/<pid>/cmdline names this VM's runDir, so a reused pid is never
   * reported. Lets a restarted daemon find a VM whose start it never recorded.
   */
  findProcess?(config: EngineVmConfig, hint?: number): Promise<number | null>;
  /**
   * Ends a process findProcess reported, with SIGKILL, after checking once
   * more that pid is still this VM's (it is left alone otherwise). Resolves
   * true once it is gone, false when it would not die within a few seconds.
   */
  killProcess?(config: EngineVmConfig, pid: number): Promise<boolean>;
}
