/**
 * A Vite plugin that writes NAME.br and NAME.gz next to every text file of
 * the build (JavaScript, CSS, HTML, SVG, JSON) once the bundle is written, so
 * hangard serves them as they are (src/host/ui/encoding.ts). A compressed
 * copy that would not be smaller is not kept. Maximum settings: the build runs
 * once, the files are read many times.
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import type { Plugin } from 'vite';

const TEXT = new Set(['.html', '.js', '.css', '.svg', '.json', '.map']);

function filesUnder(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? filesUnder(p) : [p];
  });
}

export function precompress(): Plugin {
  let outDir = '';
  return {
    name: 'hangar-precompress',
    apply: 'build',
    configResolved(c) { outDir = path.resolve(c.root, c.build.outDir); },
    closeBundle() {
      for (const file of filesUnder(outDir)) {
        if (!TEXT.has(path.extname(file))) continue;
        const body = fs.readFileSync(file);
        const br = zlib.brotliCompressSync(body, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 11, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: body.length } });
        const gz = zlib.gzipSync(body, { level: 9 });
        for (const [suffix, data] of [['.br', br], ['.gz', gz]] as const) {
          if (data.length < body.length) fs.writeFileSync(file + suffix, data);
          else fs.rmSync(file + suffix, { force: true });
        }
      }
    },
  };
}
