/**
 * Builds the daemon's engine registry: every engine Hangar has, sharing one
 * KVM probe. The daemon reaches engines only through the registry.
 */
import type { Logger } from '../common/log.js';
import { probeKvm as realProbe, type KvmProbe } from '../kvm/probe.js';
import { MicroEngine } from './micro/engine.js';
import { QemuEngine } from './qemu/engine.js';
import { EngineRegistry } from './registry.js';

export { EngineRegistry } from './registry.js';

export interface EngineRegistryOptions {
  logger: Logger;
  /** The KVM probe (tests pin it); the real one by default. */
  probeKvm?: () => Promise<KvmProbe>;
}

export function createEngineRegistry(opts: EngineRegistryOptions): EngineRegistry {
  // The engines ask the registry, so there is one probe whoever asks first.
  let registry: EngineRegistry | null = null;
  const kvm = (): Promise<KvmProbe> => registry!.kvm();
  registry = new EngineRegistry({
    qemu: new QemuEngine({ logger: opts.logger, kvm }),
    micro: new MicroEngine({ logger: opts.logger, kvm }),
  }, opts.probeKvm ?? realProbe);
  return registry;
}
