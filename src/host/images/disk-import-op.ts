/**
 * POST /1.0/images with `disk`: the import is checked before the answer
 * (name, path, inspection of the disk, quota), then copied as an operation
 * whose result is the image as GET /1.0/images/{name} shows it.
 */
import { HangarError } from '../../common/errors.js';
import type { ImageImportRequest, Operation } from '../api/schemas.js';
import type { OperationManager } from '../operations.js';
import type { ImageProvider } from '../vms.js';

export async function startDiskImageImport(operations: OperationManager, images: ImageProvider, req: ImageImportRequest): Promise<Operation> {
  if (!images.prepareDiskImport) throw new HangarError('UNSUPPORTED', 'this daemon cannot import disk images');
  const { disk } = req;
  if (disk === undefined) throw new HangarError('INVALID_ARGUMENT', 'a disk import needs a disk', { field: 'disk' });
  for (const field of ['kernel', 'initrd', 'cmdline'] as const) {
    if (req[field] !== undefined) throw new HangarError('INVALID_ARGUMENT', `a disk image boots by firmware from its own boot loader: it takes no ${field}`, { field });
  }
  const prepared = await images.prepareDiskImport({
    name: req.name, disk, ...(req.boot ? { boot: req.boot } : {}), ...(req.format ? { format: req.format } : {}),
    ...(req.description !== undefined ? { description: req.description } : {}),
  });
  return operations.run(`Import image ${req.name} from ${disk}`, [], (report) => prepared.run(report));
}
