/**
 * Wire types of hangar-vmm's control API and its `--config` file: one
 * TypeBox schema per body, which validates requests (src/vmm/config.ts),
 * types the micro engine's client (src/engines/micro/client.ts) and makes
 * the OpenAPI document hangar-vmm serves at GET /openapi.json.
 *
 * Field names follow Firecracker's API so the same habits work. Each
 * field's `description` completes the sentence "<field> must be …": the
 * VMM's error messages quote it.
 */
import { Type, type Static, type TSchema } from 'typebox';
import { DEVICE_ID_RULE, DeviceId, MacAddress, TapName, TAP_NAME_RULE } from './names.js';
import { MAX_RAM, MAX_VCPUS, MIN_RAM } from '../vmm/layout.js';

export const VMM_MIN_MEM_MIB = MIN_RAM / 2 ** 20;
export const VMM_MAX_MEM_MIB = MAX_RAM / 2 ** 20;
export const VMM_MAX_VCPUS = MAX_VCPUS;
/** Longest kernel command line the VMM takes from a client (the boot page holds 4 KiB with its own fragments). */
export const VMM_MAX_BOOT_ARGS = 4000;
export const VMM_MAX_PATH = 4096;

const Flag = (what: string) => Type.Boolean({ description: `true or false (${what})` });
const HostPath = Type.String({ minLength: 2, maxLength: VMM_MAX_PATH, pattern: '^/[^\\x00]+$', description: `an absolute path on the host (at most ${VMM_MAX_PATH} bytes)` });

export const VmmMachineConfig = Type.Object({
  vcpu_count: Type.Integer({ minimum: 1, maximum: VMM_MAX_VCPUS, description: `a whole number from 1 to ${VMM_MAX_VCPUS}` }),
  mem_size_mib: Type.Integer({ minimum: VMM_MIN_MEM_MIB, maximum: VMM_MAX_MEM_MIB, multipleOf: 2, description: `an even whole number from ${VMM_MIN_MEM_MIB} to ${VMM_MAX_MEM_MIB} (MiB, in 2 MiB pages)` }),
  conservative_cpuid: Type.Optional(Flag('Hangar: mask CPU features nested KVM cannot emulate; default true')),
  smt: Type.Optional(Flag('accepted for Firecracker clients; each vCPU is its own core')),
  track_dirty_pages: Type.Optional(Flag('accepted for Firecracker clients; no effect')),
}, { additionalProperties: false, description: 'vCPUs and memory; default 1 vCPU, 128 MiB' });
export type VmmMachineConfig = Static<typeof VmmMachineConfig>;

export const VmmBootSource = Type.Object({
  kernel_image_path: HostPath,
  initrd_path: Type.Optional(HostPath),
  boot_args: Type.Optional(Type.String({ maxLength: VMM_MAX_BOOT_ARGS, pattern: '^[^\\x00\\n]*$', description: `a single-line string under ${VMM_MAX_BOOT_ARGS} bytes` })),
}, { additionalProperties: false, description: 'Kernel (ELF vmlinux or bzImage), optional initrd and command line' });
export type VmmBootSource = Static<typeof VmmBootSource>;

const VmmDeviceId = Type.String({ ...DeviceId, description: DEVICE_ID_RULE });

export const VmmDrive = Type.Object({
  drive_id: VmmDeviceId,
  path_on_host: HostPath,
  is_root_device: Type.Optional(Flag('recorded; the guest finds its root through the command line')),
  is_read_only: Type.Optional(Flag('the guest cannot write')),
  serial: Type.Optional(Type.String({ pattern: '^[\\x20-\\x7e]{1,20}$', description: '1-20 printable ASCII characters' })),
}, { additionalProperties: false, description: 'A virtio-blk disk backed by a raw file' });
export type VmmDrive = Static<typeof VmmDrive>;

export const VmmNetworkInterface = Type.Object({
  iface_id: VmmDeviceId,
  host_dev_name: Type.String({ ...TapName, description: TAP_NAME_RULE }),
  guest_mac: Type.Optional(Type.String({ ...MacAddress, description: 'a MAC address like 02:00:00:00:00:01' })),
}, { additionalProperties: false, description: 'A virtio-net NIC on a host TAP device' });
export type VmmNetworkInterface = Static<typeof VmmNetworkInterface>;

export const VmmEntropy = Type.Object({}, { additionalProperties: false, description: 'Adds a virtio-rng device (an empty object)' });
export type VmmEntropy = Static<typeof VmmEntropy>;

/**
 * SendCtrlAltDel: the i8042 key combination (Firecracker's). SendPowerButton: the ACPI power button
 * (the DSDT's Generic Event Device). RequestShutdown: the power button where the guest's OS listens
 * for it, else Ctrl-Alt-Del — the graceful stop the daemon uses.
 */
export const VMM_ACTIONS = ['InstanceStart', 'Pause', 'Resume', 'SendCtrlAltDel', 'SendPowerButton', 'RequestShutdown', 'Stop'] as const;
export const VmmActionType = Type.Union(VMM_ACTIONS.map((a) => Type.Literal(a)), { description: VMM_ACTIONS.join(', ') });
export type VmmActionType = (typeof VMM_ACTIONS)[number];
export const VmmAction = Type.Object({ action_type: VmmActionType }, { additionalProperties: false });
export type VmmAction = Static<typeof VmmAction>;

export const VmmVmStatePatch = Type.Object({
  state: Type.Union([Type.Literal('Paused'), Type.Literal('Resumed')], { description: 'Paused or Resumed' }),
}, { additionalProperties: false });
export type VmmVmStatePatch = Static<typeof VmmVmStatePatch>;

export const VmmSnapshotCreate = Type.Object({
  snapshot_path: HostPath,
  mem_file_path: HostPath,
  snapshot_type: Type.Optional(Type.Literal('Full', { description: 'Full (every snapshot holds all of guest memory)' })),
}, { additionalProperties: false, description: 'Write a snapshot of the paused VM: its state to snapshot_path, guest memory to mem_file_path (both replaced only once complete)' });
export type VmmSnapshotCreate = Static<typeof VmmSnapshotCreate>;

export const VmmSnapshotLoad = Type.Object({
  snapshot_path: HostPath,
  mem_file_path: HostPath,
  resume_vm: Type.Optional(Flag('run the VM once loaded; default false: it stays Paused until Resume')),
}, { additionalProperties: false, description: 'Restore a snapshot into this hangar-vmm before anything was configured; guest memory is mapped from mem_file_path privately and read as the guest touches it' });
export type VmmSnapshotLoad = Static<typeof VmmSnapshotLoad>;

export const VmmState = Type.Union([Type.Literal('Not started'), Type.Literal('Running'), Type.Literal('Paused'), Type.Literal('Stopped')]);
export type VmmState = Static<typeof VmmState>;

export const VmmInstanceInfo = Type.Object({
  app_name: Type.Literal('hangar-vmm'),
  id: Type.String(),
  state: VmmState,
  vmm_version: Type.String(),
});
export type VmmInstanceInfo = Static<typeof VmmInstanceInfo>;

export const VmmVmInfo = Type.Object({
  id: Type.String(),
  state: VmmState,
  vcpu_count: Type.Integer(),
  mem_size_mib: Type.Integer(),
  boot_source: Type.Union([VmmBootSource, Type.Null()]),
  cmdline: Type.Union([Type.String(), Type.Null()], { description: 'the command line the kernel got, with the devices\' fragments' }),
  kernel_kind: Type.Union([Type.Literal('elf'), Type.Literal('bzimage'), Type.Null()]),
  drives: Type.Array(VmmDrive),
  network_interfaces: Type.Array(VmmNetworkInterface),
  pid: Type.Integer(),
});
export type VmmVmInfo = Static<typeof VmmVmInfo>;

export const VmmFault = Type.Object({
  fault_message: Type.String(),
  code: Type.String({ description: 'the HangarError code (src/common/errors.ts)' }),
});
export type VmmFault = Static<typeof VmmFault>;

/** The `--config` file: the same bodies under their resource names; the VM starts at once. */
export const VmmConfigFile = Type.Object({
  'machine-config': Type.Optional(VmmMachineConfig),
  'boot-source': VmmBootSource,
  drives: Type.Optional(Type.Array(VmmDrive, { maxItems: 32, description: 'a list of at most 32 drives' })),
  'network-interfaces': Type.Optional(Type.Array(VmmNetworkInterface, { maxItems: 32, description: 'a list of at most 32 network interfaces' })),
  entropy: Type.Optional(VmmEntropy),
}, { additionalProperties: false });
export type VmmConfigFile = Static<typeof VmmConfigFile>;

interface Route { method: 'get' | 'put' | 'patch'; path: string; summary: string; body?: TSchema; answer?: TSchema; params?: string[] }

const ROUTES: Route[] = [
  { method: 'get', path: '/', summary: 'This hangar-vmm instance', answer: VmmInstanceInfo },
  { method: 'get', path: '/vm', summary: 'The VM: state, configuration, final command line', answer: VmmVmInfo },
  { method: 'patch', path: '/vm', summary: 'Pause or resume the running VM', body: VmmVmStatePatch },
  { method: 'get', path: '/metrics', summary: 'Process, timing, vCPU, bus and device counters', answer: Type.Object({}, { additionalProperties: true }) },
  { method: 'get', path: '/machine-config', summary: 'The machine configuration', answer: VmmMachineConfig },
  { method: 'put', path: '/machine-config', summary: 'Set vCPUs and memory (before InstanceStart)', body: VmmMachineConfig },
  { method: 'put', path: '/boot-source', summary: 'Set the kernel, initrd and command line (before InstanceStart)', body: VmmBootSource },
  { method: 'put', path: '/drives/{drive_id}', summary: 'Add or replace a drive (before InstanceStart)', body: VmmDrive, params: ['drive_id'] },
  { method: 'put', path: '/network-interfaces/{iface_id}', summary: 'Add or replace a NIC (before InstanceStart)', body: VmmNetworkInterface, params: ['iface_id'] },
  { method: 'put', path: '/entropy', summary: 'Add a virtio-rng device (before InstanceStart)', body: VmmEntropy },
  { method: 'put', path: '/actions', summary: 'InstanceStart, Pause, Resume, SendCtrlAltDel, SendPowerButton, RequestShutdown or Stop', body: VmmAction },
  { method: 'put', path: '/snapshot/create', summary: 'Snapshot the paused VM to two files (only while Paused)', body: VmmSnapshotCreate },
  { method: 'put', path: '/snapshot/load', summary: 'Restore a snapshot (only before anything is configured or started)', body: VmmSnapshotLoad },
  { method: 'get', path: '/openapi.json', summary: 'This document', answer: Type.Object({}, { additionalProperties: true }) },
];

/** The OpenAPI 3.0 document of the control API, made from the schemas above. */
export function vmmOpenApi(version: string): Record<string, unknown> {
  const json = (s: TSchema) => ({ 'application/json': { schema: JSON.parse(JSON.stringify(s)) as unknown } });
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of ROUTES) {
    const op: Record<string, unknown> = { summary: r.summary, responses: {} };
    const responses = op.responses as Record<string, unknown>;
    if (r.answer) responses['200'] = { description: 'OK', content: json(r.answer) };
    else responses['204'] = { description: 'Done' };
    responses['4XX'] = { description: 'Refused: bad request (400), unknown resource (404), wrong state (409)', content: json(VmmFault) };
    if (r.body) op.requestBody = { required: r.method !== 'put' || r.path !== '/entropy', content: json(r.body) };
    if (r.params) op.parameters = r.params.map((name) => ({ name, in: 'path', required: true, schema: JSON.parse(JSON.stringify(VmmDeviceId)) as unknown }));
    (paths[r.path] ??= {})[r.method] = op;
  }
  return {
    openapi: '3.0.3',
    info: { title: 'hangar-vmm control API', version, description: 'HTTP/1.1 + JSON on the Unix socket of one hangar-vmm process. Configuration is accepted only before InstanceStart.' },
    paths,
  };
}

/** The bodies hangar-vmm validates, by name (what vmm-schemas.generated.ts carries). */
export const VMM_BODY_SCHEMAS = {
  machineConfig: VmmMachineConfig,
  bootSource: VmmBootSource,
  drive: VmmDrive,
  networkInterface: VmmNetworkInterface,
  entropy: VmmEntropy,
  action: VmmAction,
  vmStatePatch: VmmVmStatePatch,
  configFile: VmmConfigFile,
  snapshotCreate: VmmSnapshotCreate,
  snapshotLoad: VmmSnapshotLoad,
} as const;

/** The text of src/api/vmm-schemas.generated.ts for the schemas above (scripts/gen-vmm-schemas.mjs). */
export function vmmSchemasModule(): string {
  return `/**
 * Generated by scripts/gen-vmm-schemas.mjs from src/api/vmm.ts: do not edit. hangar-vmm checks
 * request bodies against these (src/vmm/schema-check.ts) without loading TypeBox at start-up;
 * test/unit/vmm-config.test.ts fails when this file and src/api/vmm.ts differ.
 */
export const VMM_SCHEMA_JSON = ${JSON.stringify(JSON.parse(JSON.stringify(VMM_BODY_SCHEMAS)), null, 2)} as const;
`;
}
