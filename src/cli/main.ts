#!/usr/bin/env node
/** Entry point of `hangar` (see run.ts for the error and exit-code handling). */
import { runCli } from './run.js';

// `hangar list | head -1`: a reader that went away is not an error worth a stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
}

const code = await runCli(process.argv.slice(2));
process.exitCode = code;
// Long-lived handles (a console WebSocket, stdin) must not keep a finished command alive.
setTimeout(() => process.exit(code), 50).unref();
