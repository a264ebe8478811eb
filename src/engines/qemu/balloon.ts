/**
 * The memory balloon every QEMU VM gets, used for reading only: Hangar never
 * inflates it. With it the guest's virtio_balloon driver can tell how much
 * of its memory it uses (statistics the monitoring sampler reads, see
 * device-counters.ts), and hand pages it has freed back to the host (free
 * page reporting), so an idle guest's RSS shrinks after it released memory.
 *
 * QEMU only asks the guest for statistics once a polling interval is set,
 * which is done over QMP the first time the counters are read.
 */
import { BALLOON_QOM_PATH, type QmpExecute } from './device-counters.js';

/** Seconds between two statistics requests to the guest: a couple per sampler tick at the fastest setting. */
export const BALLOON_STATS_INTERVAL_S = 2;

/**
 * The balloon's -device option: PCI on q35, virtio-mmio on microvm. Its id
 * makes BALLOON_QOM_PATH. It is added after every other device so that the
 * PCI slots (and with them the guest's NIC names) of the others stay put.
 */
export function balloonArgs(bus: 'pci' | 'device'): string[] {
  return ['-device', `virtio-balloon-${bus},id=${BALLOON_QOM_PATH.split('/').pop()!},free-page-reporting=on`];
}

/** Asks QEMU to poll the guest's balloon statistics; until then guest-stats stay empty. */
export async function enableBalloonStats(execute: QmpExecute): Promise<void> {
  await execute('qom-set', { path: BALLOON_QOM_PATH, property: 'guest-stats-polling-interval', value: BALLOON_STATS_INTERVAL_S }, { timeoutMs: 2000 });
}
