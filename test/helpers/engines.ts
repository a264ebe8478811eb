/**
 * Engine registries for tests that run the daemon's parts with stand-in
 * engines: a pinned KVM probe, and capabilities as a real engine of that
 * name reports them (its real limits).
 */
import type { Engine, EngineCapabilities, EngineName } from '../../src/engines/engine.js';
import { EngineRegistry } from '../../src/engines/registry.js';
import { QEMU_LIMITS } from '../../src/engines/qemu/limits.js';
import { MICRO_LIMITS } from '../../src/engines/micro/limits.js';
import type { KvmProbe } from '../../src/kvm/probe.js';

export const NESTED_KVM: KvmProbe = { present: true, fullSystem: false, kind: 'nested-emulated', detail: 'test' };

export function registryOf(engines: Partial<Record<EngineName, Engine>>, probe: KvmProbe = NESTED_KVM): EngineRegistry {
  return new EngineRegistry(engines, async () => probe);
}

/** Capabilities of an available engine of this name: its real limits, KVM for micro and TCG for QEMU. */
export function capabilitiesOf(name: EngineName, over: Partial<EngineCapabilities> = {}): EngineCapabilities {
  return {
    name,
    available: true,
    bootModes: ['kernel'],
    devices: [],
    accelerators: name === 'micro' ? ['kvm'] : ['tcg'],
    defaultAccel: name === 'micro' ? 'kvm' : 'tcg',
    limits: name === 'micro' ? MICRO_LIMITS : QEMU_LIMITS,
    snapshots: false,
    migration: false,
    ...over,
  };
}
