import { HangarError } from './errors.js';

const UNITS: Record<string, number> = {
  '': 1,
  B: 1,
  K: 1024, KB: 1024, KIB: 1024,
  M: 1024 ** 2, MB: 1024 ** 2, MIB: 1024 ** 2,
  G: 1024 ** 3, GB: 1024 ** 3, GIB: 1024 ** 3,
  T: 1024 ** 4, TB: 1024 ** 4, TIB: 1024 ** 4,
};

/**
 * Parses a byte size such as `512M`, `2G`, `1.5GiB` or `1048576` strictly:
 * binary units (K = 1024), no spaces inside, no negative or fractional bytes.
 * Anything else (`12XB`, `M`, `-1G`, `1e3`) is an INVALID_ARGUMENT.
 */
export function parseSize(input: string | number, what = 'size'): number {
  if (typeof input === 'number') {
    if (!Number.isSafeInteger(input) || input < 0) throw new HangarError('INVALID_ARGUMENT', `${what} must be a whole number of bytes, got ${input}`);
    return input;
  }
  const m = /^\s*(\d+(?:\.\d+)?)([A-Za-z]*)\s*$/.exec(input);
  if (!m) throw new HangarError('INVALID_ARGUMENT', `${what} "${input}" is not a size (examples: 512M, 2G, 1048576)`);
  const unit = UNITS[m[2]!.toUpperCase()];
  if (unit === undefined) throw new HangarError('INVALID_ARGUMENT', `${what} "${input}" has an unknown unit "${m[2]}" (use K, M, G or T)`);
  const bytes = Number(m[1]) * unit;
  if (!Number.isSafeInteger(bytes)) throw new HangarError('INVALID_ARGUMENT', `${what} "${input}" is not a whole number of bytes`);
  return bytes;
}

/** Formats bytes the way parseSize reads them back, e.g. 536870912 → "512M". */
export function formatSize(bytes: number): string {
  for (const [u, n] of [['T', 1024 ** 4], ['G', 1024 ** 3], ['M', 1024 ** 2], ['K', 1024]] as const) {
    if (bytes >= n && bytes % n === 0) return `${bytes / n}${u}`;
  }
  for (const [u, n] of [['T', 1024 ** 4], ['G', 1024 ** 3], ['M', 1024 ** 2], ['K', 1024]] as const) {
    if (bytes >= n) return `${(bytes / n).toFixed(1)}${u}`;
  }
  return `${bytes}B`;
}
