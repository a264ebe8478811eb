/**
 * hangard's log file and how a failed start is reported.
 *
 * pino's file destination (SonicBoom) opens its file asynchronously when given
 * a path, and until then it cannot flush: a start-up error thrown in that
 * window made the exit handler pino registers throw "sonic boom is not ready
 * yet" after (and over) the real error. The file is therefore opened here,
 * synchronously, and SonicBoom gets the descriptor: it is ready from the start,
 * so any exit, early or late, flushes what was logged.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { HangarError } from '../common/errors.js';

/** The daemon's log file, open for appending (0600, as datadir.ts makes it), as a pino destination ready at once. */
export function openDaemonLog(file: string): pino.DestinationStream {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_APPEND | fs.constants.O_NOFOLLOW, 0o600);
  return pino.destination({ fd, sync: false });
}

/** The code of anything thrown: a HangarError's, a system or SQLite error's (`EACCES`, `SQLITE_NOTADB`), else INTERNAL. */
export function errorCode(e: unknown): string {
  if (e instanceof HangarError) return e.code;
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code !== '' ? code : 'INTERNAL';
}

/** The one line hangard prints on stderr when it cannot start: the error's own message and its code. */
export function startupErrorLine(e: unknown): string {
  return `hangard: ${e instanceof Error ? e.message : String(e)} (${errorCode(e)})\n`;
}
