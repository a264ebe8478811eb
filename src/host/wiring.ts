/**
 * Where the daemon finds the parts other folders provide: the engines and
 * the image store. Kept in one place so the daemon and tests assemble the
 * same pieces.
 */
import { QemuEngine } from '../engines/qemu/engine.js';
import { ensureImage, listImages } from './images/index.js';
import type { Engine } from '../engines/engine.js';
import type { Logger } from '../common/log.js';
import type { EngineRegistry, ImageProvider } from './vms.js';

/** Imports a module that may not be built into this checkout; null when it is absent. */
async function optional(specifier: string): Promise<Record<string, unknown> | null> {
  try {
    return (await import(specifier)) as Record<string, unknown>;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND') return null;
    throw e;
  }
}

export async function loadEngines(log: Logger): Promise<EngineRegistry> {
  const engines: EngineRegistry = { qemu: new QemuEngine() };
  for (const spec of ['../engines/micro/engine.js', '../engines/micro/index.js']) {
    const mod = await optional(spec);
    const Ctor = mod?.MicroEngine as (new () => Engine) | undefined;
    if (Ctor) { engines.micro = new Ctor(); break; }
  }
  if (!engines.micro) log.warn('micro engine not found in this build');
  return engines;
}

export function loadImages(): ImageProvider {
  return { ensureImage, listImages };
}
