/**
 * The one entry point the VMM core calls to build its virtio devices.
 *
 * CONTRACT (for src/vmm/main.ts and the config loader):
 *
 *   createVirtioDevices(config: VirtioConfig, deps: VirtioDeps): VirtioSet
 *
 *   config = { drives: [{id, path, readOnly?, serial?}], nics: [{id, tap, mac?}], rng?: boolean }
 *   deps   = { memory: GuestMemory, slots: MmioSlot[] (layout.ts), irq: (gsi) => IrqLine, log?: Logger }
 *
 * Devices take slots in order: drives first, then NICs, then rng. Each
 * returned entry's `device` is an MmioDevice (virtio-mmio v2, registers in
 * the first 0x200 bytes; register it on the MMIO bus at slot.base with
 * slot.size) wired to `irq(slot.irq)`.
 * `cmdline` is the `virtio_mmio.device=` text a Linux guest needs.
 * `close()` releases files and TAP fds. Everything is synchronous and
 * thread-agnostic: call mmioRead/mmioWrite from whichever thread handles the
 * MMIO exit; the NIC's receive path additionally needs the Node event loop
 * of the thread that created it (it polls the TAP fd).
 */
import { HangarError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import type { GuestMemory, IrqLine } from '../devices/device.js';
import { VirtioBlock } from './blk.js';
import { VIRTIO_MMIO_REGS_SIZE, VirtioMmioDevice } from './mmio.js';
import { TapBackend, VirtioNet, formatMac } from './net.js';
import { VirtioRng } from './rng.js';

export { VIRTIO_MMIO_REGS_SIZE, VirtioMmioDevice } from './mmio.js';
export { VirtioBlock } from './blk.js';
export { VirtioNet, TapBackend } from './net.js';
export { VirtioRng } from './rng.js';

export interface VirtioDriveConfig {
  id: string;
  path: string;
  readOnly?: boolean;
  /** GET_ID answer, at most 20 printable ASCII characters; defaults to id. */
  serial?: string;
}

export interface VirtioNicConfig {
  id: string;
  /** TAP interface name; attached if it exists, created (non-persistent) otherwise. */
  tap: string;
  /** "52:54:00:12:34:56"; a random locally administered one when absent. */
  mac?: string;
}

export interface VirtioConfig {
  drives: VirtioDriveConfig[];
  nics: VirtioNicConfig[];
  rng?: boolean;
}

/** One virtio-mmio window the VMM's layout reserves (the shape of layout.ts's MmioSlot). */
export interface VirtioSlot {
  base: number;
  /** Bytes reserved at base (at least VIRTIO_MMIO_REGS_SIZE). */
  size: number;
  /** GSI of the device's interrupt line. */
  irq: number;
}

export interface VirtioDeps {
  memory: GuestMemory;
  /** Free virtio-mmio slots from layout.ts (virtioMmioSlot(i)), used in order. */
  slots: readonly VirtioSlot[];
  /** The interrupt line for a GSI (a KvmIrqLine). */
  irq: (gsi: number) => IrqLine;
  log?: Logger;
  /** See VirtioMmioOptions.irqMode; 'level' unless the core delivers edges only (irqfd). */
  irqMode?: 'level' | 'edge';
}

export interface PlacedVirtioDevice {
  kind: 'blk' | 'net' | 'rng';
  /** Drive or NIC id; 'rng' for the rng. */
  id: string;
  slot: VirtioSlot;
  device: VirtioMmioDevice;
  /** For NICs: the MAC in use (generated when the config gave none). */
  mac?: string;
}

export interface VirtioSet {
  devices: PlacedVirtioDevice[];
  /** `virtio_mmio.device=...` arguments for a Linux guest's command line. */
  cmdline: string;
  /** Closes every backing file and TAP fd. */
  close(): void;
}

/**
 * Builds every virtio device the config asks for and places each in the
 * next free slot. Fails as a whole (closing what it opened) on a bad config,
 * a missing file or TAP, or too few slots.
 */
export function createVirtioDevices(config: VirtioConfig, deps: VirtioDeps): VirtioSet {
  for (const s of deps.slots) {
    if (s.size < VIRTIO_MMIO_REGS_SIZE) throw new HangarError('INVALID_ARGUMENT', `virtio-mmio slot at 0x${s.base.toString(16)} has ${s.size} bytes, needs ${VIRTIO_MMIO_REGS_SIZE}`);
  }
  const wanted = config.drives.length + config.nics.length + (config.rng ? 1 : 0);
  if (wanted > deps.slots.length) {
    throw new HangarError('RESOURCE_EXHAUSTED', `${wanted} virtio devices requested, the layout has ${deps.slots.length} virtio-mmio slots`);
  }
  const ids = new Set<string>();
  for (const d of [...config.drives, ...config.nics]) {
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(d.id)) throw new HangarError('INVALID_ARGUMENT', `device id "${d.id}" must be 1-64 of A-Z a-z 0-9 _ . -`);
    if (ids.has(d.id)) throw new HangarError('INVALID_ARGUMENT', `device id "${d.id}" is used twice`);
    ids.add(d.id);
  }
  const devices: PlacedVirtioDevice[] = [];
  const place = (kind: PlacedVirtioDevice['kind'], id: string, build: () => VirtioMmioDevice, mac?: string): void => {
    const slot = deps.slots[devices.length]!;
    const device = build();
    devices.push({ kind, id, slot, device, ...(mac ? { mac } : {}) });
  };
  const transport = (model: VirtioBlock | VirtioNet | VirtioRng): VirtioMmioDevice => {
    const slot = deps.slots[devices.length]!;
    return new VirtioMmioDevice(model, deps.memory, deps.irq(slot.irq), {
      ...(deps.log ? { log: deps.log } : {}),
      ...(deps.irqMode ? { irqMode: deps.irqMode } : {}),
    });
  };
  try {
    for (const d of config.drives) {
      place('blk', d.id, () => transport(new VirtioBlock(d)));
    }
    for (const n of config.nics) {
      const backend = TapBackend.open(n.tap);
      let model: VirtioNet;
      try {
        model = new VirtioNet(n.mac ? { id: n.id, mac: n.mac } : { id: n.id }, backend);
      } catch (e) {
        backend.close();
        throw e;
      }
      place('net', n.id, () => transport(model), formatMac(model.mac));
    }
    if (config.rng) place('rng', 'rng', () => transport(new VirtioRng()));
  } catch (e) {
    for (const d of devices) d.device.close();
    throw e;
  }
  const cmdline = devices.map((d) => `virtio_mmio.device=${d.slot.size / 1024}K@0x${d.slot.base.toString(16)}:${d.slot.irq}`).join(' ');
  return {
    devices,
    cmdline,
    close: () => {
      for (const d of devices) {
        try {
          d.device.close();
        } catch (err) {
          deps.log?.warn({ device: d.device.name, err: String(err) }, 'virtio: close failed');
        }
      }
    },
  };
}
