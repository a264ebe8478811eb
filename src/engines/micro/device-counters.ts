/**
 * Disk counters of a micro-engine VM, from hangar-vmm's own GET /metrics:
 * each virtio-blk device appears there as `virtio-blk:<drive id>` with the
 * requests it completed and the bytes it moved. The drive id is the VM's
 * disk id (engine.ts puts each disk as a drive of that id). hangar-vmm has
 * no balloon, so guest memory is unknown (null).
 */
import type { DeviceCounters, DiskCounters } from '../engine.js';

const BLK_PREFIX = 'virtio-blk:';

const count = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0);

/** Disks from a GET /metrics answer, in the order hangar-vmm lists its devices. */
export function parseVmmDiskCounters(metrics: unknown): DiskCounters[] {
  const devices = (metrics as { vm?: { devices?: unknown } } | null)?.vm?.devices;
  if (typeof devices !== 'object' || devices === null) return [];
  const out: DiskCounters[] = [];
  for (const [name, m] of Object.entries(devices as Record<string, Record<string, unknown>>)) {
    if (!name.startsWith(BLK_PREFIX) || typeof m !== 'object' || m === null) continue;
    out.push({
      id: name.slice(BLK_PREFIX.length),
      readBytes: count(m.read_bytes), writeBytes: count(m.write_bytes),
      readOps: count(m.read_requests), writeOps: count(m.write_requests),
    });
  }
  return out;
}

/** What a micro VM's counters read as, from the answer of its GET /metrics. */
export function microDeviceCounters(metrics: unknown): DeviceCounters {
  return { disks: parseVmmDiskCounters(metrics), guestMemory: null };
}
