/**
 * Name rules for storage pools and volumes (API, CLI, VM disk specs). A
 * volume is named `<pool>/<volume>` where one name is needed; its file in a
 * dir pool is `<volume>.<format>`, so a volume name is also a file name and
 * never starts with a dot (work files in a pool do).
 */
import { Type } from 'typebox';

export const POOL_NAME_PATTERN = '^[a-z][a-z0-9_-]{0,31}$';
export const POOL_NAME_RULE = 'lower-case letters, digits, dashes and underscores, starting with a letter, at most 32 characters';

export const VOLUME_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$';
export const VOLUME_NAME_RULE = 'letters, digits, dots, dashes and underscores, starting with a letter or digit, at most 128 characters';

const POOL_RE = new RegExp(POOL_NAME_PATTERN);
const VOLUME_RE = new RegExp(VOLUME_NAME_PATTERN);

export const isPoolName = (s: unknown): s is string => typeof s === 'string' && POOL_RE.test(s);
export const isVolumeName = (s: unknown): s is string => typeof s === 'string' && VOLUME_RE.test(s);

export const PoolName = Type.String({ pattern: POOL_NAME_PATTERN, description: `Storage pool name: ${POOL_NAME_RULE}` });
export const VolumeName = Type.String({ pattern: VOLUME_NAME_PATTERN, description: `Volume name: ${VOLUME_NAME_RULE}` });

/** The pool every Hangar has, made on first use. */
export const DEFAULT_POOL = 'default';

export interface VolumeRef {
  pool: string;
  volume: string;
}

/**
 * Reads "pool/volume" (or a bare "volume", which means the default pool).
 * Returns null when either part breaks its rule.
 */
export function parseVolumeRef(s: string): VolumeRef | null {
  const slash = s.indexOf('/');
  const pool = slash < 0 ? DEFAULT_POOL : s.slice(0, slash);
  const volume = slash < 0 ? s : s.slice(slash + 1);
  if (!isPoolName(pool) || !isVolumeName(volume)) return null;
  return { pool, volume };
}

export function formatVolumeRef(r: VolumeRef): string {
  return `${r.pool}/${r.volume}`;
}
