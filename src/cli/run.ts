/**
 * Runs the `hangar` command tree on an argument list and turns any error
 * into one line on stderr, `Error: <message> (<CODE>)`, and an exit code
 * that follows the code (see exit-codes.ts).
 */
import { CommanderError, type Command } from 'commander';
import { toHangarError } from '../common/errors.js';
import { EXIT, exitCodeFor } from './exit-codes.js';
import { buildProgram } from './program.js';

function exitOverrideAll(cmd: Command): void {
  cmd.exitOverride();
  for (const c of cmd.commands) exitOverrideAll(c);
}

/** Runs the CLI on argv (without node and script) and returns the exit code instead of exiting. */
export async function runCli(argv: string[]): Promise<number> {
  const program = buildProgram();
  exitOverrideAll(program);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version end here too, with code 0; commander already printed its message.
      return e.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
    }
    const err = toHangarError(e);
    process.stderr.write(`Error: ${err.message} (${err.code})\n`);
    return exitCodeFor(err.code);
  }
}
