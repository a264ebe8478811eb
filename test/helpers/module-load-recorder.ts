/**
 * Test-only preload for hangar-vmm (`node --import <this compiled file>`, with
 * HANGAR_TEST_MODULE_LOG=FILE): records, in FILE, the URL of every ES module
 * the process loads (module-load-hooks.ts) and of every CommonJS module it
 * requires, and writes the line `--- first answer` when the process writes
 * the end of its first HTTP response. Whatever precedes that line was loaded
 * before the control API first answered. Nothing of this is in the product.
 */
import fs from 'node:fs';
import http from 'node:http';
import { createRequire, register } from 'node:module';
import { isMainThread } from 'node:worker_threads';

export const FIRST_ANSWER_MARK = '--- first answer';

const file = process.env.HANGAR_TEST_MODULE_LOG;
// Only the VMM's main thread (its vCPU worker threads inherit the preload) records.
if (file && isMainThread) {
  register(new URL('./module-load-hooks.js', import.meta.url), { data: { file } });

  // CommonJS modules required by CommonJS modules (pino, koffi's loader) do not pass the ES hooks.
  const Module = createRequire(import.meta.url)('node:module') as { _load: (request: string, ...rest: unknown[]) => unknown };
  const load = Module._load;
  Module._load = function recordedLoad(this: unknown, request: string, ...rest: unknown[]): unknown {
    const r = load.call(this, request, ...rest);
    if (!request.startsWith('node:')) fs.appendFileSync(file, `cjs:${request}\n`);
    return r;
  };

  const end = http.ServerResponse.prototype.end;
  let marked = false;
  http.ServerResponse.prototype.end = function recordedEnd(this: http.ServerResponse, ...args: unknown[]) {
    if (!marked) { marked = true; fs.appendFileSync(file, `${FIRST_ANSWER_MARK}\n`); }
    return (end as (...a: unknown[]) => http.ServerResponse).apply(this, args);
  } as typeof end;
}
