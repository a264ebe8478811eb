/**
 * Builds a VM's virtio devices: createVirtioDevices(host, cfg) is what the
 * device manager calls while the machine is built.
 *
 * Devices take virtio-mmio slots through host.attachVirtioMmio in this
 * order: drives, then network interfaces, then the rng (when cfg.rng). The
 * host registers each on the MMIO bus and describes it in the DSDT.
 *
 * Queue notifications arrive as MMIO exits on QUEUE_NOTIFY by default. With
 * `opts.ioeventfd` (or HANGAR_VIRTIO_IOEVENTFD=1) the factory also asks the
 * host for one ioeventfd per queue, so KVM completes the notify write itself
 * and the device runs without the vCPU waiting. It is off by default because
 * on our hosts it measured slower for a polling guest (blk 4 KiB QD1: 8.5k
 * IOPS through ioeventfd against 14k through exits; see docs/virtio.md).
 *
 * Device models are synchronous and keep no thread affinity, except that a
 * NIC watches its TAP fd on the event loop of the thread that created it
 * (the device thread). `close()` on the result releases files and TAP fds.
 */
import { DEVICE_ID_RULE, isDeviceId } from '../../api/name-rules.js';
import { HangarError } from '../../common/errors.js';
import type { DeviceHost, DriveConfig, NetConfig } from '../devices/host.js';
import { VirtioBlock } from './blk.js';
import type { BlkFastShare } from './blk-fast.js';
import type { VirtioIrqShare } from './interrupt-state.js';
import { REG, VIRTIO_MMIO_REGS_SIZE, VirtioMmioDevice, type VirtioDevice } from './mmio.js';
import type { NetFastShare } from './net-fast.js';
import { TapBackend, VirtioNet, formatMac } from './net.js';
import { VirtioRng } from './rng.js';

export interface VirtioDevicesConfig {
  drives: DriveConfig[];
  nets: NetConfig[];
  /** Add a virtio-rng device (Firecracker calls it "entropy"). */
  rng?: boolean;
}

export interface PlacedVirtioDevice {
  kind: 'blk' | 'net' | 'rng';
  /** drive_id, iface_id, or 'rng'. */
  id: string;
  base: number;
  irq: number;
  device: VirtioMmioDevice;
  /** NICs: the MAC in use (generated when the config gave none). */
  mac?: string;
  /** Drives: what a vCPU thread needs to serve the request queue itself (virtio/blk-fast.ts); absent when off. */
  fast?: BlkFastShare;
  /** NICs: what a vCPU thread needs to serve the transmit queue itself (virtio/net-fast.ts); absent when off. */
  netFast?: NetFastShare;
  /** What a vCPU thread needs to answer the interrupt registers and raise the interrupt (virtio/interrupt-state.ts). */
  irqShare?: VirtioIrqShare;
}

export interface VirtioSet {
  devices: PlacedVirtioDevice[];
  /** Closes every backing file, TAP fd and ioeventfd. */
  close(): void;
}

/** Checks the whole config before anything is opened, so a bad entry leaves nothing half made. */
function validate(cfg: VirtioDevicesConfig): void {
  const ids = new Set<string>();
  const check = (id: unknown, what: string) => {
    if (!isDeviceId(id)) throw new HangarError('INVALID_ARGUMENT', `${what} id "${String(id)}" must be ${DEVICE_ID_RULE}`);
    if (ids.has(id)) throw new HangarError('INVALID_ARGUMENT', `device id "${id}" is used twice`);
    ids.add(id);
  };
  for (const d of cfg.drives) {
    check(d.drive_id, 'drive');
    if (typeof d.path_on_host !== 'string' || d.path_on_host.length === 0) throw new HangarError('INVALID_ARGUMENT', `drive ${d.drive_id}: path_on_host is required`);
  }
  for (const n of cfg.nets) {
    check(n.iface_id, 'network interface');
    if (typeof n.host_dev_name !== 'string') throw new HangarError('INVALID_ARGUMENT', `network interface ${n.iface_id}: host_dev_name is required`);
  }
}

export interface VirtioFactoryOptions {
  /** Deliver queue notifications through ioeventfds where the host has them (default: HANGAR_VIRTIO_IOEVENTFD === '1'). */
  ioeventfd?: boolean;
}

export function createVirtioDevices(host: DeviceHost, cfg: VirtioDevicesConfig, opts: VirtioFactoryOptions = {}): VirtioSet {
  const useIoeventfd = opts.ioeventfd ?? process.env.HANGAR_VIRTIO_IOEVENTFD === '1';
  validate(cfg);
  const devices: PlacedVirtioDevice[] = [];
  const notifiers: Array<{ close(): void }> = [];
  const log = host.log.child({ component: 'virtio' });

  const attach = (kind: PlacedVirtioDevice['kind'], id: string, model: VirtioDevice, mac?: string): void => {
    let placed: { device: VirtioMmioDevice; slot: { base: number; size: number; irq: number } };
    try {
      placed = host.attachVirtioMmio((slot, irq) => {
        if (slot.size < VIRTIO_MMIO_REGS_SIZE) throw new HangarError('INTERNAL', `virtio-mmio slot of ${slot.size} bytes is smaller than ${VIRTIO_MMIO_REGS_SIZE}`);
        return new VirtioMmioDevice(model, host.memory, irq, { log });
      });
    } catch (e) {
      model.close();
      throw e;
    }
    // blk, and net's transmit queue: the vCPU thread that takes the notify exit serves the queue
    // (not with ioeventfds: then no exit reaches a vCPU thread).
    const notifyAddr = placed.slot.base + REG.QUEUE_NOTIFY;
    const fast = !useIoeventfd && model instanceof VirtioBlock ? model.fastShare(notifyAddr) : undefined;
    const netFast = !useIoeventfd && model instanceof VirtioNet ? model.fastShare(notifyAddr) : undefined;
    const irqShare = placed.device.irqShare(placed.slot.base);
    devices.push({
      kind, id, base: placed.slot.base, irq: placed.slot.irq, device: placed.device, ...(mac ? { mac } : {}),
      ...(fast ? { fast } : {}), ...(netFast ? { netFast } : {}), ...(irqShare ? { irqShare } : {}),
    });
    // Optional: a queue notify that KVM completes in the kernel and signals on an eventfd.
    if (!useIoeventfd) return;
    for (let q = 0; q < model.queueMaxSizes.length; q++) {
      const n = host.ioEventFd?.(placed.slot.base + REG.QUEUE_NOTIFY, 4, q, () => placed.device.notifyQueue(q));
      if (n) notifiers.push(n);
    }
  };

  const closeAll = (): void => {
    for (const n of notifiers.splice(0)) n.close();
    for (const d of devices) {
      try {
        d.device.close();
      } catch (err) {
        log.warn({ device: d.device.name, err: String(err) }, 'virtio: close failed');
      }
    }
  };

  try {
    for (const d of cfg.drives) {
      attach('blk', d.drive_id, new VirtioBlock({
        id: d.drive_id, path: d.path_on_host, readOnly: d.is_read_only ?? false, ...(d.serial !== undefined ? { serial: d.serial } : {}),
      }));
    }
    for (const n of cfg.nets) {
      const backend = TapBackend.open(n.host_dev_name);
      let model: VirtioNet;
      try {
        model = new VirtioNet(n.guest_mac ? { id: n.iface_id, mac: n.guest_mac } : { id: n.iface_id }, backend);
      } catch (e) {
        backend.close();
        throw e;
      }
      attach('net', n.iface_id, model, formatMac(model.mac));
    }
    if (cfg.rng) attach('rng', 'rng', new VirtioRng());
  } catch (e) {
    closeAll();
    throw e;
  }
  log.info({ devices: devices.map((d) => ({ kind: d.kind, id: d.id, base: `0x${d.base.toString(16)}`, irq: d.irq, ...(d.mac ? { mac: d.mac } : {}) })) }, 'virtio devices attached');
  return { devices, close: closeAll };
}
