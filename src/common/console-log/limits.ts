/**
 * How big a VM's console log may grow: `files` files of at most `fileBytes`
 * each (console.log, console.log.1, ...), the oldest dropped when the newest
 * fills. Both engines write it this way (hangar-vmm itself, QEMU through
 * hangar-conlog), and the daemon reads it back across the files.
 */
import fs from 'node:fs';
import { HangarError } from '../errors.js';
import { parseSize } from '../sizes.js';

export interface ConsoleLogLimit {
  fileBytes: number;
  files: number;
}

export const DEFAULT_CONSOLE_LOG_LIMIT: ConsoleLogLimit = { fileBytes: 8 * 1024 * 1024, files: 2 };
export const MIN_CONSOLE_LOG_FILE_BYTES = 4096;
export const MAX_CONSOLE_LOG_FILES = 10;

/** Throws INVALID_ARGUMENT unless the limit is one both writers accept. */
export function checkConsoleLogLimit(l: ConsoleLogLimit): ConsoleLogLimit {
  if (!Number.isSafeInteger(l.fileBytes) || l.fileBytes < MIN_CONSOLE_LOG_FILE_BYTES) {
    throw new HangarError('INVALID_ARGUMENT', `console log file size must be at least ${MIN_CONSOLE_LOG_FILE_BYTES} bytes, got ${l.fileBytes}`);
  }
  if (!Number.isInteger(l.files) || l.files < 2 || l.files > MAX_CONSOLE_LOG_FILES) {
    throw new HangarError('INVALID_ARGUMENT', `console log files must be 2..${MAX_CONSOLE_LOG_FILES}, got ${l.files}`);
  }
  return l;
}

/**
 * The daemon's setting: HANGAR_CONSOLE_LOG_SIZE (per file, e.g. `8M`) and
 * HANGAR_CONSOLE_LOG_FILES (how many, console.log included), else the default.
 */
export function consoleLogLimitFromEnv(env: NodeJS.ProcessEnv = process.env): ConsoleLogLimit {
  const size = env.HANGAR_CONSOLE_LOG_SIZE;
  const files = env.HANGAR_CONSOLE_LOG_FILES;
  return checkConsoleLogLimit({
    fileBytes: size ? parseSize(size, 'HANGAR_CONSOLE_LOG_SIZE') : DEFAULT_CONSOLE_LOG_LIMIT.fileBytes,
    files: files ? Number(files) : DEFAULT_CONSOLE_LOG_LIMIT.files,
  });
}

/** The log's files, oldest first: FILE.(n-1) ... FILE.1, FILE. */
export function consoleLogFiles(file: string, files: number): string[] {
  const out: string[] = [];
  for (let k = files - 1; k >= 1; k--) out.push(`${file}.${k}`);
  out.push(file);
  return out;
}

/**
 * The last `maxBytes` of the log, read across its rotated files (oldest
 * first). Files that do not exist are skipped; so is any file beyond
 * MAX_CONSOLE_LOG_FILES, whatever the limit was when they were written.
 */
export function readConsoleLogTail(file: string, maxBytes: number): Buffer {
  const parts: Buffer[] = [];
  let want = maxBytes;
  for (const f of consoleLogFiles(file, MAX_CONSOLE_LOG_FILES).reverse()) {
    if (want <= 0) break;
    let fd: number;
    try { fd = fs.openSync(f, 'r'); } catch { continue; }
    try {
      const size = fs.fstatSync(fd).size;
      const len = Math.min(size, want);
      const buf = Buffer.alloc(len);
      const got = len > 0 ? fs.readSync(fd, buf, 0, len, size - len) : 0;
      parts.unshift(buf.subarray(0, got));
      want -= got;
    } finally {
      fs.closeSync(fd);
    }
  }
  return Buffer.concat(parts);
}

/** hangar-vmm's options for the limit (parsed back by consoleLogLimitFromArgs). */
export function consoleLogArgs(l: ConsoleLogLimit): string[] {
  return ['--console-log-size', String(l.fileBytes), '--console-log-files', String(l.files)];
}

export function consoleLogLimitFromArgs(size: string | undefined, files: string | undefined): ConsoleLogLimit {
  return checkConsoleLogLimit({
    fileBytes: size !== undefined ? parseSize(size, '--console-log-size') : DEFAULT_CONSOLE_LOG_LIMIT.fileBytes,
    files: files !== undefined ? Number(files) : DEFAULT_CONSOLE_LOG_LIMIT.files,
  });
}
