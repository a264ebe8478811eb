/**
 * The TCP listener's TLS certificate: self-signed, made at the daemon's first
 * start with the `openssl` command (Node cannot write X.509 certificates),
 * kept in <data dir>/tls/ (server.crt, server.key 0600) and reused after.
 * Clients pin its SHA-256 fingerprint on first use (see src/cli/remotes.ts),
 * as `incus remote add` does, so no certificate authority is involved.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { HangarError } from '../common/errors.js';

export interface ServerCertificate {
  cert: string;
  key: string;
  /** SHA-256 of the DER certificate, lower-case hex without separators. */
  fingerprint: string;
  certFile: string;
  keyFile: string;
}

/** A fingerprint as Hangar writes it: lower-case hex, no colons. Accepts `AB:CD:…` too. */
export function normalizeFingerprint(fp: string): string {
  return fp.replace(/[:\s]/g, '').toLowerCase();
}

export function certificateFingerprint(certPem: string | Buffer): string {
  return normalizeFingerprint(new X509Certificate(certPem).fingerprint256);
}

/** Loads <dataDir>/tls/server.{crt,key}, making them on first start. */
export function ensureServerCertificate(dataDir: string): ServerCertificate {
  const dir = path.join(dataDir, 'tls');
  const certFile = path.join(dir, 'server.crt');
  const keyFile = path.join(dir, 'server.key');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  if (!fs.existsSync(certFile) || !fs.existsSync(keyFile)) generate(dir, certFile, keyFile);
  const kst = fs.lstatSync(keyFile);
  if (!kst.isFile()) throw new HangarError('INVALID_ARGUMENT', `${keyFile} must be a regular file`);
  if ((kst.mode & 0o077) !== 0) fs.chmodSync(keyFile, 0o600);
  const cert = fs.readFileSync(certFile, 'utf8');
  const key = fs.readFileSync(keyFile, 'utf8');
  let fingerprint: string;
  try {
    fingerprint = certificateFingerprint(cert);
  } catch (e) {
    throw new HangarError('INVALID_ARGUMENT', `${certFile} is not a certificate: ${(e as Error).message} (remove ${dir} to make a new one)`);
  }
  return { cert, key, fingerprint, certFile, keyFile };
}

function generate(dir: string, certFile: string, keyFile: string): void {
  // Made aside and renamed into place, so a crash halfway never leaves a key without its certificate.
  const work = fs.mkdtempSync(path.join(dir, '.new-'));
  try {
    const k = path.join(work, 'server.key');
    const c = path.join(work, 'server.crt');
    const host = os.hostname().replace(/[^A-Za-z0-9.-]/g, '') || 'hangard';
    const san = ['DNS:localhost', 'IP:127.0.0.1', 'IP:::1', ...(host !== 'localhost' ? [`DNS:${host}`] : [])].join(',');
    try {
      execFileSync('openssl', [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', k, '-out', c, '-days', '3650', '-subj', `/O=Hangar/CN=hangard@${host}`, '-addext', `subjectAltName=${san}`,
      ], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000, env: { ...process.env, OPENSSL_CONF: '/dev/null' } });
    } catch (e) {
      const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
      if (err.code === 'ENOENT') throw new HangarError('UNSUPPORTED', 'the openssl command is needed to make the TLS certificate (Debian package openssl)');
      throw new HangarError('INTERNAL', `openssl could not make the TLS certificate: ${err.stderr?.toString().trim() || err.message}`);
    }
    fs.chmodSync(k, 0o600);
    fs.chmodSync(c, 0o644);
    fs.renameSync(k, keyFile);
    fs.renameSync(c, certFile);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
