/**
 * Unix sockets that are private from their first moment and ready when they
 * appear.
 *
 * - bind() runs under umask 0177, so the socket file is 0600 from the start:
 *   there is no window between listen() and a chmod in which another user
 *   could connect.
 * - The socket is bound under a temporary name and renamed to its real path
 *   only once it listens. bind() and listen() are two system calls; a client
 *   that polls for the path (the daemon, the tests) and connects between them
 *   is refused (ECONNREFUSED). After the rename the path exists only while
 *   the socket accepts.
 * - The file is removed when the server closes (libuv would remove only the
 *   temporary name it bound).
 */
import fs from 'node:fs';
import path from 'node:path';
import type net from 'node:net';

/** sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;
let staged = 0;

/** A short hidden name in the socket's folder, unique in this process (never longer than the path itself needs). */
function stagingPath(socketPath: string): string {
  const s = path.join(path.dirname(socketPath), `.${process.pid.toString(36)}${(staged++).toString(36)}`);
  // A staging name that does not fit a sockaddr (where the real one does) falls back to binding in place.
  return Buffer.byteLength(s) > MAX_SOCKET_PATH ? socketPath : s;
}

export async function listenPrivate(server: net.Server, socketPath: string): Promise<void> {
  const staging = stagingPath(socketPath);
  try { fs.unlinkSync(staging); } catch { /* not there */ }
  const old = process.umask(0o177);
  let listening: Promise<void>;
  try {
    // net.Server binds a Unix socket synchronously inside listen(): the umask covers it.
    listening = new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(staging, () => { server.off('error', reject); resolve(); });
    });
  } finally {
    process.umask(old);
  }
  await listening;
  // Belt and braces: a umask a caller changed meanwhile cannot loosen it.
  fs.chmodSync(staging, 0o600);
  if (staging !== socketPath) fs.renameSync(staging, socketPath);
  const { ino } = fs.statSync(socketPath);
  server.once('close', () => {
    // Only our own socket: a later process may have put its own at this path.
    try { if (fs.statSync(socketPath).ino === ino) fs.unlinkSync(socketPath); } catch { /* gone already */ }
  });
}
