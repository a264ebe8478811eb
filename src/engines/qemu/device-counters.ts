/**
 * Reads QEMU's own counters for monitoring: per-disk I/O from
 * `query-blockstats`, and guest-reported memory from the balloon device's
 * statistics when the VM has a balloon. The parsers are pure functions over
 * QMP answers so they can be tested against answers recorded from a real
 * QEMU (test/fixtures/monitor/).
 */
import type { DeviceCounters, DiskCounters } from '../engine.js';
import { enableBalloonStats } from './balloon.js';

/** What a command sender needs to offer; the handle passes its QMP client's execute. */
export type QmpExecute = <T>(cmd: string, args?: Record<string, unknown>, opts?: { timeoutMs?: number }) => Promise<T>;

/** Where our command line puts a balloon (when a VM has one): its QOM path. */
export const BALLOON_QOM_PATH = '/machine/peripheral/balloon0';

const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0);

/**
 * The disk id behind one query-blockstats entry: our format node is
 * `disk-<id>` and the device `dev-disk-<id>` (qemu/disks.ts); the CD-ROM
 * device is `dev-cdrom`. Entries that are none of ours are skipped.
 */
export function diskIdOfBlockstat(e: { device?: unknown; 'node-name'?: unknown; qdev?: unknown }): string | null {
  const node = typeof e['node-name'] === 'string' ? e['node-name'] : '';
  if (node.startsWith('disk-')) return node.slice('disk-'.length);
  const qdev = typeof e.qdev === 'string' ? e.qdev : '';
  const m = /\/machine\/peripheral\/dev-(disk-)?([A-Za-z0-9_.-]+)(\/|$)/.exec(qdev);
  if (m) return m[2]!;
  const dev = typeof e.device === 'string' ? e.device : '';
  return dev !== '' ? dev : null;
}

/** Disks from a query-blockstats answer, in QEMU's order. */
export function parseBlockstats(answer: unknown): DiskCounters[] {
  if (!Array.isArray(answer)) return [];
  const out: DiskCounters[] = [];
  for (const e of answer as Array<Record<string, unknown>>) {
    if (typeof e !== 'object' || e === null) continue;
    const id = diskIdOfBlockstat(e);
    const s = e.stats as Record<string, unknown> | undefined;
    if (id === null || !s) continue;
    out.push({ id, readBytes: num(s.rd_bytes), writeBytes: num(s.wr_bytes), readOps: num(s.rd_operations), writeOps: num(s.wr_operations) });
  }
  return out;
}

/**
 * Guest memory from the balloon's `guest-stats` property. Stats the guest
 * has not reported are absent or -1; without total and available (or free)
 * memory the guest's use is unknown: null.
 */
export function parseBalloonGuestStats(answer: unknown): DeviceCounters['guestMemory'] {
  if (typeof answer !== 'object' || answer === null) return null;
  const stats = (answer as { stats?: Record<string, unknown> }).stats;
  const lastUpdate = (answer as { 'last-update'?: unknown })['last-update'];
  // last-update 0: the guest has never sent statistics.
  if (!stats || lastUpdate === 0) return null;
  const known = (k: string): number | null => {
    const v = stats[k];
    return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : null;
  };
  const total = known('stat-total-memory');
  const avail = known('stat-available-memory') ?? known('stat-free-memory');
  if (total === null || avail === null || total === 0) return null;
  return { totalBytes: total, usedBytes: Math.max(0, total - avail) };
}

/** True when a QMP error says the VM has no balloon (QEMU answers DeviceNotActive). */
export function isNoBalloon(e: unknown): boolean {
  const text = e instanceof Error ? `${e.message} ${JSON.stringify((e as { details?: unknown }).details ?? '')}` : String(e);
  return /DeviceNotActive|No balloon device|balloon.*not.*activ/i.test(text);
}

/**
 * Asks QEMU for the counters. The balloon is looked for once: a VM without
 * one (the usual case) costs a single failed command for its life.
 */
export class QemuDeviceCounters {
  private hasBalloon: boolean | null = null;

  constructor(private readonly execute: QmpExecute) {}

  async read(): Promise<DeviceCounters> {
    const disks = parseBlockstats(await this.execute<unknown>('query-blockstats', undefined, { timeoutMs: 2000 }));
    let guestMemory: DeviceCounters['guestMemory'] = null;
    if (this.hasBalloon !== false) {
      try {
        if (this.hasBalloon === null) {
          await this.execute<unknown>('query-balloon', undefined, { timeoutMs: 2000 });
          await enableBalloonStats(this.execute);
          this.hasBalloon = true;
        }
        guestMemory = parseBalloonGuestStats(await this.execute<unknown>('qom-get', { path: BALLOON_QOM_PATH, property: 'guest-stats' }, { timeoutMs: 2000 }));
      } catch (e) {
        // No balloon: never ask again. Anything else (a timeout) is tried again next time.
        if (this.hasBalloon === null && isNoBalloon(e)) this.hasBalloon = false;
      }
    }
    return { disks, guestMemory };
  }
}
