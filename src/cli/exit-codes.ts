/**
 * Exit codes of the `hangar` command, stable so scripts can branch on them
 * (documented in docs/cli.md). They follow the error code the daemon (or the
 * CLI's own validation) gave.
 */
import type { ErrorCode } from '../common/errors.js';

export const EXIT = {
  OK: 0,
  /** Anything not listed below: engine failure, internal error. */
  FAILURE: 1,
  /** Bad command line or bad input (INVALID_ARGUMENT, INVALID_JSON, unknown option). */
  USAGE: 2,
  /** The VM, operation or image does not exist (NOT_FOUND). */
  NOT_FOUND: 3,
  /** The request conflicts with the current state (ALREADY_EXISTS, INVALID_STATE). */
  CONFLICT: 4,
  /** The daemon cannot be reached or is not ready (UNAVAILABLE), or no guest agent answers (AGENT_UNAVAILABLE). */
  UNAVAILABLE: 5,
  /** Something did not finish in time (TIMEOUT), e.g. `console --until` never matched. */
  TIMEOUT: 6,
  /** The host or request asks for something Hangar cannot do (UNSUPPORTED, RESOURCE_EXHAUSTED). */
  UNSUPPORTED: 7,
  /** Authentication failed on a remote daemon (UNAUTHORIZED). */
  UNAUTHORIZED: 8,
} as const;

export function exitCodeFor(code: ErrorCode): number {
  switch (code) {
    case 'INVALID_ARGUMENT':
    case 'INVALID_JSON':
      return EXIT.USAGE;
    case 'NOT_FOUND':
      return EXIT.NOT_FOUND;
    case 'ALREADY_EXISTS':
    case 'INVALID_STATE':
      return EXIT.CONFLICT;
    case 'UNAVAILABLE':
    case 'AGENT_UNAVAILABLE':
      return EXIT.UNAVAILABLE;
    case 'TIMEOUT':
      return EXIT.TIMEOUT;
    case 'UNSUPPORTED':
    case 'RESOURCE_EXHAUSTED':
      return EXIT.UNSUPPORTED;
    case 'UNAUTHORIZED':
      return EXIT.UNAUTHORIZED;
    default:
      return EXIT.FAILURE;
  }
}
