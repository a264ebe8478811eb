/**
 * Short-lived, single-use secrets: the login codes `hangar ui` prints (one
 * click logs the browser in) and the tickets a browser shows to open a
 * WebSocket (browsers cannot put an Authorization header on a WebSocket).
 *
 * A secret is 32 random bytes as hex; only its SHA-256 is kept, so a memory
 * dump of the daemon does not hold usable codes. Redeeming consumes it, right
 * or wrong use alike: a secret works at most once and never after its
 * deadline. The set is bounded: issuing past `max` forgets the oldest.
 */
import { createHash, randomBytes } from 'node:crypto';

export interface OneTimeSecretsOptions {
  /** How long a secret stays valid, in ms. */
  ttlMs: number;
  /** Most secrets outstanding at once (default 256). */
  max?: number;
  now?: () => number;
}

export interface IssuedSecret {
  secret: string;
  /** ms since epoch after which it is refused. */
  expiresAt: number;
}

const SECRET_RE = /^[0-9a-f]{64}$/;

function digest(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export class OneTimeSecrets {
  /** sha256(secret) → deadline, oldest first. */
  private readonly pending = new Map<string, number>();
  private readonly ttlMs: number;
  private readonly max: number;
  private readonly now: () => number;

  constructor(o: OneTimeSecretsOptions) {
    this.ttlMs = o.ttlMs;
    this.max = o.max ?? 256;
    this.now = o.now ?? Date.now;
  }

  issue(): IssuedSecret {
    this.prune();
    const secret = randomBytes(32).toString('hex');
    const expiresAt = this.now() + this.ttlMs;
    this.pending.set(digest(secret), expiresAt);
    while (this.pending.size > this.max) this.pending.delete(this.pending.keys().next().value as string);
    return { secret, expiresAt };
  }

  /** True once for a secret that was issued and has not expired; it is gone afterwards. */
  redeem(secret: string | undefined): boolean {
    if (typeof secret !== 'string' || !SECRET_RE.test(secret)) return false;
    const key = digest(secret);
    const deadline = this.pending.get(key);
    if (deadline === undefined) return false;
    this.pending.delete(key);
    return this.now() <= deadline;
  }

  /** How many are outstanding (expired ones dropped first). */
  size(): number {
    this.prune();
    return this.pending.size;
  }

  private prune(): void {
    const t = this.now();
    for (const [k, deadline] of this.pending) if (deadline < t) this.pending.delete(k);
  }
}
