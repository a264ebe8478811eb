/**
 * A counter that runs inside the tiny guest and prints `tick-N` on its
 * console every 0.2 s, so a test can tell whether the guest's vCPUs really
 * run: a paused guest prints no new tick, a resumed one carries on counting.
 * The counter stops when a flag file appears in the guest.
 */

const STOP_FLAG = '/tmp/hangar-ticks-stop';

/**
 * Shell line that starts the counter in the background (typed at the guest's prompt). The extra
 * subshell keeps it out of the shell's job table, so no job-control notice lands in the output.
 */
export const START_TICKS = `rm -f ${STOP_FLAG}; ( (i=0; while [ ! -e ${STOP_FLAG} ]; do i=$((i+1)); echo tick-$i; sleep 0.2; done) & )`;

/** Shell line that ends the counter (it finishes its current round first). */
export const STOP_TICKS = `touch ${STOP_FLAG}`;

/** The highest tick number in `text`, 0 when there is none (the echoed command line itself has no digits after `tick-`). */
export function lastTick(text: string): number {
  let max = 0;
  for (const m of text.matchAll(/tick-(\d+)\r?\n/g)) max = Math.max(max, Number(m[1]));
  return max;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `read` (which returns the console text seen so far) until the counter
 * has reached `atLeast`; resolves with the tick then seen. Throws after limitMs.
 */
export async function waitForTick(read: () => Promise<string> | string, atLeast: number, limitMs = 120_000): Promise<number> {
  const end = Date.now() + limitMs;
  for (;;) {
    const n = lastTick(await read());
    if (n >= atLeast) return n;
    if (Date.now() > end) throw new Error(`guest counter did not reach tick-${atLeast} within ${limitMs} ms (last seen tick-${n})`);
    await sleep(200);
  }
}

/**
 * After a restore to an earlier moment: polls `read` (the console text since the restore was
 * asked) until the counter drops below the tick before it (`from`, or one seen in between: the
 * old guest's last ticks may still arrive after the request returns) and resolves with the first
 * tick of the lower run — where the restored guest goes on. Throws after limitMs, naming the
 * ticks seen (a guest that was not restored only counts up).
 */
export async function waitForCountBack(read: () => Promise<string> | string, from: number, limitMs = 120_000): Promise<number> {
  const end = Date.now() + limitMs;
  for (;;) {
    const ticks = [...(await read()).matchAll(/tick-(\d+)\r?\n/g)].map((m) => Number(m[1]));
    let prev = from;
    for (const n of ticks) {
      if (n < prev) return n;
      prev = n;
    }
    if (Date.now() > end) throw new Error(`guest counter did not go back below tick-${from} within ${limitMs} ms (seen: ${ticks.slice(0, 20).join(' ') || 'none'})`);
    await sleep(200);
  }
}

/**
 * How long to watch a paused guest: long enough that a running guest, at the
 * pace it was just seen to count, would have printed several ticks. `ms` is
 * how long it took to print `ticks` ticks while running.
 */
export function watchWindowMs(ms: number, ticks: number): number {
  return Math.max(4000, Math.ceil((ms / Math.max(1, ticks)) * 8));
}
