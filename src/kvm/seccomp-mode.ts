/**
 * Whether hangar-vmm installs its seccomp filter (seccomp.ts), read apart
 * from it so the VMM's entry point can decide without loading the FFI.
 */
export type SeccompMode = 'enforce' | 'trace' | 'off';

/** HANGAR_VMM_SECCOMP: unset/1 → enforce, 0/off → off, trace → allow-everything marker. */
export function seccompModeFromEnv(env: NodeJS.ProcessEnv = process.env): SeccompMode {
  const v = env.HANGAR_VMM_SECCOMP;
  if (v === undefined || v === '' || v === '1' || v === 'on') return 'enforce';
  if (v === '0' || v === 'off') return 'off';
  if (v === 'trace') return 'trace';
  throw new Error(`HANGAR_VMM_SECCOMP must be 1, 0 or trace, got ${JSON.stringify(v)}`);
}
