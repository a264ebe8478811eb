/**
 * Turns a VmCreateRequest (already shape-checked by the API schema) into a
 * VmSpec the daemon can store and start, checking everything the schema
 * cannot: sizes, bounds against this host, the image's existence.
 */
import os from 'node:os';
import { HangarError } from '../common/errors.js';
import { parseSize, formatSize } from '../common/sizes.js';
import type { VmCreateRequest, VmSpec } from './api/schemas.js';

export const MIN_MEMORY_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024;
export const DEFAULT_CPUS = 1;
const NAME_RE = /^[a-z][a-z0-9-]{0,62}$/;

/** What the validation needs to know about the host; injected so tests can pin it. */
export interface SpecContext {
  hostCpus: number;
  hostMemoryBytes: number;
  /** Names of images this daemon can boot. */
  imageNames: string[];
}

export function hostSpecContext(imageNames: string[]): SpecContext {
  return { hostCpus: os.cpus().length, hostMemoryBytes: os.totalmem(), imageNames };
}

export function validateVmName(name: unknown): string {
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw new HangarError('INVALID_ARGUMENT', `VM name ${JSON.stringify(name)} is not valid: lower-case letters, digits and dashes, starting with a letter, at most 63 characters`, { field: 'name' });
  }
  return name;
}

export function buildVmSpec(req: VmCreateRequest, ctx: SpecContext): VmSpec {
  validateVmName(req.name);

  const cpus = req.cpus ?? DEFAULT_CPUS;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > ctx.hostCpus) {
    throw new HangarError('INVALID_ARGUMENT', `cpus must be between 1 and ${ctx.hostCpus} (this host's CPU count), got ${cpus}`, { field: 'cpus', min: 1, max: ctx.hostCpus });
  }

  let memoryBytes = DEFAULT_MEMORY_BYTES;
  if (req.memory !== undefined) {
    try {
      memoryBytes = parseSize(req.memory, 'memory');
    } catch (e) {
      if (e instanceof HangarError) throw new HangarError(e.code, e.message, { field: 'memory' });
      throw e;
    }
  }
  if (memoryBytes < MIN_MEMORY_BYTES) {
    throw new HangarError('INVALID_ARGUMENT', `memory must be at least ${formatSize(MIN_MEMORY_BYTES)}, got ${formatSize(memoryBytes)}`, { field: 'memory', min: MIN_MEMORY_BYTES });
  }
  if (memoryBytes > ctx.hostMemoryBytes) {
    throw new HangarError('INVALID_ARGUMENT', `memory ${formatSize(memoryBytes)} is more than this host has (${formatSize(ctx.hostMemoryBytes)})`, { field: 'memory', max: ctx.hostMemoryBytes });
  }
  // QEMU and our VMM size guest RAM in whole pages.
  if (memoryBytes % 4096 !== 0) {
    throw new HangarError('INVALID_ARGUMENT', `memory must be a whole number of 4 KiB pages, got ${memoryBytes} bytes`, { field: 'memory' });
  }

  if (!ctx.imageNames.includes(req.image)) {
    throw new HangarError('NOT_FOUND', `no image named "${req.image}" (known: ${ctx.imageNames.join(', ') || 'none'})`, { field: 'image', image: req.image });
  }

  const cmdline = req.cmdline ?? '';
  if (/[\0\n\r]/.test(cmdline)) {
    throw new HangarError('INVALID_ARGUMENT', 'cmdline must not contain NUL or line breaks', { field: 'cmdline' });
  }

  return { image: req.image, engine: req.engine ?? 'qemu', cpus, memoryBytes, cmdline };
}
