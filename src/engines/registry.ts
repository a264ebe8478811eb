/**
 * The daemon's engines, reached by name through one object, and the facts
 * about this host they share (the KVM probe, run once per daemon: it runs a
 * guest loop and takes about half a second).
 */
import fs from 'node:fs';
import { HangarError } from '../common/errors.js';
import type { KvmProbe } from '../kvm/probe.js';
import type { Engine, EngineCapabilities, EngineName } from './engine.js';

export class EngineRegistry {
  private probe: Promise<KvmProbe> | null = null;

  constructor(
    private readonly engines: Partial<Record<EngineName, Engine>>,
    private readonly probeKvm: () => Promise<KvmProbe>,
  ) {}

  /** The engine of this name; UNSUPPORTED when this daemon has none. */
  get(name: EngineName): Engine {
    const e = this.engines[name];
    if (!e) throw new HangarError('UNSUPPORTED', `engine "${name}" is not available in this daemon`, { engine: name });
    return e;
  }

  find(name: EngineName): Engine | undefined {
    return this.engines[name];
  }

  list(): Engine[] {
    return Object.values(this.engines).filter((e): e is Engine => e !== undefined);
  }

  /** Every engine's capabilities; one that cannot say is reported unavailable with the reason. */
  async capabilities(): Promise<EngineCapabilities[]> {
    return Promise.all(this.list().map(async (e) => {
      try {
        return await e.capabilities();
      } catch (err) {
        return {
          name: e.name, available: false, reason: String(err), bootModes: [], devices: [], accelerators: [], defaultAccel: null,
          limits: { minMemoryBytes: 0, maxMemoryBytes: 0, memoryGranularityBytes: 1, maxCpus: 1 }, snapshots: false, migration: false,
        };
      }
    }));
  }

  /** This host's KVM, probed on first use and then remembered for the daemon's lifetime. */
  kvm(): Promise<KvmProbe> {
    this.probe ??= this.probeKvm().catch((e: unknown): KvmProbe => ({
      present: fs.existsSync('/dev/kvm'), fullSystem: false, kind: 'absent', detail: `probe failed: ${String(e)}`,
    }));
    return this.probe;
  }
}
