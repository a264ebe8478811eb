/**
 * The CD-ROM drive of a running QEMU VM, over QMP: eject (open the tray,
 * remove the medium, close the tray) and insert or change
 * (blockdev-change-medium, which opens a locked tray by force). The drive is
 * the `dev-cdrom` device cmdline.ts makes: with the ISO at start, or empty
 * (`cdromDrive`) for firmware-booted VMs.
 */
import { HangarError, toHangarError } from '../../common/errors.js';
import type { QmpClient } from './qmp.js';

const DEVICE = 'dev-cdrom';

interface BlockInfo {
  device?: string;
  qdev?: string;
  tray_open?: boolean;
  inserted?: { file?: string };
}

async function cdromBlock(qmp: QmpClient): Promise<BlockInfo | undefined> {
  const blocks = await qmp.execute<BlockInfo[]>('query-block');
  return blocks.find((b) => b.qdev === DEVICE || b.qdev?.endsWith(`/${DEVICE}`) || b.device === 'cdrom');
}

/** What the drive holds now (QEMU's view), null when the VM has no drive. */
export async function queryMedium(qmp: QmpClient): Promise<{ inserted: boolean; file: string | null; trayOpen: boolean } | null> {
  const b = await cdromBlock(qmp);
  if (!b) return null;
  return { inserted: b.inserted !== undefined, file: b.inserted?.file ?? null, trayOpen: b.tray_open === true };
}

/** Refuses a VM started without a CD-ROM drive: one cannot be added while it runs. */
export async function requireCdromDrive(qmp: QmpClient): Promise<void> {
  if (!(await cdromBlock(qmp))) {
    throw new HangarError('INVALID_STATE', 'this VM was started without a CD-ROM drive (it boots its kernel directly and had no ISO): stop it, set the ISO, and start it again', { reason: 'no-cdrom-drive' });
  }
}

export async function ejectMedium(qmp: QmpClient): Promise<void> {
  await requireCdromDrive(qmp);
  try {
    // force: a guest that locked the tray (a mounted CD) does not get to keep the medium.
    await qmp.execute('blockdev-open-tray', { id: DEVICE, force: true });
    await qmp.execute('blockdev-remove-medium', { id: DEVICE });
    await qmp.execute('blockdev-close-tray', { id: DEVICE });
  } catch (e) {
    const err = toHangarError(e, 'ENGINE_FAILED');
    throw new HangarError(err.code, `the ISO could not be ejected: ${err.message}`);
  }
}

export async function insertMedium(qmp: QmpClient, file: string): Promise<void> {
  await requireCdromDrive(qmp);
  try {
    await qmp.execute('blockdev-change-medium', { id: DEVICE, filename: file, format: 'raw', 'read-only-mode': 'read-only' });
  } catch (e) {
    const err = toHangarError(e, 'ENGINE_FAILED');
    throw new HangarError(err.code, `the ISO could not be inserted: ${err.message}`);
  }
}
