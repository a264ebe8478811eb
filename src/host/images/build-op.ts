/**
 * POST /1.0/images/{name}/build as an operation: the build runs in the
 * background and reports its stages as the operation's progress; the
 * finished operation's result is the image as GET /1.0/images/{name} shows it.
 */
import { HangarError } from '../../common/errors.js';
import type { Image, ImageBuildRequest, Operation } from '../api/schemas.js';
import type { OperationManager } from '../operations.js';
import type { ImageProvider } from '../vms.js';

export function startImageBuild(operations: OperationManager, images: ImageProvider, name: string, req: ImageBuildRequest): Operation {
  const build = images.buildImage;
  if (!build) throw new HangarError('UNSUPPORTED', 'this daemon cannot build images');
  const known = images.isBuiltIn?.(name);
  if (known === false) throw new HangarError('NOT_FOUND', `no built-in image named "${name}"`, { image: name });
  return operations.run(`Building image ${name}`, [], async (progress) => {
    await build(name, { ...(req.packages ? { packages: req.packages } : {}) }, (stage, percent) => progress({ stage, ...(percent !== undefined ? { percent } : {}) }));
    const listed = (await images.listImages()).find((i) => i.name === name) as Image | undefined;
    if (!listed) throw new HangarError('INTERNAL', `image ${name} was built but is not listed`);
    return listed;
  });
}
