/**
 * The API token for the optional TCP listener. The Unix socket is protected
 * by its file mode (0600); TCP clients must send `Authorization: Bearer <token>`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';

/** HANGAR_API_TOKEN, else <dataDir>/api.token, created (0600) with 32 random bytes when missing. */
export function loadOrCreateToken(dataDir: string, env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.HANGAR_API_TOKEN?.trim();
  if (fromEnv) return fromEnv;
  const file = path.join(dataDir, 'api.token');
  try {
    const t = fs.readFileSync(file, 'utf8').trim();
    if (t.length > 0) return t;
  } catch { /* create below */ }
  const token = randomBytes(32).toString('hex');
  fs.mkdirSync(dataDir, { recursive: true });
  fs.writeFileSync(file, `${token}\n`, { mode: 0o600 });
  fs.chmodSync(file, 0o600);
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
