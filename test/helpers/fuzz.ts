/**
 * Seeded randomness for hostile-input tests: every run of a fuzz target
 * replays the same inputs for the same seed, so a failure names the seed
 * that reproduces it. The suite runs each target with a small fixed
 * iteration count; `HANGAR_FUZZ_SCALE=N` (what `npm run fuzz` sets) runs N
 * times as many, with seeds further along the same sequence.
 */

/** A small seeded generator (mulberry32): uniform 32-bit values. */
export class Rng {
  private s: number;
  constructor(readonly seed: number) {
    this.s = seed >>> 0;
  }

  u32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** 0 .. n-1 */
  int(n: number): number {
    return n <= 1 ? 0 : this.u32() % n;
  }

  bool(): boolean {
    return (this.u32() & 1) === 1;
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }

  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }

  /** A 32-bit value biased towards the ones that break length arithmetic. */
  edgyU32(): number {
    switch (this.int(9)) {
      case 0: return 0;
      case 7: return (0x100000000 - 4 * (1 + this.int(4))) >>> 0; // -4 .. -16: wraps padded sums
      case 1: return 0xffffffff - this.int(16);
      case 2: return 0x80000000 + this.int(16) - 8;
      case 3: return this.int(64);
      case 4: return (1 << this.int(32)) >>> 0;
      default: return this.u32();
    }
  }
}

/** How many times the suite's iteration counts are multiplied (HANGAR_FUZZ_SCALE, default 1). */
export function fuzzScale(): number {
  const n = Number(process.env.HANGAR_FUZZ_SCALE ?? '1');
  return Number.isFinite(n) && n >= 1 ? Math.floor(n) : 1;
}

/** Runs `body` for `iterations × fuzzScale()` seeds derived from `base`; a failure says which seed. */
export async function forSeeds(base: number, iterations: number, body: (rng: Rng, seed: number) => void | Promise<void>): Promise<number> {
  const n = iterations * fuzzScale();
  for (let i = 0; i < n; i++) {
    const seed = (base + i * 0x9e3779b1) >>> 0;
    try {
      await body(new Rng(seed), seed);
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      err.message = `seed ${seed} (base ${base}, iteration ${i}): ${err.message}`;
      throw err;
    }
  }
  return n;
}
