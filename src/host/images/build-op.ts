/**
 * POST /1.0/images/{name}/build as an operation: the build runs in the
 * background and reports its stages as the operation's progress; the
 * finished operation's result is the image as GET /1.0/images/{name} shows it.
 */
import { HangarError } from '../../common/errors.js';
import type { Image, ImageBuildRequest, Operation } from '../api/schemas.js';
import type { OperationManager } from '../operations.js';
import type { ImageProvider } from '../vms.js';

/**
 * `usersOf` names the VMs made from an image. A built image with a base disk
 * is not rebuilt while VMs use it: their root volumes are qcow2 overlays of
 * that very file, and a new base under an old overlay corrupts the guest's
 * filesystem at its next start.
 */
export async function startImageBuild(operations: OperationManager, images: ImageProvider, name: string, req: ImageBuildRequest, usersOf: (image: string) => string[] = () => []): Promise<Operation> {
  const build = images.buildImage;
  if (!build) throw new HangarError('UNSUPPORTED', 'this daemon cannot build images');
  if (images.isBuiltIn && !images.isBuiltIn(name)) throw new HangarError('NOT_FOUND', `no built-in image named "${name}"`, { image: name });
  // Refused up front rather than as a failed operation: the running build is the one to follow.
  const listed = (await images.listImages()) as Array<{ name: string; status?: string }>;
  if (listed.some((i) => i.name === name && i.status === 'building')) {
    throw new HangarError('INVALID_STATE', `image ${name} is being built already`, { image: name });
  }
  const built = (listed as Array<{ name: string; status?: string; disk?: string }>).find((i) => i.name === name && i.status === 'ready');
  const users = built?.disk ? usersOf(name) : [];
  if (users.length > 0) {
    throw new HangarError('INVALID_STATE', `image ${name} is the base disk of VM${users.length > 1 ? 's' : ''} ${users.join(', ')}: a rebuild would replace the file their root disks are overlays of; delete ${users.length > 1 ? 'them' : 'it'} first`, { image: name, vms: users });
  }
  return operations.run(`Building image ${name}`, [], async (progress) => {
    await build(name, { ...(req.packages ? { packages: req.packages } : {}) }, (stage, percent) => progress({ stage, ...(percent !== undefined ? { percent } : {}) }));
    const found = ((await images.listImages()) as Image[]).find((i) => i.name === name);
    if (!found) throw new HangarError('INTERNAL', `image ${name} was built but is not listed`);
    return found;
  });
}
