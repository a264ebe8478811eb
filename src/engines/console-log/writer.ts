/**
 * QEMU's console log, bounded: QEMU cannot rotate its chardev logfile, so it
 * writes into a pipe instead (`-add-fd` + `logfile=/dev/fdset/N`), and
 * hangar-conlog (native/hangar-conlog.c, a ~100-line C program) reads the
 * other end and writes the rotated files. The writer is detached (its own
 * session), so it keeps logging while the daemon is down; it holds only the
 * read end, so it sees end-of-file, and exits, when QEMU does. See
 * docs/engines.md for why it is C and not Node.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { HangarError } from '../../common/errors.js';
import { projectRoot } from '../../common/paths.js';
import { checkConsoleLogLimit, type ConsoleLogLimit } from '../../common/console-log/limits.js';

/** Where setup (scripts/setup.sh) builds the writer; built here on first use when missing. */
export function conlogBinary(): string {
  return process.env.HANGAR_CONLOG ?? path.join(projectRoot(), 'dist', 'native', 'hangar-conlog');
}

function ensureBinary(): string {
  const bin = conlogBinary();
  if (fs.existsSync(bin)) return bin;
  const src = path.join(projectRoot(), 'native', 'hangar-conlog.c');
  try {
    fs.mkdirSync(path.dirname(bin), { recursive: true });
    const tmp = `${bin}.${process.pid}.tmp`;
    execFileSync('gcc', ['-O2', '-Wall', '-o', tmp, src], { stdio: ['ignore', 'ignore', 'pipe'] });
    fs.renameSync(tmp, bin);
  } catch (e) {
    throw new HangarError('ENGINE_FAILED', `the console log writer ${bin} is missing and could not be built from ${src} (run scripts/setup.sh): ${(e as Error).message}`);
  }
  return bin;
}

export interface ConsoleLogPipe {
  /** The pipe's write end, to hand to QEMU; close it (closeWriteEnd) once QEMU has it. */
  readonly writeFd: number;
  readonly writerPid: number;
  closeWriteEnd(): void;
}

/**
 * Starts the writer for `file` and returns the pipe QEMU is to write into.
 * The pipe is made from a FIFO that is removed at once, which gives plain
 * pipe ends (QEMU's fd sets want a write-only descriptor) without native code.
 */
export function startConsoleLogWriter(file: string, limit: ConsoleLogLimit, runDir: string, stderrFd: number | 'ignore' = 'ignore'): ConsoleLogPipe {
  checkConsoleLogLimit(limit);
  const bin = ensureBinary();
  const fifo = path.join(runDir, `console-log.${process.pid}.fifo`);
  fs.rmSync(fifo, { force: true });
  execFileSync('mkfifo', ['-m', '600', fifo]);
  let readFd: number | null = null;
  let writeFd: number | null = null;
  try {
    readFd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    writeFd = fs.openSync(fifo, fs.constants.O_WRONLY);
  } catch (e) {
    if (readFd !== null) fs.closeSync(readFd);
    throw new HangarError('ENGINE_FAILED', `console log pipe: ${(e as Error).message}`);
  } finally {
    fs.rmSync(fifo, { force: true });
  }
  let child;
  try {
    child = spawn(bin, [file, String(limit.fileBytes), String(limit.files)], { detached: true, stdio: [readFd, 'ignore', stderrFd] });
  } finally {
    // The writer has its own copy of the read end now; ours must go so only the writer holds it.
    fs.closeSync(readFd);
  }
  child.on('error', () => { /* reported below through the missing pid */ });
  child.unref();
  if (child.pid === undefined) {
    fs.closeSync(writeFd);
    throw new HangarError('ENGINE_FAILED', `could not start the console log writer ${bin}`);
  }
  let open = true;
  const w = writeFd;
  return {
    writeFd: w,
    writerPid: child.pid,
    closeWriteEnd: () => { if (open) { open = false; fs.closeSync(w); } },
  };
}
