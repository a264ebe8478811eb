/**
 * Where the daemon finds the parts other folders provide: the engine
 * registry and the image store. Kept in one place so the daemon and tests
 * assemble the same pieces.
 */
import { createEngineRegistry, type EngineRegistry } from '../engines/index.js';
import type { Logger } from '../common/log.js';
import { buildImage, deleteImage, importImage, isBuiltIn, listImages, prepareDiskImageImport, resolveImage } from './images/index.js';
import type { ImageProvider } from './vms.js';

export function loadEngines(log: Logger): EngineRegistry {
  return createEngineRegistry({ logger: log });
}

export function loadImages(): ImageProvider {
  return { ensureImage: resolveImage, listImages, importImage, deleteImage, buildImage, isBuiltIn, prepareDiskImport: prepareDiskImageImport };
}
