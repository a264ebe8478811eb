/**
 * Turns a VmCreateRequest (already shape-checked by the API schema) into a
 * VmSpec the daemon can store and start, checking everything the schema
 * cannot: sizes against the chosen engine's limits, the image's existence.
 * This is the one check of a VM's size: engines trust what it admitted.
 * What the host can hold is the admission budget's business (admission.ts),
 * checked when a VM starts.
 */
import { HangarError } from '../common/errors.js';
import { parseSize, formatSize } from '../common/sizes.js';
import { isVmName, VM_NAME_RULE } from '../api/names.js';
import type { EngineLimits, EngineName } from '../api/engine.js';
import type { VmCreateRequest, VmSpec } from './api/schemas.js';
import { cloudInitSpecFrom } from './cloudinit/index.js';
import { diskSize, planDisks, ROOT_DISK, specDisk } from './disks/plan.js';

export const DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024;
export const DEFAULT_CPUS = 1;
export const DEFAULT_ENGINE: EngineName = 'qemu';

/** What the validation needs to know; injected so tests can pin it. */
export interface SpecContext {
  /** Names of images this daemon can boot. */
  imageNames: string[];
  /** The chosen engine and what one VM may ask of it. */
  engine: { name: EngineName; limits: EngineLimits };
}

export function validateVmName(name: unknown): string {
  if (!isVmName(name)) {
    throw new HangarError('INVALID_ARGUMENT', `VM name ${JSON.stringify(name)} is not valid: ${VM_NAME_RULE}`, { field: 'name' });
  }
  return name;
}

/** Throws INVALID_ARGUMENT naming the engine's rule when cpus or memory do not fit it. */
export function checkEngineLimits(engine: EngineName, limits: EngineLimits, cpus: number, memoryBytes: number): void {
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > limits.maxCpus) {
    throw new HangarError('INVALID_ARGUMENT', `cpus must be between 1 and ${limits.maxCpus} for engine ${engine}, got ${cpus}`, { field: 'cpus', engine, min: 1, max: limits.maxCpus });
  }
  const g = limits.memoryGranularityBytes;
  if (memoryBytes % g !== 0) {
    throw new HangarError('INVALID_ARGUMENT', `memory must be a multiple of ${sizeWords(g)} for engine ${engine}, got ${formatSize(memoryBytes)}`, { field: 'memory', engine, granularity: g });
  }
  if (memoryBytes < limits.minMemoryBytes) {
    throw new HangarError('INVALID_ARGUMENT', `memory must be at least ${sizeWords(limits.minMemoryBytes)} for engine ${engine}, got ${formatSize(memoryBytes)}`, { field: 'memory', engine, min: limits.minMemoryBytes });
  }
  if (memoryBytes > limits.maxMemoryBytes) {
    throw new HangarError('INVALID_ARGUMENT', `memory must be at most ${sizeWords(limits.maxMemoryBytes)} for engine ${engine}, got ${formatSize(memoryBytes)}`, { field: 'memory', engine, max: limits.maxMemoryBytes });
  }
}

/** "2 MiB", "3 GiB": sizes in messages as people write them. */
function sizeWords(bytes: number): string {
  const s = formatSize(bytes);
  return /^[\d.]+[KMGT]$/.test(s) ? `${s.slice(0, -1)} ${s.slice(-1)}iB` : s;
}

export function buildVmSpec(req: VmCreateRequest, ctx: SpecContext): VmSpec {
  validateVmName(req.name);
  const engine = req.engine ?? DEFAULT_ENGINE;
  if (engine !== ctx.engine.name) throw new HangarError('INTERNAL', `limits of engine ${ctx.engine.name} given for a ${engine} VM`);

  const cpus = req.cpus ?? DEFAULT_CPUS;
  let memoryBytes = DEFAULT_MEMORY_BYTES;
  if (req.memory !== undefined) {
    try {
      memoryBytes = parseSize(req.memory, 'memory');
    } catch (e) {
      if (e instanceof HangarError) throw new HangarError(e.code, e.message, { field: 'memory' });
      throw e;
    }
  }
  checkEngineLimits(engine, ctx.engine.limits, cpus, memoryBytes);

  if (!ctx.imageNames.includes(req.image)) {
    throw new HangarError('NOT_FOUND', `no image named "${req.image}" (known: ${ctx.imageNames.join(', ') || 'none'})`, { field: 'image', image: req.image });
  }

  const cmdline = req.cmdline ?? '';
  if (/[\0\n\r]/.test(cmdline)) {
    throw new HangarError('INVALID_ARGUMENT', 'cmdline must not contain NUL or line breaks', { field: 'cmdline' });
  }

  // Disks besides the root disk: names, sizes and volumes checked here, storage at create (disks/).
  const disks = planDisks(req.name, req.disks ?? [], [ROOT_DISK]).map(specDisk);
  if (req.rootSize !== undefined) diskSize(req.rootSize, 'rootSize');

  const cloudInit = cloudInitSpecFrom(req);
  return { image: req.image, engine, cpus, memoryBytes, cmdline, disks, ...(cloudInit ? { cloudInit } : {}) };
}
