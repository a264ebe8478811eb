/**
 * The API token for the TCP listener, and the brake on guessing it. The Unix
 * socket is protected by its file mode (0600); TCP clients must send
 * `Authorization: Bearer <token>`.
 *
 * A token must carry at least 128 bits: 32 characters or more (32 hex digits
 * are 128 bits; the daemon's own are 64 hex digits). A token file must belong
 * to the daemon's user and be readable by nobody else, or the daemon refuses
 * to start rather than serve with a token others may have read.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { HangarError } from '../common/errors.js';

/** Shortest token accepted, in characters (32 hex digits = 128 bits). */
export const MIN_TOKEN_LENGTH = 32;
const TOKEN_RE = /^[\x21-\x7e]+$/;

/** Refuses a token that is too short or has characters a header cannot carry; `where` names its source. */
export function checkToken(token: string, where: string): string {
  if (!TOKEN_RE.test(token)) throw new HangarError('INVALID_ARGUMENT', `the API token from ${where} must be printable ASCII without spaces`);
  if (token.length < MIN_TOKEN_LENGTH) {
    throw new HangarError('INVALID_ARGUMENT',
      `the API token from ${where} has ${token.length} characters; at least ${MIN_TOKEN_LENGTH} (128 bits as hex) are required. Make one with: openssl rand -hex 32`);
  }
  return token;
}

/**
 * HANGAR_API_TOKEN, else <dataDir>/api.token, created (0600) with 32 random
 * bytes as hex when missing. A short token, or a token file that is a symlink,
 * not ours, or open to group or others, is an INVALID_ARGUMENT.
 */
export function loadOrCreateToken(dataDir: string, env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.HANGAR_API_TOKEN?.trim();
  if (fromEnv !== undefined && fromEnv !== '') return checkToken(fromEnv, 'HANGAR_API_TOKEN');
  const file = path.join(dataDir, 'api.token');
  let fd: number | null = null;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new HangarError('INVALID_ARGUMENT', `${file} is a symbolic link; the token file must be a plain file`);
    if (code !== 'ENOENT') throw new HangarError('INVALID_ARGUMENT', `cannot read ${file}: ${(e as Error).message}`);
  }
  if (fd !== null) {
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new HangarError('INVALID_ARGUMENT', `${file} is not a regular file`);
      const uid = process.getuid?.();
      if (uid !== undefined && st.uid !== uid) throw new HangarError('INVALID_ARGUMENT', `${file} belongs to uid ${st.uid}, not to the daemon's user (${uid})`);
      if ((st.mode & 0o077) !== 0) {
        throw new HangarError('INVALID_ARGUMENT', `${file} has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}: group or others may read it. Run: chmod 600 ${file} (and replace the token if others may have read it)`);
      }
      const t = fs.readFileSync(fd, 'utf8').trim();
      if (t.length > 0) return checkToken(t, file);
    } finally {
      fs.closeSync(fd);
    }
  }
  const token = randomBytes(32).toString('hex');
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  // An empty file left behind is replaced; wx elsewhere would refuse it.
  fs.rmSync(file, { force: true });
  fs.writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
  return token;
}

/** Compares an Authorization header with the token in constant time. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (!header) return false;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!m) return false;
  // Hash both so the comparison takes the same time whatever the lengths.
  const a = createHash('sha256').update(m[1]!).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}

export interface AuthLimiterOptions {
  /** Failures allowed per address within the window (default 10). */
  maxFailures?: number;
  /** Window length in ms (default 60 s). */
  windowMs?: number;
  /** Most addresses remembered at once; the oldest are forgotten first (default 10 000). */
  maxAddresses?: number;
  now?: () => number;
}

/**
 * Counts failed authentications per remote address in a sliding window.
 * An address that reached the limit is refused (429) until its oldest
 * failure in the window has aged out. Only the TCP listener uses it: the
 * Unix socket has no token, so a local user can never be locked out.
 */
export class AuthFailureLimiter {
  private readonly failures = new Map<string, number[]>();
  private readonly max: number;
  private readonly windowMs: number;
  private readonly maxAddresses: number;
  private readonly now: () => number;

  constructor(o: AuthLimiterOptions = {}) {
    this.max = o.maxFailures ?? 10;
    this.windowMs = o.windowMs ?? 60_000;
    this.maxAddresses = o.maxAddresses ?? 10_000;
    this.now = o.now ?? Date.now;
  }

  private recent(addr: string): number[] {
    const t = this.now();
    const list = (this.failures.get(addr) ?? []).filter((at) => t - at < this.windowMs);
    if (list.length === 0) this.failures.delete(addr);
    else this.failures.set(addr, list);
    return list;
  }

  /** Seconds until this address may try again; 0 when it may now. */
  blockedFor(addr: string): number {
    const list = this.recent(addr);
    if (list.length < this.max) return 0;
    const freeAt = list[list.length - this.max]! + this.windowMs;
    return Math.max(1, Math.ceil((freeAt - this.now()) / 1000));
  }

  fail(addr: string): void {
    const list = this.recent(addr);
    list.push(this.now());
    // Re-insert so the map's order is least recently failed first.
    this.failures.delete(addr);
    this.failures.set(addr, list.slice(-this.max));
    while (this.failures.size > this.maxAddresses) {
      const oldest = this.failures.keys().next().value as string;
      this.failures.delete(oldest);
    }
  }
}
