/**
 * The one definition of every API resource. These TypeBox schemas drive
 * request validation (fastify), the TypeScript types used by the daemon and
 * the CLI, and the OpenAPI document served at /openapi.json.
 */
import { Type, type Static } from 'typebox';
import { VmName, ImageName, DeviceId, DEVICE_ID_PATTERN } from '../../api/names.js';
import { Accel, BootMode, EngineName } from '../../api/engine.js';
import { VmNic, VmNicRequest, VmNicState } from '../network/schemas.js';
export * from '../network/schemas.js';

export { VmName, ImageName, Accel, BootMode, EngineName };

/** Sizes are given as strings such as "512M" or "2G" (binary units) or as a number of bytes. */
export const SizeInput = Type.Union([Type.String({ maxLength: 32 }), Type.Integer({ minimum: 0 })], {
  description: 'A size: "512M", "2G", "1048576" (binary units, K = 1024) or a number of bytes',
});

/** cloud-init inputs of a create request (docs/cloud-init.md); used by images with cloudInit only. */
const CloudInitFields = {
  sshKeys: Type.Optional(Type.Array(Type.String({ maxLength: 8192 }), { maxItems: 32, description: 'SSH public key lines ("ssh-ed25519 AAAA... comment") for the image\'s default user' })),
  userData: Type.Optional(Type.String({ maxLength: 262144, description: 'cloud-init user-data ("#cloud-config", "#!" script or MIME multipart); replaces Hangar\'s default' })),
  networkConfig: Type.Optional(Type.String({ maxLength: 65536, description: 'cloud-init network-config (version 1 or 2)' })),
};

/** What a VM keeps of its cloud-init inputs (checked; keys normalised). */
export const VmCloudInit = Type.Object({
  sshKeys: Type.Array(Type.String()),
  userData: Type.Optional(Type.String()),
  networkConfig: Type.Optional(Type.String()),
});
/** A volume as the API names it: "pool/volume" (volumes.md); a bare "volume" means the default pool where allowed. */
export const VolumeRef = Type.String({ minLength: 1, maxLength: 160, pattern: '^([^/\\s]+/)?[^/\\s]+$', description: '"pool/volume", or "volume" in the pool given by `pool` (default pool when none)' });
/** virtio-blk serials are at most 20 bytes. */
export const DiskSerial = Type.String({ pattern: '^[A-Za-z0-9_.-]{1,20}$', description: 'Serial the guest sees (1-20 letters, digits, "_", "." or "-"; default: the disk\'s name when it fits)' });

/** A disk to give a VM: a new volume of `size`, or an existing `volume`. */
export const DiskRequest = Type.Object(
  {
    name: Type.Optional(Type.String({ pattern: DEVICE_ID_PATTERN, description: 'Device name in the VM (default disk1, disk2, ...); "root" is the root disk' })),
    size: Type.Optional(SizeInput),
    volume: Type.Optional(VolumeRef),
    pool: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[^/\\s]+$', description: 'Pool of a new volume, or of `volume` when it names no pool (default "default")' })),
    readOnly: Type.Optional(Type.Boolean({ description: 'The guest cannot write it' })),
    serial: Type.Optional(DiskSerial),
  },
  { additionalProperties: false, description: 'Exactly one of size (a new volume "<pool>/<vm>-<name>") and volume (an existing one, attached to no other VM)' },
);
export type DiskRequest = Static<typeof DiskRequest>;

/** A disk of a VM as its spec records it (root disk first). */
export const VmDisk = Type.Object({
  name: DeviceId,
  volume: Type.String({ description: '"pool/volume"' }),
  readOnly: Type.Optional(Type.Boolean()),
  serial: Type.Optional(Type.String()),
  /** The VM's own root volume (made from the image's base disk): deleted with the VM. */
  owned: Type.Optional(Type.Boolean()),
});
export type VmDisk = Static<typeof VmDisk>;

/** A disk of a VM as GET /1.0/vms/{name}/disks shows it. */
export const VmDiskInfo = Type.Object({
  name: DeviceId,
  volume: Type.String(),
  readOnly: Type.Boolean(),
  serial: Type.Optional(Type.String()),
  owned: Type.Boolean(),
  format: Type.Optional(Type.Union([Type.Literal('raw'), Type.Literal('qcow2')])),
  sizeBytes: Type.Optional(Type.Integer({ description: 'Virtual size the guest sees' })),
  path: Type.Optional(Type.String({ description: 'The file on the host' })),
});
export type VmDiskInfo = Static<typeof VmDiskInfo>;

/** POST /1.0/vms/{name}/disks: attach (hot-plugged when the VM runs on QEMU). */
export const DiskAttachRequest = DiskRequest;
export type DiskAttachRequest = DiskRequest;

/** POST /1.0/vms */
export const VmCreateRequest = Type.Object(
  {
    name: VmName,
    image: Type.String({ minLength: 1, maxLength: 128, description: 'Image to boot, e.g. "tiny"' }),
    cpus: Type.Optional(Type.Integer({ description: 'vCPUs (default 1); 1 up to the engine\'s maximum (GET /1.0 engines[].limits.maxCpus)' })),
    memory: Type.Optional(SizeInput),
    engine: Type.Optional(EngineName),
    cmdline: Type.Optional(Type.String({ maxLength: 2048, description: 'Extra kernel command-line arguments' })),
    start: Type.Optional(Type.Boolean({ description: 'Start the VM once created (default true)' })),
    ...CloudInitFields,
    boot: Type.Optional(Type.Union([Type.Literal('kernel'), Type.Literal('bios'), Type.Literal('uefi')], { description: 'kernel: the image\'s kernel directly (headless); bios or uefi: firmware runs the boot loader of the ISO, then of the root disk, with a display (VNC). Default: bios with an ISO, else kernel' })),
    iso: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'An ISO 9660 image to attach as a read-only CD-ROM, booted first: an absolute path inside the daemon\'s import folders, or a raw storage volume "pool/volume"' })),
    rootSize: Type.Optional(SizeInput),
    disks: Type.Optional(Type.Array(DiskRequest, { maxItems: 16, description: 'Disks besides the root disk' })),
    network: Type.Optional(Type.String({ maxLength: 64, description: 'Network of the VM\'s one NIC (eth0), or "none"; absent: cloud images join the daemon\'s default network, others get no NIC; ignored when nics is given' })),
    nics: Type.Optional(Type.Array(VmNicRequest, { maxItems: 8, description: 'NICs, in order (eth0, eth1, ...)' })),
  },
  { additionalProperties: false },
);
export type VmCreateRequest = Static<typeof VmCreateRequest>;

export const VmStateName = Type.Union([
  Type.Literal('stopped'),
  Type.Literal('starting'),
  Type.Literal('running'),
  Type.Literal('paused'),
  Type.Literal('stopping'),
  Type.Literal('crashed'),
]);
export type VmStateName = Static<typeof VmStateName>;

/** PUT /1.0/vms/{name}/state */
export const VmStateRequest = Type.Object(
  {
    action: Type.Union([
      Type.Literal('start'),
      Type.Literal('stop'),
      Type.Literal('restart'),
      Type.Literal('pause'),
      Type.Literal('resume'),
    ]),
    force: Type.Optional(Type.Boolean({ description: 'stop/restart: skip the graceful shutdown' })),
    timeout: Type.Optional(Type.Integer({ minimum: 0, maximum: 3600, description: 'stop/restart: seconds to wait for a graceful shutdown before forcing (default 30)' })),
  },
  { additionalProperties: false },
);
export type VmStateRequest = Static<typeof VmStateRequest>;

export const VmSpec = Type.Object({
  image: Type.String(),
  engine: EngineName,
  cpus: Type.Integer(),
  memoryBytes: Type.Integer(),
  cmdline: Type.String(),
  cloudInit: Type.Optional(VmCloudInit),
  disks: Type.Array(VmDisk, { description: 'Root disk (when the image has a base disk) first' }),
  /** How the VM boots (absent on VMs made before boot modes: kernel). */
  boot: Type.Optional(BootMode),
  /** The installer ISO attached as a CD-ROM (absolute path on the daemon's host). */
  iso: Type.Optional(Type.String()),
  nics: Type.Optional(Type.Array(VmNic)),
});
export type VmSpec = Static<typeof VmSpec>;

/** A VM's graphical console: VNC on a Unix socket on the daemon's host (see `hangar vnc`). */
export const VmDisplay = Type.Object({
  type: Type.Literal('vnc'),
  socket: Type.String({ description: 'Unix socket of the VNC server, readable by root (the daemon) only; it exists while the VM runs' }),
});
export type VmDisplay = Static<typeof VmDisplay>;

export const VmRuntime = Type.Object({
  pid: Type.Union([Type.Integer(), Type.Null()]),
  accel: Type.Union([Accel, Type.Null()]),
  startedAt: Type.Union([Type.String(), Type.Null()]),
  uptimeSeconds: Type.Union([Type.Number(), Type.Null()]),
  lastExit: Type.Union([
    Type.Object({ reason: Type.String(), detail: Type.Optional(Type.String()), at: Type.String() }),
    Type.Null(),
  ]),
  rssBytes: Type.Optional(Type.Integer()),
  cpuSeconds: Type.Optional(Type.Number()),
  nics: Type.Optional(Type.Array(VmNicState)),
});

export const Vm = Type.Object({
  id: Type.String(),
  name: VmName,
  state: VmStateName,
  spec: VmSpec,
  runtime: VmRuntime,
  /** The VM's display (VMs booted by firmware); null: headless, the serial console only. */
  display: Type.Optional(Type.Union([VmDisplay, Type.Null()])),
  createdAt: Type.String(),
});
export type Vm = Static<typeof Vm>;

/** POST /1.0/vms/{name}/exec: run a command in the guest through its agent. */
export const VmExecRequest = Type.Object(
  {
    command: Type.Array(Type.String({ maxLength: 4096 }), { minItems: 1, maxItems: 1024, description: 'Program and arguments, e.g. ["df", "-h", "/"]; the program is looked up on the guest agent\'s PATH' }),
    input: Type.Optional(Type.String({ maxLength: 699052, description: 'Standard input for the command (at most 512 KiB once decoded)' })),
    encoding: Type.Optional(Type.Union([Type.Literal('utf8'), Type.Literal('base64')], { description: 'How input, stdout and stderr are written in JSON (default utf8; base64 keeps bytes exact)' })),
    timeout: Type.Optional(Type.Integer({ minimum: 1, maximum: 3600, description: 'Seconds the command may run (default 60); then it is killed in the guest and the answer is TIMEOUT' })),
  },
  { additionalProperties: false },
);
export type VmExecRequest = Static<typeof VmExecRequest>;

export const VmExecResult = Type.Object({
  exitCode: Type.Union([Type.Integer(), Type.Null()], { description: 'null when a signal ended the command' }),
  signal: Type.Union([Type.Integer(), Type.Null()]),
  stdout: Type.String(),
  stderr: Type.String(),
  encoding: Type.Union([Type.Literal('utf8'), Type.Literal('base64')]),
  stdoutTruncated: Type.Boolean(),
  stderrTruncated: Type.Boolean(),
});
export type VmExecResult = Static<typeof VmExecResult>;

export const OperationStatus = Type.Union([
  Type.Literal('running'),
  Type.Literal('success'),
  Type.Literal('failure'),
]);

export const Operation = Type.Object({
  id: Type.String(),
  description: Type.String(),
  status: OperationStatus,
  /** 0..100 where the operation can tell, otherwise absent. */
  progress: Type.Optional(Type.Object({ stage: Type.String(), percent: Type.Optional(Type.Number()) })),
  resources: Type.Object({ vms: Type.Array(Type.String()) }),
  createdAt: Type.String(),
  updatedAt: Type.String(),
  error: Type.Optional(Type.Object({ code: Type.String(), message: Type.String() })),
  result: Type.Optional(Type.Unknown()),
});
export type Operation = Static<typeof Operation>;

export const EventType = Type.Union([
  Type.Literal('created'),
  Type.Literal('started'),
  Type.Literal('paused'),
  Type.Literal('resumed'),
  Type.Literal('stopped'),
  Type.Literal('crashed'),
  Type.Literal('deleted'),
  // Monitoring: an alert raised or cleared (src/host/monitor/alerts.ts); vm is "" for a host alert.
  Type.Literal('alert'),
]);
export const LifecycleEvent = Type.Object({
  seq: Type.Integer(),
  at: Type.String(),
  vm: Type.String(),
  type: EventType,
  reason: Type.Optional(Type.String()),
});
export type LifecycleEvent = Static<typeof LifecycleEvent>;

export const Image = Type.Object({
  name: Type.String(),
  description: Type.String(),
  status: Type.Union([Type.Literal('ready'), Type.Literal('missing'), Type.Literal('building')]),
  /** Built into Hangar (built on first use) or imported from files on the host (POST /1.0/images). */
  origin: Type.Optional(Type.Union([Type.Literal('built-in'), Type.Literal('imported')])),
  sizeBytes: Type.Optional(Type.Integer()),
  kernel: Type.Optional(Type.String()),
  initrd: Type.Optional(Type.String()),
  /** Absent on an imported image without one: the engine's default command line applies. */
  cmdline: Type.Optional(Type.String()),
  importedAt: Type.Optional(Type.String()),
  /** Base disk of a disk image (absolute path on the daemon's host): GPT with an ESP and an ext4 root labelled rootfs. */
  disk: Type.Optional(Type.String()),
  /** How the image can boot: its kernel directly, or its disk by BIOS or UEFI firmware. */
  boot: Type.Optional(Type.Array(Type.Union([Type.Literal('kernel'), Type.Literal('bios'), Type.Literal('uefi')]))),
  /** The image runs cloud-init and reads a NoCloud seed. */
  cloudInit: Type.Optional(Type.Boolean()),
});
export type Image = Static<typeof Image>;

/** POST /1.0/images/{name}/build: build (or rebuild) a built-in image. */
export const ImageBuildRequest = Type.Object(
  {
    packages: Type.Optional(Type.Array(Type.String({ minLength: 3, maxLength: 200, pattern: '^[a-z0-9][a-z0-9+.-]*(:[a-z0-9]+)?=[A-Za-z0-9.+~:-]+$' }), {
      minItems: 1, maxItems: 10000, description: 'Install exactly these name=version packages (the lines of an earlier build\'s packages.txt)',
    })),
  },
  { additionalProperties: false },
);
export type ImageBuildRequest = Static<typeof ImageBuildRequest>;

/**
 * POST /1.0/images: import an image from files on the daemon's host: a kernel (and initrd),
 * answered at once (201), or a disk image (`disk`), copied as an operation (202).
 */
export const ImageImportRequest = Type.Object(
  {
    name: ImageName,
    kernel: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'Absolute path on the host of an x86-64 ELF64 kernel or a Linux bzImage' })),
    initrd: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'Absolute path on the host of an initrd' })),
    cmdline: Type.Optional(Type.String({ maxLength: 2048, description: 'Kernel command line (default: the engine\'s)' })),
    disk: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'Absolute path on the host of a raw or qcow2 disk with its own boot loader (instead of a kernel)' })),
    boot: Type.Optional(Type.Union([Type.Literal('bios'), Type.Literal('uefi')], { description: 'Disk images: the firmware its boot loader needs (default bios)' })),
    format: Type.Optional(Type.Union([Type.Literal('raw'), Type.Literal('qcow2')], { description: 'Disk images: what the file is; its bytes must agree (default: read from them)' })),
    description: Type.Optional(Type.String({ maxLength: 256 })),
  },
  { additionalProperties: false },
);
export type ImageImportRequest = Static<typeof ImageImportRequest>;
export type DiskImageImportRequest = { name: string; disk: string; boot?: 'bios' | 'uefi'; format?: 'raw' | 'qcow2'; description?: string };

/** One resource of the admission budget: what active VMs hold against what the daemon admits. */
export const BudgetLine = Type.Object({
  committed: Type.Integer({ description: 'Held by VMs that are starting, running, paused or stopping' }),
  limit: Type.Integer(),
});

/** The admission budget (docs/api.md, "Admission"): a start that would exceed it is refused. */
export const AdmissionBudget = Type.Object({
  memoryBytes: BudgetLine,
  cpus: BudgetLine,
  vms: Type.Object({ defined: Type.Integer(), limit: Type.Integer() }),
  settings: Type.Object({
    memoryReserveBytes: Type.Integer({ description: 'Host memory kept back from VMs' }),
    memoryRatio: Type.Number({ description: 'Overcommit ratio on what is left after the reserve' }),
    cpuRatio: Type.Number({ description: 'vCPUs admitted per host CPU' }),
    maxVms: Type.Integer({ description: 'VMs that may be defined' }),
  }),
});
export type AdmissionBudget = Static<typeof AdmissionBudget>;

export const HostCheck = Type.Object({
  kvm: Type.Object({
    present: Type.Boolean(),
    /** Can KVM run a full-system guest (kernel mode at native speed)? */
    fullSystem: Type.Boolean(),
    kind: Type.String({ description: '"hardware", "nested-emulated" (kernel mode emulated, e.g. PVM), or "absent"' }),
    detail: Type.String(),
  }),
  qemu: Type.Object({ present: Type.Boolean(), version: Type.Union([Type.String(), Type.Null()]) }),
  cpus: Type.Object({ total: Type.Integer(), allocated: Type.Integer() }),
  memory: Type.Object({ totalBytes: Type.Integer(), availableBytes: Type.Integer(), allocatedBytes: Type.Integer() }),
  defaultAccel: Accel,
  budget: AdmissionBudget,
  /** Network modes this host offers the daemon (docs/networking.md, "Without privileges"). */
  networks: Type.Optional(Type.Array(Type.Object({ mode: Type.String(), available: Type.Boolean(), detail: Type.String() }))),
  advice: Type.Array(Type.String()),
});
export type HostCheck = Static<typeof HostCheck>;

export const ErrorBody = Type.Object({
  type: Type.Literal('error'),
  error: Type.Object({ code: Type.String(), message: Type.String(), details: Type.Optional(Type.Unknown()) }),
});

/** Envelopes, in the manner of Incus: sync, async (202 + Location), error. */
export const syncOf = <T extends Parameters<typeof Type.Object>[0][string]>(metadata: T) =>
  Type.Object({ type: Type.Literal('sync'), metadata });
export const AsyncBody = Type.Object({
  type: Type.Literal('async'),
  operation: Type.String({ description: 'URL of the operation, also in the Location header' }),
  metadata: Operation,
});

// Snapshots and copies (src/host/snapshots/).
export * from '../snapshots/schemas.js';
export * from '../monitor/schemas.js';
