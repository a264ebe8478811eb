/**
 * Durations on the command line: a number with a unit (`500ms`, `2s`,
 * `1.5s`, `2m`). Whether a bare number is allowed is the option's choice:
 * for options whose unit changed, a bare number is refused rather than
 * silently read in a unit the user did not mean.
 */
import { HangarError } from '../common/errors.js';

const UNIT_MS = { ms: 1, s: 1000, m: 60_000 } as const;

export interface DurationRule {
  /** Unit of a bare number; absent: a bare number is refused. */
  bare?: keyof typeof UNIT_MS;
  maxMs: number;
}

/** A commander argument parser giving milliseconds. */
export function parseDurationOption(what: string, rule: DurationRule): (v: string) => number {
  return (v: string) => {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(v.trim());
    if (!m) throw new HangarError('INVALID_ARGUMENT', `${what} must be a duration such as 500ms, 2s or 1m, got "${v}"`);
    const unit = (m[2] ?? rule.bare) as keyof typeof UNIT_MS | undefined;
    if (unit === undefined) throw new HangarError('INVALID_ARGUMENT', `${what} needs a unit: ${m[1]}s or ${m[1]}ms (a bare number is ambiguous), got "${v}"`);
    const ms = Math.round(Number(m[1]) * UNIT_MS[unit]);
    if (ms > rule.maxMs) throw new HangarError('INVALID_ARGUMENT', `${what} must be at most ${rule.maxMs / 1000}s, got "${v}"`);
    return ms;
  };
}
