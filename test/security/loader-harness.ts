/**
 * Starts loader-worker.ts and waits for its answer, ending the worker (and
 * failing) when it stops reporting progress: that is how a loader that loops
 * forever on a hostile image shows up as a test failure instead of a hung suite.
 */
import { Worker } from 'node:worker_threads';
import type { LoaderJob } from './loader-worker.js';

export interface LoaderOutcome {
  t: 'done' | 'fail' | 'hung';
  result?: 'loaded' | 'refused';
  loaded?: number;
  refused?: number;
  seed?: number;
  message?: string;
}

/** `stallMs`: how long the worker may go without a progress message before it counts as hung. */
export function runLoaderJob(job: LoaderJob, stallMs = 30_000): Promise<LoaderOutcome> {
  const w = new Worker(new URL('./loader-worker.js', import.meta.url), { workerData: job });
  return new Promise((resolve, reject) => {
    let lastSeed: number | undefined;
    let timer: NodeJS.Timeout;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        void w.terminate();
        resolve({ t: 'hung', ...(lastSeed !== undefined ? { seed: lastSeed } : {}), message: `loader made no progress for ${stallMs} ms` });
      }, stallMs);
    };
    arm();
    w.on('message', (m: Omit<LoaderOutcome, 't'> & { t: LoaderOutcome['t'] | 'progress' }) => {
      if (m.t === 'progress') { lastSeed = m.seed; arm(); return; }
      clearTimeout(timer);
      void w.terminate();
      resolve(m as LoaderOutcome);
    });
    w.once('error', (e) => { clearTimeout(timer); reject(e); });
  });
}
