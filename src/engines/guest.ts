/**
 * Running a command inside a guest (through an agent in the guest, e.g.
 * the QEMU guest agent): what the daemon asks of a VmHandle's exec(), and
 * what comes back. Engine-neutral, so the daemon never knows which agent
 * protocol carried it.
 */

export interface GuestExecRequest {
  /** Program and arguments; the program is looked up on the agent's PATH. */
  command: string[];
  /** Bytes for the command's standard input (closed after them; absent: empty). */
  input?: Buffer;
  /** How long the command may run before Hangar gives up on it (and asks the guest to kill it). */
  timeoutMs: number;
  /** Most bytes of stdout, and of stderr, returned; the rest is cut and marked truncated. */
  maxOutputBytes: number;
}

export interface GuestExecResult {
  /** The command's exit status; null when a signal ended it. */
  exitCode: number | null;
  /** The signal number that ended it, null otherwise. */
  signal: number | null;
  stdout: Buffer;
  stderr: Buffer;
  /** Output was cut: at maxOutputBytes, or by the agent's own limit. */
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
}
