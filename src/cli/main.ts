#!/usr/bin/env node
/** Entry point of `hangar` (see run.ts for the error and exit-code handling). */
import { runCli } from './run.js';

const code = await runCli(process.argv.slice(2));
process.exitCode = code;
// Long-lived handles (a console WebSocket, stdin) must not keep a finished command alive.
setTimeout(() => process.exit(code), 50).unref();
