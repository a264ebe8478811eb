/**
 * NICs plugged into and out of a running QEMU over QMP, named as at start
 * (cmdline.ts: netdev `net-ID`, device `dev-net-ID`):
 *
 *   attach:  getfd (the TAP's descriptor travels with the command,
 *            SCM_RIGHTS), netdev_add tap fd=…, device_add virtio-net-pci
 *            behind a spare PCIe root port (the pool disks use too); a step
 *            that fails undoes the ones before it.
 *            A user-mode NIC (QEMU's own NAT, no TAP) is a netdev_add of type
 *            user with its forwards, then the same device_add.
 *   detach:  device_del, wait for DEVICE_DELETED (the guest has let go),
 *            then netdev_del, which closes QEMU's copy of the TAP.
 *
 * The confined QEMU cannot open /dev/net/tun; the daemon opened the TAP and
 * lends QEMU the descriptor, as at start.
 */
import { HangarError, toHangarError } from '../../common/errors.js';
import type { HostForward, NicAttachment } from '../engine.js';
import { hostfwdRule } from './cmdline.js';
import { DEFAULT_UNPLUG_TIMEOUT_MS, freeRootPort, unplugDevice } from './hotplug.js';
import type { QmpClient } from './qmp.js';

export function nicNames(id: string): { netdev: string; device: string; fd: string } {
  return { netdev: `net-${id}`, device: `dev-net-${id}`, fd: `tap-${id}` };
}

/**
 * Plugs `nic` into the running VM: a TAP NIC with its TAP open as `tapFd`
 * (with virtio-net headers), or a user-mode NIC (`nic.user`, no descriptor).
 */
export async function hotplugNic(qmp: QmpClient, nic: NicAttachment, tapFd: number | null): Promise<void> {
  const n = nicNames(nic.id);
  const port = await freeRootPort(qmp, 'NIC');
  let step: 'fd' | 'netdev' | 'device' = nic.user ? 'netdev' : 'fd';
  try {
    if (nic.user) {
      await qmp.execute('netdev_add', { type: 'user', id: n.netdev, ...(nic.user.forwards.length ? { hostfwd: nic.user.forwards.map((f) => ({ str: hostfwdRule(f) })) } : {}) });
    } else {
      if (tapFd === null) throw new HangarError('INTERNAL', `NIC ${nic.id}: no TAP descriptor to plug in`);
      await qmp.executeWithFd('getfd', { fdname: n.fd }, tapFd);
      step = 'netdev';
      // netdev_add takes the named descriptor over (QEMU's copy is closed with the netdev).
      await qmp.execute('netdev_add', { type: 'tap', id: n.netdev, fd: n.fd });
    }
    step = 'device';
    await qmp.execute('device_add', { driver: 'virtio-net-pci', netdev: n.netdev, id: n.device, mac: nic.mac.toLowerCase(), bus: port });
  } catch (e) {
    if (step === 'device') await qmp.execute('netdev_del', { id: n.netdev }).catch(() => undefined);
    if (step === 'netdev' && !nic.user) await qmp.execute('closefd', { fdname: n.fd }).catch(() => undefined);
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

/**
 * hostfwd_add / hostfwd_remove exist only as monitor (HMP) commands; QMP runs
 * them through human-monitor-command, which answers with the text the monitor
 * would print: nothing (add) or "… removed" (remove) on success, the reason otherwise.
 */
async function hmp(qmp: QmpClient, line: string, success = /^$/): Promise<void> {
  const text = (await qmp.execute<string>('human-monitor-command', { 'command-line': line })).trim();
  if (!success.test(text)) throw new HangarError('ENGINE_FAILED', `QEMU refused "${line}": ${text}`, { command: line });
}

export async function addHostForward(qmp: QmpClient, nicId: string, f: HostForward): Promise<void> {
  await hmp(qmp, `hostfwd_add ${nicNames(nicId).netdev} ${hostfwdRule(f)}`);
}

export async function removeHostForward(qmp: QmpClient, nicId: string, f: HostForward): Promise<void> {
  await hmp(qmp, `hostfwd_remove ${nicNames(nicId).netdev} ${f.proto}:${f.address}:${f.hostPort}`, /^host forwarding rule for \S+ removed$/);
}
