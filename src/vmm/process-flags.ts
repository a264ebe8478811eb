/**
 * How hangar-vmm's Node.js runtime is tuned, in one place: whoever spawns the
 * VMM (the micro engine, the benchmarks, the tests) passes VMM_NODE_FLAGS to
 * node before the script, and the Machine gives every vCPU worker thread
 * VCPU_WORKER_LIMITS. docs/vmm.md ("Start-up and memory") has the
 * measurements behind each choice.
 */
import type { ResourceLimits } from 'node:worker_threads';

/**
 * Node/V8 flags for the hangar-vmm process: `spawn(process.execPath, [...VMM_NODE_FLAGS, vmmMain, ...args])`.
 *
 * --max-semi-space-size=1: the young generation of every isolate (the main thread and each
 * vCPU worker) stays at 1 MiB semi-spaces instead of growing to 16 MiB under allocation
 * (a fresh vCPU worker's V8 heap: 7.2 instead of 9.5 MiB); virtio-blk/net throughput and exit
 * rates were unchanged within noise. Flags that were measured and left out: --jitless and
 * --lite-mode (−7 MiB RSS but −20–25 % exits/s), --single-threaded-gc, --v8-pool-size,
 * --no-short-builtin-calls, --max-old-space-size (no measurable gain).
 */
export const VMM_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1'];

/**
 * Heap limits of one vCPU worker thread (its own V8 isolate). Empty on purpose: with
 * VMM_NODE_FLAGS the worker's young generation is already small, and a lower old-generation
 * limit saves nothing measurable while an out-of-memory worker would crash the VM.
 */
export const VCPU_WORKER_LIMITS: ResourceLimits = {};
