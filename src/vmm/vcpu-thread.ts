/**
 * Starting vCPU worker threads. A thread costs ~23 ms and ~10 MiB for its V8
 * isolate and Node environment, plus ~15 ms for its modules (koffi, the KVM
 * wrappers), so hangar-vmm starts one ahead of time (prewarmVcpuThread) and
 * the boot vCPU takes it at InstanceStart. This module imports nothing heavy,
 * so main.ts can do that before it has loaded the machine model.
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { VCPU_WORKER_LIMITS } from './process-flags.js';
import type { VcpuWorkerData } from './vcpu-protocol.js';

function workerUrl(): { url: URL; ts: boolean } {
  const here = fileURLToPath(import.meta.url);
  const ts = here.endsWith('.ts');
  return { url: new URL(ts ? './vcpu-worker.ts' : './vcpu-worker.js', import.meta.url), ts };
}

/** A vCPU thread started before it is needed: it loads its modules, then waits for its vCPU. */
let spare: { worker: Worker; failed: boolean } | undefined;

/**
 * Starts one vCPU thread ahead of time (compiled dist/ code only). The thread has no
 * workerData: vcpu-worker.ts then waits for one {t:'init', data} message.
 */
export function prewarmVcpuThread(): void {
  const { url, ts } = workerUrl();
  if (spare || ts) return;
  const s = { worker: new Worker(url, { workerData: null, resourceLimits: VCPU_WORKER_LIMITS }), failed: false };
  // Until it is used, a failure only means the next start makes a fresh thread.
  s.worker.once('error', () => { s.failed = true; });
  s.worker.once('exit', () => { s.failed = true; });
  s.worker.unref(); // an unused spare never keeps the process alive
  spare = s;
}

/** The thread for one vCPU: the prewarmed one if there is a healthy one, else a new one. */
export function startVcpuThread(data: VcpuWorkerData): Worker {
  const { url, ts } = workerUrl();
  const s = spare;
  spare = undefined;
  if (s && !s.failed) {
    s.worker.ref();
    s.worker.postMessage({ t: 'init', data });
    return s.worker;
  }
  if (s) void s.worker.terminate();
  if (!ts) return new Worker(url, { workerData: data, resourceLimits: VCPU_WORKER_LIMITS });
  // .ts workers do not load under tsx directly: register tsx inside the worker first.
  const tsxApi = pathToFileURL(fileURLToPath(import.meta.resolve('tsx/esm/api'))).href;
  const src = `import(${JSON.stringify(tsxApi)}).then((m) => { m.register(); return import(${JSON.stringify(url.href)}); });`;
  return new Worker(src, { eval: true, workerData: data, resourceLimits: VCPU_WORKER_LIMITS });
}
