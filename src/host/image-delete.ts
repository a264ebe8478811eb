/**
 * DELETE /1.0/images/{name}: an image goes only while no VM is defined on it.
 */
import { HangarError } from '../common/errors.js';
import type { ImageProvider } from './vms.js';

/** Deletes an imported image; INVALID_STATE (naming them) while VMs use it, UNSUPPORTED without an image store that deletes. */
export function deleteUnusedImage(images: ImageProvider, usersOf: (image: string) => string[], image: string): void {
  if (!images.deleteImage) throw new HangarError('UNSUPPORTED', 'this daemon cannot delete images');
  const users = usersOf(image);
  if (users.length > 0) {
    throw new HangarError('INVALID_STATE', `image "${image}" is used by VM${users.length > 1 ? 's' : ''} ${users.join(', ')}: delete ${users.length > 1 ? 'them' : 'it'} first`, { image, vms: users });
  }
  images.deleteImage(image);
}
