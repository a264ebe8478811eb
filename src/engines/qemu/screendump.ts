/**
 * QMP `screendump`: QEMU writes what the VM's display shows to a file, PNG
 * or PPM (binary P6). QEMU itself opens the file, so it must be somewhere the
 * VM process may create files: the VM's runDir. QEMU answers once the file
 * is written.
 */
import { HangarError } from '../../common/errors.js';
import type { QmpClient } from './qmp.js';

export type ScreendumpFormat = 'png' | 'ppm';

export async function screendump(qmp: QmpClient, file: string, format: ScreendumpFormat): Promise<void> {
  if (format !== 'png' && format !== 'ppm') throw new HangarError('INVALID_ARGUMENT', `screendump format must be png or ppm, got ${String(format)}`);
  await qmp.execute('screendump', { filename: file, format });
}
