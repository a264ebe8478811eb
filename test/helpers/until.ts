/** Polling for end-to-end tests: what a real daemon or guest will do soon, but not at once. */
import assert from 'node:assert/strict';

/**
 * Calls `get` every 250 ms until it gives a truthy value, and returns that value;
 * fails naming `what` when `ms` pass first.
 */
export async function until<T>(what: string, get: () => Promise<T | null | undefined | false>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (v) return v;
    if (Date.now() > end) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
