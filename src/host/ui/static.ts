/**
 * Serves the built web UI (a Vite build of web/) under /ui/. Files with a
 * content hash in their name (assets/) are cached for good; index.html is
 * revalidated each time so a new build is picked up. Paths outside the
 * build folder are refused; unknown paths are 404 in the API's envelope.
 * Text files go precompressed when the browser accepts it (encoding.ts).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { HangarError } from '../../common/errors.js';
import { UI_HEADERS } from './headers.js';
import { COMPRESSIBLE, PRECOMPRESSED, pickEncoding, type Precompressed } from './encoding.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.woff2': 'font/woff2',
  '.map': 'application/json',
};

async function sendFile(reply: FastifyReply, root: string, rel: string, acceptEncoding: string | undefined): Promise<FastifyReply> {
  const file = path.resolve(root, rel);
  if (file !== root && !file.startsWith(root + path.sep)) throw new HangarError('NOT_FOUND', `no file /ui/${rel}`);
  let body: Buffer;
  let encoding: Precompressed | null = null;
  try {
    body = await fs.readFile(file);
    if (COMPRESSIBLE.has(path.extname(file))) {
      // The plain file is read first: a name that is not ours is a 404 whatever the encodings.
      const existing = new Set<Precompressed>();
      for (const p of PRECOMPRESSED) if (await fs.access(file + p.suffix).then(() => true, () => false)) existing.add(p);
      encoding = pickEncoding(acceptEncoding, (p) => existing.has(p));
      if (encoding) body = await fs.readFile(file + encoding.suffix);
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (rel === 'index.html' && code === 'ENOENT') {
      throw new HangarError('UNAVAILABLE', `the web UI is not built (no ${file}): run bash scripts/setup.sh`);
    }
    if (code === 'ENOENT' || code === 'EISDIR' || code === 'ENOTDIR') throw new HangarError('NOT_FOUND', `no file /ui/${rel}`);
    throw e;
  }
  reply.headers(UI_HEADERS);
  reply.header('cache-control', rel.startsWith('assets/') ? 'public, max-age=31536000, immutable' : 'no-cache');
  if (COMPRESSIBLE.has(path.extname(file))) reply.header('vary', 'Accept-Encoding');
  if (encoding) reply.header('content-encoding', encoding.encoding);
  return reply.type(TYPES[path.extname(file)] ?? 'application/octet-stream').send(body);
}

export function registerUiStatic(app: FastifyInstance, webRoot: string): void {
  const root = path.resolve(webRoot);
  app.get('/ui', { schema: { hide: true } }, async (_req, reply) => reply.redirect('/ui/', 308));
  app.get('/ui/', { schema: { hide: true } }, async (req, reply) => sendFile(reply, root, 'index.html', req.headers['accept-encoding']));
  app.get('/ui/*', { schema: { hide: true } }, async (req, reply) => {
    const rel = (req.params as { '*': string })['*'];
    // Only plain relative names: no "..", no hidden files, no backslashes.
    if (!/^[A-Za-z0-9_\-./]+$/.test(rel) || rel.split('/').some((s) => s === '' || s.startsWith('.'))) {
      throw new HangarError('NOT_FOUND', `no file /ui/${rel}`);
    }
    return sendFile(reply, root, rel, req.headers['accept-encoding']);
  });
}
