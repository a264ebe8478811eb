/**
 * What one micro VM may ask for: hangar-vmm's own guest layout decides it
 * (src/vmm/layout.ts), so the daemon's check and the VMM's agree by
 * construction.
 */
import type { EngineLimits } from '../../api/engine.js';
import { MAX_RAM, MAX_VCPUS, MIN_RAM, RAM_GRANULARITY } from '../../vmm/layout.js';

export const MICRO_LIMITS: EngineLimits = {
  minMemoryBytes: MIN_RAM,
  maxMemoryBytes: MAX_RAM,
  memoryGranularityBytes: RAM_GRANULARITY,
  maxCpus: MAX_VCPUS,
};
