/**
 * A lock word in shared memory, for state that the device thread and vCPU
 * threads both touch (virtio queues served on vCPU threads, the interrupt
 * status word). Held only for a few microseconds: a waiter sleeps in short
 * Atomics.wait slices and re-checks, and the holder wakes one waiter on release.
 */

/** Takes the lock word; waits (briefly, re-checking) while another thread holds it. */
export function lockWord(a: Int32Array, i: number): void {
  while (Atomics.compareExchange(a, i, 0, 1) !== 0) Atomics.wait(a, i, 1, 1);
}

export function unlockWord(a: Int32Array, i: number): void {
  Atomics.store(a, i, 0);
  Atomics.notify(a, i, 1);
}
