/**
 * Small checks for values read back from a snapshot file, which is hostile
 * input: each throws an INVALID_ARGUMENT HangarError naming the field, so a
 * device's restoreState() reads as a list of rules.
 */
import { HangarError } from '../../common/errors.js';

export function stateError(where: string, msg: string): HangarError {
  return new HangarError('INVALID_ARGUMENT', `snapshot ${where}: ${msg}`);
}

export function obj(v: unknown, where: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw stateError(where, 'must be an object');
  return v as Record<string, unknown>;
}

/** Refuses fields this version does not know (a newer or edited file). */
export function onlyKeys(o: Record<string, unknown>, keys: readonly string[], where: string): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) throw stateError(where, `unknown field "${k}"`);
}

export function int(v: unknown, min: number, max: number, where: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw stateError(where, `must be a whole number from ${min} to ${max}, got ${JSON.stringify(v)?.slice(0, 40)}`);
  return v;
}

export function bool(v: unknown, where: string): boolean {
  if (typeof v !== 'boolean') throw stateError(where, 'must be true or false');
  return v;
}

export function str(v: unknown, maxLen: number, where: string): string {
  if (typeof v !== 'string' || v.length > maxLen) throw stateError(where, `must be a string of at most ${maxLen} characters`);
  return v;
}

/** An array of bytes (0..255) of at most `maxLen` entries (exactly `maxLen` when `exact`). */
export function bytes(v: unknown, maxLen: number, where: string, exact = false): number[] {
  if (!Array.isArray(v) || v.length > maxLen || (exact && v.length !== maxLen)) throw stateError(where, `must be a list of ${exact ? 'exactly' : 'at most'} ${maxLen} bytes`);
  for (const b of v) if (typeof b !== 'number' || !Number.isInteger(b) || b < 0 || b > 255) throw stateError(where, 'must hold only bytes (0-255)');
  return [...(v as number[])];
}
