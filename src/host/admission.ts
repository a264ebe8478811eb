/**
 * Admission control: what this host lets VMs hold. Memory and vCPUs of VMs
 * that are starting, running, paused or stopping count against limits
 * derived from the host (its RAM less a reserve, times an overcommit ratio;
 * its CPUs times a ratio), and the number of VMs defined is capped. A start
 * that would go over is refused with RESOURCE_EXHAUSTED and the numbers.
 *
 * Settings come from `<dataDir>/hangard.json` ({"admission": {...}}) and
 * hangard's flags, the flags winning (docs/api.md, "Admission").
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HangarError } from '../common/errors.js';
import { formatSize, parseSize } from '../common/sizes.js';
import type { AdmissionBudget } from './api/schemas.js';

export interface AdmissionSettings {
  /** Host memory kept back for the host itself (daemon, page cache, QEMU overhead). */
  memoryReserveBytes: number;
  /** Committed guest memory may reach (host memory - reserve) × this. */
  memoryRatio: number;
  /** Committed vCPUs may reach host CPUs × this. */
  cpuRatio: number;
  /** VMs that may be defined at all. */
  maxVms: number;
}

export interface HostResources {
  memoryBytes: number;
  cpus: number;
}

export interface Usage {
  cpus: number;
  memoryBytes: number;
}

const GiB = 1024 ** 3;
export const DEFAULT_MEMORY_RATIO = 1.0;
export const DEFAULT_CPU_RATIO = 4;
export const DEFAULT_MAX_VMS = 1000;
export const CONFIG_FILE = 'hangard.json';

export function hostResources(): HostResources {
  return { memoryBytes: os.totalmem(), cpus: os.cpus().length };
}

/** 1 GiB or a tenth of the host's memory, whichever is more, but never more than half of it. */
export function defaultMemoryReserve(hostMemoryBytes: number): number {
  return Math.min(Math.max(GiB, Math.floor(hostMemoryBytes / 10)), Math.floor(hostMemoryBytes / 2));
}

export function defaultSettings(host: HostResources): AdmissionSettings {
  return { memoryReserveBytes: defaultMemoryReserve(host.memoryBytes), memoryRatio: DEFAULT_MEMORY_RATIO, cpuRatio: DEFAULT_CPU_RATIO, maxVms: DEFAULT_MAX_VMS };
}

/** Settings as given (file or flags): every field optional, sizes as "1G" or bytes. */
export interface AdmissionInput {
  memoryReserve?: string | number;
  memoryRatio?: string | number;
  cpuRatio?: string | number;
  maxVms?: string | number;
}

function ratio(what: string, v: string | number): number {
  const n = typeof v === 'number' ? v : /^\d+(\.\d+)?$/.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isFinite(n) || n <= 0 || n > 1000) throw new HangarError('INVALID_ARGUMENT', `${what} must be a number above 0 (e.g. 1 or 1.5), got ${JSON.stringify(v)}`);
  return n;
}

function count(what: string, v: string | number): number {
  const n = typeof v === 'number' ? v : /^\d{1,9}$/.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new HangarError('INVALID_ARGUMENT', `${what} must be a whole number of at least 1, got ${JSON.stringify(v)}`);
  return n;
}

/** Applies `input` over `base`, checking each value; throws INVALID_ARGUMENT naming `source` and the field. */
export function applySettings(base: AdmissionSettings, input: AdmissionInput, source: string): AdmissionSettings {
  const out = { ...base };
  const known = new Set(['memoryReserve', 'memoryRatio', 'cpuRatio', 'maxVms']);
  for (const k of Object.keys(input)) {
    if (!known.has(k)) throw new HangarError('INVALID_ARGUMENT', `${source}: unknown admission setting "${k}" (known: ${[...known].join(', ')})`);
  }
  try {
    if (input.memoryReserve !== undefined) out.memoryReserveBytes = parseSize(input.memoryReserve, 'memoryReserve');
    if (input.memoryRatio !== undefined) out.memoryRatio = ratio('memoryRatio', input.memoryRatio);
    if (input.cpuRatio !== undefined) out.cpuRatio = ratio('cpuRatio', input.cpuRatio);
    if (input.maxVms !== undefined) out.maxVms = count('maxVms', input.maxVms);
  } catch (e) {
    if (e instanceof HangarError) throw new HangarError(e.code, `${source}: ${e.message}`);
    throw e;
  }
  return out;
}

/** The "admission" object of <dataDir>/hangard.json, or {} when the file does not exist. */
export function readConfigFile(dataDir: string): AdmissionInput {
  const file = path.join(dataDir, CONFIG_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new HangarError('INVALID_ARGUMENT', `${file}: ${(e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new HangarError('INVALID_ARGUMENT', `${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new HangarError('INVALID_ARGUMENT', `${file} must hold a JSON object`);
  const adm = (doc as Record<string, unknown>).admission;
  if (adm === undefined) return {};
  if (typeof adm !== 'object' || adm === null || Array.isArray(adm)) throw new HangarError('INVALID_ARGUMENT', `${file}: "admission" must be an object`);
  for (const [k, v] of Object.entries(adm)) {
    if (typeof v !== 'string' && typeof v !== 'number') throw new HangarError('INVALID_ARGUMENT', `${file}: admission.${k} must be a number or a string`);
  }
  return adm as AdmissionInput;
}

/** The settings hangard runs with: defaults for this host, then the config file, then the flags. */
export function loadAdmissionSettings(dataDir: string, flags: AdmissionInput, host: HostResources = hostResources()): AdmissionSettings {
  const fromFile = applySettings(defaultSettings(host), readConfigFile(dataDir), path.join(dataDir, CONFIG_FILE));
  return applySettings(fromFile, flags, 'flags');
}

export interface AdmissionDeps {
  settings: AdmissionSettings;
  host: HostResources;
  /** Memory and vCPUs of VMs that are starting, running, paused or stopping. */
  committed: () => Usage;
  /** VMs defined (stored, plus those being created). */
  defined: () => number;
}

export class Admission {
  constructor(private readonly d: AdmissionDeps) {}

  get settings(): AdmissionSettings {
    return this.d.settings;
  }

  /** The most committed memory and vCPUs may reach, and the VM count cap. */
  limits(): { memoryBytes: number; cpus: number; vms: number } {
    const { settings: s, host } = this.d;
    return {
      memoryBytes: Math.max(0, Math.floor((host.memoryBytes - s.memoryReserveBytes) * s.memoryRatio)),
      cpus: Math.max(1, Math.floor(host.cpus * s.cpuRatio)),
      vms: s.maxVms,
    };
  }

  budget(): AdmissionBudget {
    const lim = this.limits();
    const used = this.d.committed();
    return {
      memoryBytes: { committed: used.memoryBytes, limit: lim.memoryBytes },
      cpus: { committed: used.cpus, limit: lim.cpus },
      vms: { defined: this.d.defined(), limit: lim.vms },
      settings: { ...this.d.settings },
    };
  }

  /** Create: refused when the VM count is at its cap, or the VM alone could never start on this host. */
  checkCreate(name: string, want: Usage): void {
    const lim = this.limits();
    const defined = this.d.defined();
    if (defined >= lim.vms) {
      throw new HangarError('RESOURCE_EXHAUSTED', `cannot create VM "${name}": ${defined} VMs are defined and this daemon admits at most ${lim.vms} (maxVms)`, { resource: 'vms', defined, limit: lim.vms });
    }
    this.checkAgainst(name, 'create', want, { cpus: 0, memoryBytes: 0 }, lim);
  }

  /**
   * Start: refused when the VM's memory or vCPUs on top of what active VMs
   * hold would exceed the limits. Synchronous on purpose: the caller marks
   * the VM 'starting' (which commits its share) in the same tick, so two
   * starts can never both pass on the same headroom.
   */
  checkStart(name: string, want: Usage): void {
    this.checkAgainst(name, 'start', want, this.d.committed(), this.limits());
  }

  private checkAgainst(name: string, action: string, want: Usage, used: Usage, lim: { memoryBytes: number; cpus: number }): void {
    if (used.memoryBytes + want.memoryBytes > lim.memoryBytes) {
      const free = Math.max(0, lim.memoryBytes - used.memoryBytes);
      throw new HangarError('RESOURCE_EXHAUSTED',
        `cannot ${action} VM "${name}": it needs ${formatSize(want.memoryBytes)} of memory, ${formatSize(used.memoryBytes)} of ${formatSize(lim.memoryBytes)} admitted are committed to running VMs (${formatSize(free)} free)`,
        { resource: 'memory', requested: want.memoryBytes, committed: used.memoryBytes, limit: lim.memoryBytes });
    }
    if (used.cpus + want.cpus > lim.cpus) {
      throw new HangarError('RESOURCE_EXHAUSTED',
        `cannot ${action} VM "${name}": it needs ${want.cpus} vCPU${want.cpus === 1 ? '' : 's'}, ${used.cpus} of ${lim.cpus} admitted are committed to running VMs (${Math.max(0, lim.cpus - used.cpus)} free)`,
        { resource: 'cpus', requested: want.cpus, committed: used.cpus, limit: lim.cpus });
    }
  }
}
