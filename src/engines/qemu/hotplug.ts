/**
 * Disks plugged into and out of a running QEMU over QMP, configured exactly
 * as at start (disks.ts):
 *
 *   attach:  blockdev-add file node, blockdev-add format node, device_add
 *            behind a free PCIe root port; a step that fails undoes the ones
 *            before it, so a failed attach leaves the VM as it was.
 *   detach:  device_del, then wait for DEVICE_DELETED (the guest has
 *            released the device; until then QEMU still uses the nodes),
 *            then blockdev-del of the format node and the file node.
 *   resize:  block_resize of the format node after the file has grown: the
 *            guest gets a capacity-change notification.
 */
import { HangarError, toHangarError } from '../../common/errors.js';
import type { DiskAttachment } from '../engine.js';
import { blockdevNodes, diskDevice, diskNames, type DiskIoMode } from './disks.js';
import type { QmpClient, QmpEvent } from './qmp.js';

/** How long the guest may take to let go of an unplugged device (a busy TCG guest is slow). */
export const DEFAULT_UNPLUG_TIMEOUT_MS = 60_000;

interface QomProperty {
  name: string;
  type: string;
}

const PORT_RE = /^disk-port\d+$/;

/**
 * A spare PCIe root port with no device behind it, for a hot-plugged disk or
 * NIC (both share the pool); UNAVAILABLE when all are taken (the VM has as
 * many as it had disks at start, plus spares).
 */
export async function freeRootPort(qmp: QmpClient, what = 'disk'): Promise<string> {
  const children = await qmp.execute<QomProperty[]>('qom-list', { path: '/machine/peripheral' });
  const ports = children.filter((c) => PORT_RE.test(c.name) && c.type.includes('pcie-root-port')).map((c) => c.name);
  const busy = new Set<string>();
  for (const c of children) {
    if (!c.type.startsWith('child<') || PORT_RE.test(c.name)) continue;
    try {
      const bus = await qmp.execute<string>('qom-get', { path: `/machine/peripheral/${c.name}`, property: 'parent_bus' });
      // A root port's bus is "/machine/peripheral/<port>/<port>".
      const m = /^\/machine\/peripheral\/([^/]+)\//.exec(bus);
      if (m) busy.add(m[1]!);
    } catch { /* a device without a bus */ }
  }
  const free = ports.sort((a, b) => Number(a.slice(9)) - Number(b.slice(9))).find((p) => !busy.has(p));
  if (free === undefined) {
    throw new HangarError('UNAVAILABLE', `no free slot for another ${what} in this running VM (it has ${ports.length}, shared by disks and NICs plugged in while it runs); stop the VM, add it, and start it again`);
  }
  return free;
}

/** Plugs `disk` into the running VM; undoes what it did when a step fails. */
export async function hotplugDisk(qmp: QmpClient, disk: DiskAttachment, io: DiskIoMode): Promise<void> {
  const n = diskNames(disk.id);
  const port = await freeRootPort(qmp, 'disk');
  const [fileNode, formatNode] = blockdevNodes(disk, io);
  const added: string[] = [];
  try {
    await qmp.execute('blockdev-add', fileNode);
    added.push(n.file);
    await qmp.execute('blockdev-add', formatNode);
    added.push(n.format);
    await qmp.execute('device_add', diskDevice(disk, 'pci', port));
  } catch (e) {
    for (const node of added.reverse()) {
      try { await qmp.execute('blockdev-del', { 'node-name': node }); } catch { /* best effort: the first error is the one to report */ }
    }
    const err = toHangarError(e, 'ENGINE_FAILED');
    throw new HangarError(err.code, `disk ${disk.id} could not be plugged in: ${err.message}`, { disk: disk.id });
  }
}

/**
 * Unplugs disk `id`: resolves once the guest has released the device and
 * QEMU has closed the file. TIMEOUT when the guest does not let go in time
 * (the device then stays, and a later detach may be tried again).
 */
export async function hotunplugDisk(qmp: QmpClient, id: string, timeoutMs = DEFAULT_UNPLUG_TIMEOUT_MS): Promise<void> {
  const n = diskNames(id);
  await unplugDevice(qmp, n.device, `disk ${id}`, timeoutMs);
  await qmp.execute('blockdev-del', { 'node-name': n.format });
  await qmp.execute('blockdev-del', { 'node-name': n.file });
}

/**
 * device_del of `device`, resolving once the guest has released it
 * (DEVICE_DELETED). TIMEOUT when the guest does not let go in time (the
 * device then stays, and a later try may succeed).
 */
export async function unplugDevice(qmp: QmpClient, device: string, what: string, timeoutMs = DEFAULT_UNPLUG_TIMEOUT_MS): Promise<void> {
  let onEvent: ((ev: QmpEvent) => void) | undefined;
  let onClose: (() => void) | undefined;
  let timer: NodeJS.Timeout | undefined;
  // Listening before the request: the event may arrive before device_del's reply.
  const deleted = new Promise<void>((resolve, reject) => {
    onEvent = (ev) => { if (ev.event === 'DEVICE_DELETED' && ev.data?.device === device) resolve(); };
    qmp.on('event', onEvent);
    onClose = () => reject(new HangarError('UNAVAILABLE', `the VM ended before ${what} was unplugged`));
    qmp.once('close', onClose);
    timer = setTimeout(() => reject(new HangarError('TIMEOUT', `the guest did not release ${what} within ${Math.round(timeoutMs / 1000)} s (it may be in use in the guest); try again later or stop the VM`, { device })), timeoutMs);
  });
  deleted.catch(() => {});
  try {
    try {
      await qmp.execute('device_del', { id: device });
    } catch (e) {
      // A device whose removal is already pending answers with an error: keep waiting for it.
      const desc = String(toHangarError(e).details?.desc ?? '');
      if (!/already in the process of unplug|pending/i.test(desc)) throw e;
    }
    await deleted;
  } finally {
    clearTimeout(timer);
    if (onEvent) qmp.off('event', onEvent);
    if (onClose) qmp.off('close', onClose);
  }
}

/** The guest sees disk `id` at its new size (the file has been grown already). */
export async function resizeDiskOnline(qmp: QmpClient, id: string, sizeBytes: number): Promise<void> {
  await qmp.execute('block_resize', { 'node-name': diskNames(id).format, size: sizeBytes });
}
