/**
 * `hangar launch --ssh-key FILE --user-data FILE --network-config FILE`:
 * reads the files on the CLI's side (the daemon may be remote) into the
 * create request's sshKeys, userData and networkConfig. The daemon checks
 * their content (src/host/cloudinit); here only what needs the files:
 * they exist, are text, and are not larger than the daemon would take.
 *
 * Without --ssh-key the CLI user's own public keys (~/.ssh/id_*.pub) are
 * sent, so `hangar launch debian-12 web` gives a VM one can log in to.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HangarError } from '../common/errors.js';

/** The daemon's limits (src/host/cloudinit), repeated so a too-large file fails before any request. */
const MAX_USER_DATA = 256 * 1024;
const MAX_NETWORK_CONFIG = 64 * 1024;
const MAX_KEY_FILE = 64 * 1024;

export interface CloudInitOptions {
  /** --ssh-key FILE (repeatable); absent: the user's default keys. */
  sshKey?: string[];
  userData?: string;
  networkConfig?: string;
}

export interface CloudInitFields {
  sshKeys?: string[];
  userData?: string;
  networkConfig?: string;
}

function readText(file: string, option: string, max: number): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    throw new HangarError('INVALID_ARGUMENT', `${option} ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  if (!st.isFile()) throw new HangarError('INVALID_ARGUMENT', `${option} ${file}: not a regular file`);
  if (st.size > max) throw new HangarError('INVALID_ARGUMENT', `${option} ${file}: ${st.size} bytes; at most ${max} (${max / 1024} KiB) are accepted`);
  const buf = fs.readFileSync(file);
  if (buf.includes(0)) throw new HangarError('INVALID_ARGUMENT', `${option} ${file}: not a text file (it holds NUL bytes; gzip is not accepted)`);
  return buf.toString('utf8');
}

/** The key lines of a .pub or authorized_keys-style file: blank lines and # comments skipped. */
export function keyLines(text: string): string[] {
  return text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
}

/** The CLI user's public keys: ~/.ssh/id_*.pub, in name order; [] when there are none. */
export function defaultSshKeys(home = os.homedir()): string[] {
  const dir = path.join(home, '.ssh');
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => /^id_[A-Za-z0-9_-]+\.pub$/.test(n)).sort();
  } catch {
    return [];
  }
  const keys: string[] = [];
  for (const n of names) {
    try {
      // Only lines that look like keys: an odd file in ~/.ssh must not make every launch fail.
      keys.push(...keyLines(readText(path.join(dir, n), 'default key', MAX_KEY_FILE)).filter((l) => /^(ssh-|ecdsa-|sk-)/.test(l)));
    } catch { /* unreadable: skipped */ }
  }
  return keys;
}

/** The create request's cloud-init fields for these options. */
export function cloudInitFields(o: CloudInitOptions, home?: string): CloudInitFields {
  const f: CloudInitFields = {};
  if (o.sshKey && o.sshKey.length > 0) {
    const keys: string[] = [];
    for (const file of o.sshKey) {
      const lines = keyLines(readText(file, '--ssh-key', MAX_KEY_FILE));
      if (lines.length === 0) throw new HangarError('INVALID_ARGUMENT', `--ssh-key ${file}: holds no key`);
      keys.push(...lines);
    }
    f.sshKeys = keys;
  } else {
    const keys = defaultSshKeys(home);
    if (keys.length > 0) f.sshKeys = keys;
  }
  if (o.userData !== undefined) f.userData = readText(o.userData, '--user-data', MAX_USER_DATA);
  if (o.networkConfig !== undefined) f.networkConfig = readText(o.networkConfig, '--network-config', MAX_NETWORK_CONFIG);
  return f;
}
