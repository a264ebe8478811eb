/**
 * Unix sockets that are private from their first moment: bind() runs under
 * umask 0177, so the socket file is 0600 when it appears — there is no
 * window between listen() and a chmod in which another user could connect.
 */
import fs from 'node:fs';
import type net from 'node:net';

export async function listenPrivate(server: net.Server, socketPath: string): Promise<void> {
  const old = process.umask(0o177);
  let listening: Promise<void>;
  try {
    // net.Server binds a Unix socket synchronously inside listen(): the umask covers it.
    listening = new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => { server.off('error', reject); resolve(); });
    });
  } finally {
    process.umask(old);
  }
  await listening;
  // Belt and braces: a umask a caller changed meanwhile cannot loosen it.
  fs.chmodSync(socketPath, 0o600);
}
