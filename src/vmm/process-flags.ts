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
 * Empty, as measured on Node 20 (2026-11-26, docs/vmm.md): no flag cut memory without costing
 * start-up time or device speed. --max-semi-space-size=1 trims ~2 MiB of V8 heap per isolate
 * but made spawn → first guest instruction ~40 ms slower (more scavenges while modules load);
 * --jitless / --lite-mode save ~7 MiB RSS but cost 20–25 % of the exit rate;
 * --no-short-builtin-calls, --v8-pool-size, --single-threaded(-gc), --max-old-space-size
 * gave nothing measurable. Kept as the one place to add a flag, so every spawner passes the same.
 */
export const VMM_NODE_FLAGS: readonly string[] = [];

/**
 * Heap limits of one vCPU worker thread (its own V8 isolate). Empty on purpose: a worker's
 * heap is ~6 MiB used after its modules load, the limits saved < 1 MiB of RSS per worker
 * (within noise), and an out-of-memory worker would crash the VM.
 */
export const VCPU_WORKER_LIMITS: ResourceLimits = {};
