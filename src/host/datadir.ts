/**
 * The data directory holds the database, the daemon's log, the API token and
 * the TLS key: nobody but the daemon's user may read it. A folder made by an
 * older Hangar (or by hand) may be more open; it is tightened at every start.
 * Work folders a crashed daemon left behind are removed at start too.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../common/log.js';
import { cleanStaleBuildFolders, cleanStaleImportFolders } from './images/index.js';

/**
 * Files of the daemon's own that must be 0600 (SQLite's journal files included). Not the
 * API token: one that others could read may have been read, so the daemon refuses it
 * (auth.ts) rather than quietly tightening it and serving with it.
 */
const PRIVATE_FILES = ['hangar.db', 'hangar.db-wal', 'hangar.db-shm', 'hangar.db-journal', 'hangard.log', 'hangard.listen', 'hangard.pid', 'hangard.stderr'];

/** Makes the data directory 0700 and the daemon's files in it 0600; returns what was changed. */
export function secureDataDir(dataDir: string): string[] {
  const changed: string[] = [];
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const tighten = (p: string, mode: number): void => {
    let st: fs.Stats;
    try { st = fs.lstatSync(p); } catch { return; }
    // A symlink is left alone: chmod would change what it points at.
    if (st.isSymbolicLink()) return;
    if ((st.mode & 0o777) !== mode && (st.mode & 0o077) !== 0) {
      fs.chmodSync(p, mode);
      changed.push(p);
    }
  };
  tighten(dataDir, 0o700);
  for (const f of PRIVATE_FILES) tighten(path.join(dataDir, f), 0o600);
  // Made 0600 before SQLite and the logger open them (they would make them 0644); SQLite
  // reads an empty file as an empty database and gives its journal files the same mode.
  for (const f of ['hangar.db', 'hangard.log']) fs.closeSync(fs.openSync(path.join(dataDir, f), fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_APPEND | fs.constants.O_NOFOLLOW, 0o600));
  return changed;
}

/** Removes work folders of imports and builds that a crashed daemon left (ours only, stale only). */
export function cleanStaleWorkFolders(log: Logger): void {
  const removed = [...cleanStaleImportFolders(), ...cleanStaleBuildFolders()];
  if (removed.length > 0) log.info({ removed }, 'removed work folders a previous daemon left behind');
}
