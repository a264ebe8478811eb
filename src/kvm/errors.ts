/**
 * A failed KVM or libc call as a value with a code: a HangarError whose
 * details name the operation and the errno (number and name), so a log line
 * or an API error says "KVM_CREATE_VM failed: ENOMEM" rather than "-1".
 */
import { HangarError, type ErrorCode } from '../common/errors.js';
import { errno, errnoName } from './libc.js';

export class KvmError extends HangarError {
  readonly op: string;
  readonly errno: number;
  readonly errnoName: string;
  constructor(op: string, err: number, code: ErrorCode = 'ENGINE_FAILED') {
    const name = errnoName(err);
    super(code, `${op} failed: ${name}`, { op, errno: err, errnoName: name });
    this.name = 'KvmError';
    this.op = op;
    this.errno = err;
    this.errnoName = name;
  }
}

/** Throws a KvmError with the current errno when `r` is negative; returns `r` otherwise. */
export function check(op: string, r: number): number {
  if (r < 0) {
    const e = errno();
    throw new KvmError(op, e, e === 2 /* ENOENT */ || e === 13 /* EACCES */ ? 'UNAVAILABLE' : 'ENGINE_FAILED');
  }
  return r;
}
