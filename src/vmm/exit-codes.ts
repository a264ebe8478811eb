/**
 * hangar-vmm's process exit codes: the one channel that survives when
 * nobody reads its output. The micro engine maps them to VmExit reasons.
 */
export const VMM_EXIT = {
  /** The guest powered off. */
  POWEROFF: 0,
  /** The VMM failed: bad configuration, KVM error while building the VM, internal error. */
  ERROR: 1,
  /** Bad command-line usage. */
  USAGE: 2,
  /** The guest reset or rebooted (i8042 reset, triple fault, power-port reset). */
  REBOOT: 3,
  /** The guest crashed: KVM internal/emulation error, failed entry, guest panic. */
  CRASHED: 4,
  /** Stopped on request (API action Stop, SIGTERM, SIGINT). */
  STOPPED: 5,
} as const;

export type VmmExitCode = (typeof VMM_EXIT)[keyof typeof VMM_EXIT];

export function exitCodeFor(reason: 'poweroff' | 'reboot' | 'crashed' | 'stopped'): VmmExitCode {
  switch (reason) {
    case 'poweroff': return VMM_EXIT.POWEROFF;
    case 'reboot': return VMM_EXIT.REBOOT;
    case 'crashed': return VMM_EXIT.CRASHED;
    case 'stopped': return VMM_EXIT.STOPPED;
  }
}

/** What hangar-vmm writes to its --exit-file just before exiting. */
export interface VmmExitRecord {
  code: number;
  reason: 'poweroff' | 'reboot' | 'crashed' | 'stopped' | 'error';
  detail: string;
  rip?: string;
  insn?: number[];
}
