/**
 * Precompressed UI files: the web build writes NAME.br and NAME.gz next to
 * each text file it emits (web/precompress.ts), so the daemon never
 * compresses on a request. A browser that accepts one of them gets it with
 * Content-Encoding; every answer for such a file says `Vary:
 * Accept-Encoding`, so a cache between the two never hands the compressed
 * bytes to a client that did not ask for them.
 */

/** Encodings we keep files for, best first, with the suffix of each file. */
export const PRECOMPRESSED = [
  { encoding: 'br', suffix: '.br' },
  { encoding: 'gzip', suffix: '.gz' },
] as const;
export type Precompressed = (typeof PRECOMPRESSED)[number];

/** Files worth compressing: text. Images and fonts are compressed already. */
export const COMPRESSIBLE = new Set(['.html', '.js', '.css', '.svg', '.json', '.map']);

/**
 * The q-value the Accept-Encoding header gives `encoding` (RFC 9110 §12.5.3):
 * its own entry, else `*`, else 0 (not acceptable). An absent header accepts
 * nothing but identity here: we only compress when asked.
 */
export function acceptQ(header: string | undefined, encoding: string): number {
  if (!header) return 0;
  let star: number | null = null;
  for (const part of header.split(',')) {
    const [name, ...params] = part.trim().split(';');
    const token = name!.trim().toLowerCase();
    if (token === '') continue;
    let q = 1;
    for (const p of params) {
      const m = /^\s*q\s*=\s*([0-9.]+)\s*$/i.exec(p);
      if (m) q = Math.min(1, Math.max(0, Number(m[1]) || 0));
    }
    if (token === encoding) return q;
    if (token === '*') star = q;
  }
  return star ?? 0;
}

/** Which precompressed file to send, or null for the plain one; `have` says which exist. */
export function pickEncoding(header: string | undefined, have: (p: Precompressed) => boolean): Precompressed | null {
  let best: Precompressed | null = null;
  let bestQ = 0;
  for (const p of PRECOMPRESSED) {
    const q = acceptQ(header, p.encoding);
    if (q > bestQ && have(p)) { best = p; bestQ = q; }
  }
  return best;
}
