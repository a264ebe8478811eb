/**
 * The lock that keeps two processes (daemons sharing HANGAR_IMAGE_DIR, test
 * runs) from building the same image at once: imageDir()/<name>.lock,
 * locked with flock(2).
 *
 * The kernel holds the lock for the open file, so it is free exactly when no
 * live process holds it: a builder that dies, even by SIGKILL, frees it at
 * once, and nobody has to judge from the file whether its holder is still
 * there. (A pid file judged that way was raced: two processes that both saw
 * a dead builder's pid each removed "the stale lock" — the second one
 * removing the first one's fresh lock — and both built; a pid reused after a
 * crash looked alive for the whole wait.) The file says the holder's pid, for
 * people only.
 *
 * The holder unlinks the file before it lets go, so that no lock file is left
 * behind; a process that opened the file just before, and gets the lock just
 * after, holds a lock on a file no longer at the path, and so tries again
 * with the file now there.
 */
import fs from 'node:fs';
import { HangarError } from '../../common/errors.js';
import { EAGAIN, LOCK_EX, LOCK_NB, LOCK_SH, errno, errnoName, libc } from '../../kvm/libc.js';

export interface BuildLock {
  /** Removes the lock file and lets the lock go. */
  release(): void;
}

/** Opens the lock file, null when it is not there (and `create` is false). */
function openLock(file: string, create: boolean): number | null {
  try {
    return fs.openSync(file, create ? fs.constants.O_RDWR | fs.constants.O_CREAT : fs.constants.O_RDONLY, 0o644);
  } catch (e) {
    if (!create && (e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new HangarError('INTERNAL', `cannot open the image build lock ${file}: ${(e as Error).message}`, { lock: file });
  }
}

/** flock without waiting: true when taken, false when another open file holds it. */
function flockNow(fd: number, op: number, file: string): boolean {
  if (libc.flock(fd, op | LOCK_NB) === 0) return true;
  const e = errno();
  if (e === EAGAIN) return false;
  throw new HangarError('INTERNAL', `cannot lock the image build lock ${file}: ${errnoName(e)}`, { lock: file, errno: e });
}

/** Whether `fd` is still the file at `file` (its holder may have unlinked it meanwhile). */
function isAtPath(fd: number, file: string): boolean {
  const mine = fs.fstatSync(fd);
  try {
    const there = fs.statSync(file);
    return there.ino === mine.ino && there.dev === mine.dev;
  } catch {
    return false;
  }
}

/**
 * Takes the lock when no one holds it, without waiting; null when someone
 * does — another process, or this one through an earlier tryBuildLock.
 */
export function tryBuildLock(file: string): BuildLock | null {
  for (;;) {
    const fd = openLock(file, true)!;
    let ok = false;
    try {
      if (!flockNow(fd, LOCK_EX, file)) return null;
      if (!isAtPath(fd, file)) continue; // unlinked by the holder we waited for: try the file there now
      fs.ftruncateSync(fd);
      fs.writeSync(fd, `${process.pid}\n`, 0);
      ok = true;
      return {
        release(): void {
          fs.rmSync(file, { force: true });
          fs.closeSync(fd);
        },
      };
    } finally {
      if (!ok) fs.closeSync(fd);
    }
  }
}

/** Whether someone (this process included) holds the lock now. */
export function buildLockHeld(file: string): boolean {
  const fd = openLock(file, false);
  if (fd === null) return false;
  try {
    // A shared lock for an instant: refused only while someone holds it exclusively.
    return !flockNow(fd, LOCK_SH, file);
  } finally {
    fs.closeSync(fd);
  }
}

/** The pid the lock file names (for messages), or null. */
export function buildLockPid(file: string): number | null {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}
