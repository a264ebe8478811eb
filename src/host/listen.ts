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
 * Starts the TCP listener: TLS with the daemon's certificate unless
 * insecureHttp (loopback only), the token required on every request.
 * Writes the bound address to <dataDir>/hangard.listen (for port 0).
 */
export async function listenTcp(ctx: ApiContext, dataDir: string, o: TcpListenOptions): Promise<{ server: FastifyInstance; address: string }> {
  if (o.insecureHttp && !isLoopback(o.host)) {
    throw new HangarError('INVALID_ARGUMENT', `--insecure-http serves plain HTTP and is allowed on loopback addresses only (127.0.0.1, ::1), not on "${o.host}"`);
  }
  const token = loadOrCreateToken(dataDir);
  let tls: { cert: string; key: string } | undefined;
  if (!o.insecureHttp) {
    const c = ensureServerCertificate(dataDir);
    tls = { cert: c.cert, key: c.key };
    ctx.tlsFingerprint = c.fingerprint;
  }
  const server = await buildServer(ctx, { token, ...(tls ? { tls } : {}) });
  await server.listen({ host: o.host, port: o.port });
  const addr = server.server.address();
  const address = addr && typeof addr === 'object' ? `${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}` : String(addr);
  // Tests and tools that asked for port 0 read the real address here.
  fs.writeFileSync(path.join(dataDir, 'hangard.listen'), `${address}\n`, { mode: 0o600 });
  return { server, address };
}
