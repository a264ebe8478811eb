/**
 * NICs plugged into and out of a running QEMU over QMP, named as at start
 * (cmdline.ts: netdev `net-ID`, device `dev-net-ID`):
 *
 *   attach:  getfd (the TAP's descriptor travels with the command,
 *            SCM_RIGHTS), netdev_add tap fd=…, device_add virtio-net-pci
 *            behind a spare PCIe root port (the pool disks use too); a step
 *            that fails undoes the ones before it.
 *   detach:  device_del, wait for DEVICE_DELETED (the guest has let go),
 *            then netdev_del, which closes QEMU's copy of the TAP.
 *
 * The confined QEMU cannot open /dev/net/tun; the daemon opened the TAP and
 * lends QEMU the descriptor, as at start.
 */
import { HangarError, toHangarError } from '../../common/errors.js';
import type { NicAttachment } from '../engine.js';
import { DEFAULT_UNPLUG_TIMEOUT_MS, freeRootPort, unplugDevice } from './hotplug.js';
import type { QmpClient } from './qmp.js';

export function nicNames(id: string): { netdev: string; device: string; fd: string } {
  return { netdev: `net-${id}`, device: `dev-net-${id}`, fd: `tap-${id}` };
}

/** Plugs `nic` (whose TAP is open as `tapFd`, with virtio-net headers) into the running VM. */
export async function hotplugNic(qmp: QmpClient, nic: NicAttachment, tapFd: number): Promise<void> {
  const n = nicNames(nic.id);
  const port = await freeRootPort(qmp, 'NIC');
  let step: 'fd' | 'netdev' | 'device' = 'fd';
  try {
    await qmp.executeWithFd('getfd', { fdname: n.fd }, tapFd);
    step = 'netdev';
    // netdev_add takes the named descriptor over (QEMU's copy is closed with the netdev).
    await qmp.execute('netdev_add', { type: 'tap', id: n.netdev, fd: n.fd });
    step = 'device';
    await qmp.execute('device_add', { driver: 'virtio-net-pci', netdev: n.netdev, id: n.device, mac: nic.mac.toLowerCase(), bus: port });
  } catch (e) {
    if (step === 'device') await qmp.execute('netdev_del', { id: n.netdev }).catch(() => undefined);
    if (step === 'netdev') await qmp.execute('closefd', { fdname: n.fd }).catch(() => undefined);
    const err = toHangarError(e, 'ENGINE_FAILED');
    throw new HangarError(err.code, `NIC ${nic.id} could not be plugged in: ${err.message}`, { nic: nic.id });
  }
}

/** Unplugs NIC `id`: resolves once the guest has released it and QEMU has closed the TAP. */
export async function hotunplugNic(qmp: QmpClient, id: string, timeoutMs = DEFAULT_UNPLUG_TIMEOUT_MS): Promise<void> {
  const n = nicNames(id);
  await unplugDevice(qmp, n.device, `NIC ${id}`, timeoutMs);
  await qmp.execute('netdev_del', { id: n.netdev });
}
