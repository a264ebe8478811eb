/**
 * Errors are values with stable codes. Every layer throws HangarError; the
 * API turns it into `{type:"error", error:{code,message,details}}` with the
 * HTTP status that belongs to the code, and the CLI prints code and message.
 */
export const ERROR_STATUS = {
  INVALID_ARGUMENT: 400,
  INVALID_JSON: 400,
  UNAUTHORIZED: 401,
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  INVALID_STATE: 409,
  RESOURCE_EXHAUSTED: 422,
  UNSUPPORTED: 422,
  TIMEOUT: 504,
  ENGINE_FAILED: 500,
  INTERNAL: 500,
  UNAVAILABLE: 503,
  /** No guest agent answers in the VM (none installed, not started yet): `hangar exec` cannot reach it. */
  AGENT_UNAVAILABLE: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class HangarError extends Error {
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = 'HangarError';
    this.code = code;
    if (details !== undefined) this.details = details;
  }
  get status(): number {
    return ERROR_STATUS[this.code];
  }
  toJSON(): { code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details ? { code: this.code, message: this.message, details: this.details } : { code: this.code, message: this.message };
  }
}

export function isHangarError(e: unknown): e is HangarError {
  return e instanceof HangarError;
}

/** Wraps anything thrown into a HangarError, keeping codes that are already there. */
export function toHangarError(e: unknown, fallback: ErrorCode = 'INTERNAL'): HangarError {
  if (e instanceof HangarError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new HangarError(fallback, msg);
}
