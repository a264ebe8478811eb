/**
 * Where the daemon finds the parts other folders provide: the engines and
 * the image store. Kept in one place so the daemon and tests assemble the
 * same pieces.
 */
import { QemuEngine } from '../engines/qemu/engine.js';
import { MicroEngine } from '../engines/micro/engine.js';
import type { Logger } from '../common/log.js';
import { deleteImage, ensureImage, importImage, listImages } from './images/index.js';
import type { EngineRegistry, ImageProvider } from './vms.js';

export function loadEngines(log: Logger): EngineRegistry {
  return {
    qemu: new QemuEngine({ logger: log }),
    micro: new MicroEngine({ logger: log }),
  };
}

export function loadImages(): ImageProvider {
  return { ensureImage, listImages, importImage, deleteImage };
}
