/**
 * hangar-vmm's configuration: the same objects the control API accepts
 * (Firecracker-style names), checked strictly. A JSON config file for
 * `--config` holds them under their resource names.
 */
import { HangarError } from '../common/errors.js';
import type { DriveConfig, NetConfig } from './devices/host.js';
import { MAX_RAM, MAX_VCPUS, MIN_RAM } from './layout.js';

export interface MachineConfigBody {
  vcpu_count: number;
  mem_size_mib: number;
  /** Hangar extension: mask CPU features nested KVM cannot emulate (default true). */
  conservative_cpuid?: boolean;
}

export interface BootSourceBody {
  kernel_image_path: string;
  initrd_path?: string;
  boot_args?: string;
}

export interface VmmConfigFile {
  'machine-config'?: MachineConfigBody;
  'boot-source': BootSourceBody;
  drives?: DriveConfig[];
  'network-interfaces'?: NetConfig[];
  /** Present (as {}) to add a virtio-rng device, like PUT /entropy. */
  entropy?: Record<string, never>;
}

type Obj = Record<string, unknown>;

function obj(v: unknown, what: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new HangarError('INVALID_ARGUMENT', `${what} must be a JSON object`);
  return v as Obj;
}

function onlyKeys(o: Obj, keys: string[], what: string): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) throw new HangarError('INVALID_ARGUMENT', `${what}: unknown field "${k}"`);
}

function str(o: Obj, k: string, what: string, required: boolean): string | undefined {
  const v = o[k];
  if (v === undefined) {
    if (required) throw new HangarError('INVALID_ARGUMENT', `${what}: field "${k}" is required`);
    return undefined;
  }
  if (typeof v !== 'string' || v.length === 0 || v.length > 4096 || v.includes('\0')) throw new HangarError('INVALID_ARGUMENT', `${what}: "${k}" must be a non-empty string`);
  return v;
}

function bool(o: Obj, k: string, what: string): boolean | undefined {
  const v = o[k];
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw new HangarError('INVALID_ARGUMENT', `${what}: "${k}" must be true or false`);
  return v;
}

function int(o: Obj, k: string, what: string, min: number, max: number): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new HangarError('INVALID_ARGUMENT', `${what}: "${k}" must be a whole number from ${min} to ${max}`);
  return v;
}

const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

export function parseMachineConfig(v: unknown): MachineConfigBody {
  const o = obj(v, 'machine-config');
  onlyKeys(o, ['vcpu_count', 'mem_size_mib', 'conservative_cpuid', 'smt', 'track_dirty_pages'], 'machine-config');
  const r: MachineConfigBody = {
    vcpu_count: int(o, 'vcpu_count', 'machine-config', 1, MAX_VCPUS),
    mem_size_mib: int(o, 'mem_size_mib', 'machine-config', MIN_RAM / 2 ** 20, MAX_RAM / 2 ** 20),
  };
  if (r.mem_size_mib % 2 !== 0) throw new HangarError('INVALID_ARGUMENT', 'machine-config: "mem_size_mib" must be even (2 MiB pages)');
  const c = bool(o, 'conservative_cpuid', 'machine-config');
  if (c !== undefined) r.conservative_cpuid = c;
  return r;
}

export function parseBootSource(v: unknown): BootSourceBody {
  const o = obj(v, 'boot-source');
  onlyKeys(o, ['kernel_image_path', 'initrd_path', 'boot_args'], 'boot-source');
  const r: BootSourceBody = { kernel_image_path: str(o, 'kernel_image_path', 'boot-source', true)! };
  const i = str(o, 'initrd_path', 'boot-source', false);
  if (i !== undefined) r.initrd_path = i;
  if (o.boot_args !== undefined) {
    if (typeof o.boot_args !== 'string' || o.boot_args.length > 4000 || /[\0\n]/.test(o.boot_args)) throw new HangarError('INVALID_ARGUMENT', 'boot-source: "boot_args" must be a single-line string under 4000 bytes');
    r.boot_args = o.boot_args;
  }
  return r;
}

export function parseDrive(v: unknown, idFromPath?: string): DriveConfig {
  const o = obj(v, 'drive');
  onlyKeys(o, ['drive_id', 'path_on_host', 'is_root_device', 'is_read_only', 'serial'], 'drive');
  const id = str(o, 'drive_id', 'drive', true)!;
  if (!ID_RE.test(id)) throw new HangarError('INVALID_ARGUMENT', 'drive: "drive_id" must be 1-64 letters, digits, "-" or "_"');
  if (idFromPath !== undefined && id !== idFromPath) throw new HangarError('INVALID_ARGUMENT', `drive: "drive_id" ${id} does not match the path's ${idFromPath}`);
  const r: DriveConfig = { drive_id: id, path_on_host: str(o, 'path_on_host', 'drive', true)! };
  const root = bool(o, 'is_root_device', 'drive'); if (root !== undefined) r.is_root_device = root;
  const ro = bool(o, 'is_read_only', 'drive'); if (ro !== undefined) r.is_read_only = ro;
  const serial = str(o, 'serial', 'drive', false); if (serial !== undefined) r.serial = serial;
  return r;
}

export function parseNet(v: unknown, idFromPath?: string): NetConfig {
  const o = obj(v, 'network-interface');
  onlyKeys(o, ['iface_id', 'host_dev_name', 'guest_mac'], 'network-interface');
  const id = str(o, 'iface_id', 'network-interface', true)!;
  if (!ID_RE.test(id)) throw new HangarError('INVALID_ARGUMENT', 'network-interface: "iface_id" must be 1-64 letters, digits, "-" or "_"');
  if (idFromPath !== undefined && id !== idFromPath) throw new HangarError('INVALID_ARGUMENT', `network-interface: "iface_id" ${id} does not match the path's ${idFromPath}`);
  const tap = str(o, 'host_dev_name', 'network-interface', true)!;
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(tap)) throw new HangarError('INVALID_ARGUMENT', 'network-interface: "host_dev_name" is not a valid interface name');
  const r: NetConfig = { iface_id: id, host_dev_name: tap };
  const mac = str(o, 'guest_mac', 'network-interface', false);
  if (mac !== undefined) {
    if (!/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(mac)) throw new HangarError('INVALID_ARGUMENT', 'network-interface: "guest_mac" must look like 02:00:00:00:00:01');
    r.guest_mac = mac;
  }
  return r;
}

export function parseConfigFile(v: unknown): VmmConfigFile {
  const o = obj(v, 'config');
  onlyKeys(o, ['machine-config', 'boot-source', 'drives', 'network-interfaces', 'entropy'], 'config');
  const r: VmmConfigFile = { 'boot-source': parseBootSource(o['boot-source']) };
  if (o['machine-config'] !== undefined) r['machine-config'] = parseMachineConfig(o['machine-config']);
  if (o.drives !== undefined) {
    if (!Array.isArray(o.drives)) throw new HangarError('INVALID_ARGUMENT', 'config: "drives" must be a list');
    r.drives = o.drives.map((d) => parseDrive(d));
  }
  if (o['network-interfaces'] !== undefined) {
    if (!Array.isArray(o['network-interfaces'])) throw new HangarError('INVALID_ARGUMENT', 'config: "network-interfaces" must be a list');
    r['network-interfaces'] = o['network-interfaces'].map((n) => parseNet(n));
  }
  if (o.entropy !== undefined) {
    onlyKeys(obj(o.entropy, 'entropy'), [], 'entropy');
    r.entropy = {};
  }
  return r;
}
