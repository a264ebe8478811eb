/**
 * The daemon's listeners: the Unix socket, created under a umask so it is
 * never reachable by others, not even between listen() and a chmod; and the
 * optional TCP listener, which serves TLS with the daemon's self-signed
 * certificate (tls.ts) and demands the API token. Plain HTTP on TCP is only
 * for loopback addresses and only when asked for (`--insecure-http`).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { HangarError } from '../common/errors.js';
import { loadOrCreateToken } from './auth.js';
import { ensureServerCertificate } from './tls.js';
import { buildServer, type ApiContext } from './server.js';

export interface TcpListenOptions {
  host: string;
  port: number;
  /** Plain HTTP instead of TLS; refused unless `host` is a loopback address. */
  insecureHttp?: boolean;
}

export function parseListen(v: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new HangarError('INVALID_ARGUMENT', `--listen wants HOST:PORT, got "${v}"`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

/** 127.0.0.0/8, ::1 and their IPv4-mapped form; `localhost` too. Anything else (0.0.0.0, ::) is not. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  const h = host.replace(/^::ffff:/i, '');
  if (net.isIPv4(h)) return h.startsWith('127.');
  if (net.isIPv6(host)) return /^(0{0,4}:){7}0{0,3}1$|^::1$/.test(host);
  return false;
}

/** Listens on the Unix socket with mode 0600 from the first moment. */
export async function listenUnix(app: FastifyInstance, socket: string): Promise<void> {
  const old = process.umask(0o177);
  try {
    await app.listen({ path: socket });
  } finally {
    process.umask(old);
  }
  fs.chmodSync(socket, 0o600);
}

/**
 * Checks the TCP options and loads (or makes) the token and the certificate,
 * before the daemon starts anything, so a bad option or token file stops it
 * at once. Returns the step that starts the listener: TLS with the daemon's
 * certificate unless insecureHttp (loopback only), the token required on
 * every request; it writes the bound address to <dataDir>/hangard.listen.
 */
export function prepareTcpListener(dataDir: string, o: TcpListenOptions): { token: string; tls: boolean; listen(ctx: ApiContext): Promise<{ server: FastifyInstance; address: string }> } {
  if (o.insecureHttp && !isLoopback(o.host)) {
    throw new HangarError('INVALID_ARGUMENT', `--insecure-http serves plain HTTP and is allowed on loopback addresses only (127.0.0.1, ::1), not on "${o.host}"`);
  }
  const token = loadOrCreateToken(dataDir);
  const cert = o.insecureHttp ? null : ensureServerCertificate(dataDir);
  return {
    token,
    tls: cert !== null,
    async listen(ctx) {
      if (cert) ctx.tlsFingerprint = cert.fingerprint;
      const server = await buildServer(ctx, { token, ...(cert ? { tls: { cert: cert.cert, key: cert.key } } : {}) });
      await server.listen({ host: o.host, port: o.port });
      const addr = server.server.address();
      const address = addr && typeof addr === 'object' ? `${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}` : String(addr);
      // Tests and tools that asked for port 0 read the real address here.
      fs.writeFileSync(path.join(dataDir, 'hangard.listen'), `${address}\n`, { mode: 0o600 });
      return { server, address };
    },
  };
}
