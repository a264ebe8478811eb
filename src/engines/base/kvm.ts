/**
 * The KVM probe for an engine used on its own (tests, tools). In the daemon
 * the registry runs one probe and hands it to every engine instead.
 */
import { probeKvm, type KvmProbe } from '../../kvm/probe.js';

/** A probe that runs on first use and is then remembered. */
export function ownProbe(): () => Promise<KvmProbe> {
  let p: Promise<KvmProbe> | null = null;
  return () => (p ??= probeKvm());
}
