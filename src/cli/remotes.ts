/**
 * Remote daemons the CLI trusts, by the SHA-256 fingerprint of their TLS
 * certificate, in the manner of `incus remote add`: the first contact shows
 * the fingerprint and, once accepted, it is pinned in the CLI's config file;
 * later a daemon presenting any other certificate is refused.
 *
 * The file is <config dir>/remotes.json (0600; the folder 0700), where the
 * config dir is $HANGAR_CONFIG_DIR, else $XDG_CONFIG_HOME/hangar, else
 * ~/.config/hangar.
 */
import fs from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { HangarError } from '../common/errors.js';

export interface PinnedRemote {
  fingerprint: string;
  addedAt: string;
}

interface RemotesFile {
  remotes: Record<string, PinnedRemote>;
}

export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HANGAR_CONFIG_DIR) return path.resolve(env.HANGAR_CONFIG_DIR);
  const xdg = env.XDG_CONFIG_HOME ?? path.join(os.homedir(), '.config');
  return path.join(xdg, 'hangar');
}

function remotesFile(): string {
  return path.join(configDir(), 'remotes.json');
}

/** A fingerprint as Hangar writes it: lower-case hex, no colons. Accepts `AB:CD:…` too. */
export function normalizeFingerprint(fp: string): string {
  const n = fp.replace(/[:\s]/g, '').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(n)) throw new HangarError('INVALID_ARGUMENT', `"${fp}" is not a SHA-256 fingerprint (64 hex digits, colons allowed)`);
  return n;
}

export function loadRemotes(): Record<string, PinnedRemote> {
  let text: string;
  try {
    text = fs.readFileSync(remotesFile(), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new HangarError('INVALID_ARGUMENT', `cannot read ${remotesFile()}: ${(e as Error).message}`);
  }
  try {
    const j = JSON.parse(text) as Partial<RemotesFile>;
    const out: Record<string, PinnedRemote> = {};
    for (const [k, v] of Object.entries(j.remotes ?? {})) {
      if (v && typeof v.fingerprint === 'string') out[k] = { fingerprint: v.fingerprint, addedAt: String(v.addedAt ?? '') };
    }
    return out;
  } catch {
    throw new HangarError('INVALID_ARGUMENT', `${remotesFile()} is not valid JSON; fix or remove it`);
  }
}

function saveRemotes(remotes: Record<string, PinnedRemote>): void {
  const dir = configDir();
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = path.join(dir, `.remotes.json.${process.pid}`);
  fs.writeFileSync(tmp, JSON.stringify({ remotes }, null, 2) + '\n', { mode: 0o600 });
  fs.renameSync(tmp, remotesFile());
}

export function pinnedFingerprint(origin: string): string | undefined {
  return loadRemotes()[origin]?.fingerprint;
}

export function pinRemote(origin: string, fingerprint: string): void {
  const all = loadRemotes();
  all[origin] = { fingerprint: normalizeFingerprint(fingerprint), addedAt: new Date().toISOString() };
  saveRemotes(all);
}

export function unpinRemote(origin: string): boolean {
  const all = loadRemotes();
  if (!all[origin]) return false;
  delete all[origin];
  saveRemotes(all);
  return true;
}

/** Loopback hosts, where plain HTTP is acceptable. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  if (h === 'localhost') return true;
  if (net.isIPv4(h)) return h.startsWith('127.');
  return h === '::1';
}

/** The options for a TLS connection to `origin` (SNI only for names, not addresses). */
export function tlsTarget(origin: string): { host: string; port: number; servername?: string } {
  const u = new URL(origin);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  return { host, port: Number(u.port || 443), ...(net.isIP(host) ? {} : { servername: host }) };
}

/**
 * Opens a TLS connection to `origin` without trusting anything yet and calls
 * back with it only once the server's certificate has the `expected`
 * fingerprint; otherwise the connection is destroyed before a byte of the
 * request (or the token) is sent.
 */
export function connectPinned(origin: string, expected: string, cb: (err: Error | null, socket?: tls.TLSSocket) => void): void {
  const socket = tls.connect({ ...tlsTarget(origin), rejectUnauthorized: false, minVersion: 'TLSv1.2' });
  let done = false;
  const finish = (err: Error | null): void => {
    if (done) return;
    done = true;
    socket.removeListener('error', onError);
    if (err) { socket.destroy(); cb(err); } else cb(null, socket);
  };
  const onError = (e: Error): void => finish(e);
  socket.once('error', onError);
  socket.once('secureConnect', () => {
    const cert = socket.getPeerCertificate();
    const got = cert?.fingerprint256 ? normalizeFingerprint(cert.fingerprint256) : '';
    if (got !== expected) {
      finish(new HangarError('UNAUTHORIZED',
        `the TLS certificate of ${origin} has changed: pinned SHA-256 ${expected}, the server presents ${got || 'none'}. ` +
        'This can be an attack. If the daemon\'s certificate was replaced on purpose, run `hangar remote remove ' + origin + '` and `hangar remote add ' + origin + '`',
        { origin, pinned: expected, presented: got }));
      return;
    }
    finish(null);
  });
}

/** Connects once, reads the server certificate's fingerprint and hangs up (nothing is sent). */
export function fetchFingerprint(origin: string, timeoutMs = 10_000): Promise<{ fingerprint: string; subject: string }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ ...tlsTarget(origin), rejectUnauthorized: false, minVersion: 'TLSv1.2' });
    socket.setTimeout(timeoutMs, () => socket.destroy(new HangarError('TIMEOUT', `no TLS answer from ${origin} within ${timeoutMs} ms`)));
    socket.once('error', (e: NodeJS.ErrnoException) => {
      reject(e instanceof HangarError ? e : new HangarError('UNAVAILABLE', `cannot reach ${origin}: ${e.message}`, e.code ? { cause: e.code } : undefined));
    });
    socket.once('secureConnect', () => {
      const cert = socket.getPeerCertificate();
      socket.destroy();
      if (!cert?.fingerprint256) { reject(new HangarError('UNAVAILABLE', `${origin} presented no certificate`)); return; }
      const subject = cert.subject ? Object.entries(cert.subject).map(([k, v]) => `${k}=${String(v)}`).join(', ') : '';
      resolve({ fingerprint: normalizeFingerprint(cert.fingerprint256), subject });
    });
  });
}

/** Asks a yes/no question on the terminal. */
export function askYesNo(question: string): Promise<boolean> {
  return new Promise((resolve) => {
    process.stderr.write(question);
    const onData = (d: Buffer): void => {
      process.stdin.removeListener('data', onData);
      process.stdin.pause();
      resolve(/^\s*y(es)?\s*$/i.test(d.toString('utf8')));
    };
    process.stdin.resume();
    process.stdin.on('data', onData);
  });
}

/**
 * Makes sure `origin` has a pinned fingerprint before anything is sent to it.
 * Pinned already: done. Otherwise the server's fingerprint is read and
 * accepted when it equals `accept` (HANGAR_REMOTE_FINGERPRINT or a flag), or
 * when the user says yes on a terminal; it is then pinned. Anything else is
 * an UNAUTHORIZED error that shows the fingerprint and how to accept it.
 */
export async function trustRemote(origin: string, accept?: string, interactive = Boolean(process.stdin.isTTY && process.stderr.isTTY)): Promise<string> {
  const pinned = pinnedFingerprint(origin);
  if (pinned) return pinned;
  const { fingerprint, subject } = await fetchFingerprint(origin);
  if (accept !== undefined) {
    const want = normalizeFingerprint(accept);
    if (want !== fingerprint) {
      throw new HangarError('UNAUTHORIZED', `${origin} presents certificate SHA-256 ${fingerprint}, not the expected ${want}`, { origin, presented: fingerprint, expected: want });
    }
    pinRemote(origin, fingerprint);
    return fingerprint;
  }
  if (interactive) {
    process.stderr.write(`Certificate of ${origin}${subject ? ` (${subject})` : ''}\nSHA-256 fingerprint: ${fingerprint}\n`);
    if (await askYesNo('Compare it with `hangar daemon status` (or the log) on that host. Trust it? (y/N) ')) {
      pinRemote(origin, fingerprint);
      return fingerprint;
    }
    throw new HangarError('UNAUTHORIZED', `the certificate of ${origin} was not accepted`, { origin, presented: fingerprint });
  }
  throw new HangarError('UNAUTHORIZED',
    `${origin} is not a trusted remote yet; its certificate's SHA-256 fingerprint is ${fingerprint}. ` +
    `If that is the daemon's (see \`hangar daemon status\` on its host), run \`hangar remote add ${origin} --fingerprint ${fingerprint}\` or set HANGAR_REMOTE_FINGERPRINT=${fingerprint}`,
    { origin, presented: fingerprint });
}
