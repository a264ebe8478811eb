/**
 * The `manifest` section of a snapshot file: JSON that says what machine the
 * snapshot is of (vCPUs, memory size, kernel command line, its drives, NICs
 * and rng, with what the guest knows of them: a disk's capacity, a NIC's
 * MAC) and the state of every device model. It makes the file
 * self-describing: a fresh hangar-vmm needs nothing else to rebuild the
 * machine.
 *
 * parseManifest checks every field (types, ranges, counts) before anything
 * is built; device states are checked again, field by field, by each
 * device's restoreState / restore.
 */
import { VMM_SCHEMA_JSON } from '../../api/vmm-schemas.generated.js';
import type { VmmDrive } from '../../api/vmm.js';
import { check } from '../config.js';
import { MAX_RAM, MAX_VCPUS, MIN_RAM, VIRTIO_MMIO_SLOTS } from '../layout.js';
import type { JsonSchema } from '../schema-check.js';
import type { VirtioMmioSnapshot } from '../virtio/mmio.js';
import { bool, int, obj, onlyKeys, stateError, str } from './check.js';

export const MANIFEST_FORMAT = 'hangar-vmm-snapshot';
/** The manifest's JSON is at most this long (a full UART receive queue is ~250 KiB of it). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_CMDLINE = 4096;

export interface ManifestDrive extends VmmDrive {
  /** The disk's size in 512-byte sectors when the snapshot was taken: the guest knows it. */
  capacity_sectors: number;
}

export interface ManifestNet {
  iface_id: string;
  host_dev_name: string;
  /** The MAC the guest knows (generated at first boot when none was configured). */
  guest_mac: string;
}

export interface ManifestVirtio {
  kind: 'blk' | 'net' | 'rng';
  id: string;
  state: VirtioMmioSnapshot;
}

export interface SnapshotManifest {
  format: typeof MANIFEST_FORMAT;
  vmm_version: string;
  created_at: string;
  /** 32 hex digits; the memory file's header carries the same id. */
  snapshot_id: string;
  machine: {
    vcpus: number;
    mem_bytes: number;
    conservative_cpuid: boolean;
    cmdline: string;
    kernel_kind: 'elf' | 'bzimage';
    kernel_entry: number;
    aps_at_entry: boolean;
    /** Guest TSC rate when saved; a host with a different one makes guest time run at another speed. */
    tsc_khz: number;
  };
  drives: ManifestDrive[];
  nets: ManifestNet[];
  rng: boolean;
  devices: {
    serial: unknown;
    i8042: unknown;
    rtc: unknown;
    virtio: ManifestVirtio[];
  };
}

const SCHEMAS = VMM_SCHEMA_JSON as unknown as Record<keyof typeof VMM_SCHEMA_JSON, JsonSchema>;
const HEX64 = /^0x[0-9a-f]{1,16}$/;

function virtioState(v: unknown, where: string): VirtioMmioSnapshot {
  const o = obj(v, where);
  onlyKeys(o, ['version', 'kind', 'status', 'deviceFeaturesSel', 'driverFeaturesSel', 'driverFeatures', 'queueSel', 'interruptStatus', 'configGeneration', 'queues'], where);
  if (o.version !== 1) throw stateError(where, `transport state version ${JSON.stringify(o.version)} is not supported`);
  str(o.kind, 64, `${where} kind`);
  for (const k of ['status', 'deviceFeaturesSel', 'driverFeaturesSel', 'queueSel', 'interruptStatus', 'configGeneration']) int(o[k], 0, 0xffffffff, `${where} ${k}`);
  if (typeof o.driverFeatures !== 'string' || !HEX64.test(o.driverFeatures)) throw stateError(`${where} driverFeatures`, 'must be a 64-bit hex value');
  if (!Array.isArray(o.queues) || o.queues.length > 16) throw stateError(`${where} queues`, 'must be a list of at most 16 queues');
  o.queues.forEach((q: unknown, i: number) => {
    const w = `${where} queue ${i}`;
    const qo = obj(q, w);
    onlyKeys(qo, ['num', 'ready', 'desc', 'driver', 'device', 'lastAvail', 'usedIdx', 'signalledUsed'], w);
    int(qo.num, 0, 0x8000, `${w} num`);
    bool(qo.ready, `${w} ready`);
    for (const k of ['desc', 'driver', 'device']) if (typeof qo[k] !== 'string' || !HEX64.test(qo[k] as string)) throw stateError(`${w} ${k}`, 'must be a 64-bit hex value');
    for (const k of ['lastAvail', 'usedIdx', 'signalledUsed']) int(qo[k], 0, 0xffff, `${w} ${k}`);
  });
  return o as unknown as VirtioMmioSnapshot;
}

/** Parses and checks the manifest section; every refusal is an INVALID_ARGUMENT naming the field. */
export function parseManifest(raw: Buffer): SnapshotManifest {
  if (raw.length > MAX_MANIFEST_BYTES) throw stateError('manifest', `is ${raw.length} bytes (at most ${MAX_MANIFEST_BYTES})`);
  let v: unknown;
  try { v = JSON.parse(raw.toString('utf8')); } catch { throw stateError('manifest', 'is not valid JSON'); }
  const o = obj(v, 'manifest');
  onlyKeys(o, ['format', 'vmm_version', 'created_at', 'snapshot_id', 'machine', 'drives', 'nets', 'rng', 'devices'], 'manifest');
  if (o.format !== MANIFEST_FORMAT) throw stateError('manifest format', `must be "${MANIFEST_FORMAT}"`);
  str(o.vmm_version, 64, 'manifest vmm_version');
  str(o.created_at, 64, 'manifest created_at');
  if (typeof o.snapshot_id !== 'string' || !/^[0-9a-f]{32}$/.test(o.snapshot_id)) throw stateError('manifest snapshot_id', 'must be 32 hex digits');

  const m = obj(o.machine, 'machine');
  onlyKeys(m, ['vcpus', 'mem_bytes', 'conservative_cpuid', 'cmdline', 'kernel_kind', 'kernel_entry', 'aps_at_entry', 'tsc_khz'], 'machine');
  int(m.vcpus, 1, MAX_VCPUS, 'machine vcpus');
  const mem = int(m.mem_bytes, MIN_RAM, MAX_RAM, 'machine mem_bytes');
  if (mem % (2 * 1024 * 1024) !== 0) throw stateError('machine mem_bytes', 'must be a multiple of 2 MiB');
  bool(m.conservative_cpuid, 'machine conservative_cpuid');
  str(m.cmdline, MAX_CMDLINE, 'machine cmdline');
  if (m.kernel_kind !== 'elf' && m.kernel_kind !== 'bzimage') throw stateError('machine kernel_kind', 'must be elf or bzimage');
  int(m.kernel_entry, 0, mem - 1, 'machine kernel_entry');
  bool(m.aps_at_entry, 'machine aps_at_entry');
  int(m.tsc_khz, 0, 100_000_000, 'machine tsc_khz');

  if (!Array.isArray(o.drives) || !Array.isArray(o.nets)) throw stateError('manifest', 'drives and nets must be lists');
  const rng = bool(o.rng, 'manifest rng');
  if (o.drives.length + o.nets.length + (rng ? 1 : 0) > VIRTIO_MMIO_SLOTS) throw stateError('manifest', `more virtio devices than the ${VIRTIO_MMIO_SLOTS} slots`);
  o.drives.forEach((d: unknown, i: number) => {
    const dobj = obj(d, `drive ${i}`);
    const { capacity_sectors: cap, ...rest } = dobj;
    check(SCHEMAS.drive, rest, `snapshot drive ${i}`);
    int(cap, 0, Number.MAX_SAFE_INTEGER, `drive ${i} capacity_sectors`);
  });
  o.nets.forEach((n: unknown, i: number) => {
    check(SCHEMAS.networkInterface, n, `snapshot network interface ${i}`);
    if (typeof (n as ManifestNet).guest_mac !== 'string') throw stateError(`network interface ${i} guest_mac`, 'is required');
  });

  const d = obj(o.devices, 'devices');
  onlyKeys(d, ['serial', 'i8042', 'rtc', 'virtio'], 'devices');
  for (const k of ['serial', 'i8042', 'rtc']) obj(d[k], `device ${k}`);
  if (!Array.isArray(d.virtio)) throw stateError('devices virtio', 'must be a list');
  const expected = [...(o.drives as ManifestDrive[]).map((x) => ['blk', x.drive_id]), ...(o.nets as ManifestNet[]).map((x) => ['net', x.iface_id]), ...(rng ? [['rng', 'rng']] : [])];
  if (d.virtio.length !== expected.length) throw stateError('devices virtio', `has ${d.virtio.length} devices, the machine ${expected.length}`);
  d.virtio.forEach((x: unknown, i: number) => {
    const xo = obj(x, `virtio device ${i}`);
    onlyKeys(xo, ['kind', 'id', 'state'], `virtio device ${i}`);
    if (xo.kind !== expected[i]![0] || xo.id !== expected[i]![1]) throw stateError(`virtio device ${i}`, `is ${String(xo.kind)} "${String(xo.id)}", expected ${expected[i]![0]} "${expected[i]![1]}" (slot order: drives, NICs, rng)`);
    virtioState(xo.state, `virtio device ${i} (${expected[i]![1]})`);
  });
  return o as unknown as SnapshotManifest;
}
