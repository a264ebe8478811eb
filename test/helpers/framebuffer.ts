/**
 * Reads what QEMU's screendump writes — binary PPM (P6) or PNG (8-bit RGB or
 * RGBA, as QEMU writes it) — into RGB pixels, and says whether the picture
 * is blank: every pixel one colour (a display nothing has drawn on yet).
 */
import zlib from 'node:zlib';

export interface Picture {
  width: number;
  height: number;
  /** width × height × 3 bytes, RGB, rows top to bottom. */
  rgb: Buffer;
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export function readPicture(data: Buffer): Picture {
  if (data.subarray(0, 8).equals(PNG_SIGNATURE)) return readPng(data);
  if (data.subarray(0, 2).toString('latin1') === 'P6') return readPpm(data);
  throw new Error(`not a PPM (P6) or PNG image (starts with ${data.subarray(0, 8).toString('hex')})`);
}

export function readPpm(data: Buffer): Picture {
  // Header: "P6" width height maxval, separated by whitespace (comments start with #), then one whitespace byte.
  const fields: string[] = [];
  let i = 2;
  while (fields.length < 3) {
    while (i < data.length && /\s/.test(String.fromCharCode(data[i]!))) i++;
    if (data[i] === 0x23) { while (i < data.length && data[i] !== 0x0a) i++; continue; }
    let tok = '';
    while (i < data.length && !/\s/.test(String.fromCharCode(data[i]!))) tok += String.fromCharCode(data[i++]!);
    fields.push(tok);
  }
  i++; // the single whitespace byte after maxval
  const [width, height, maxval] = fields.map(Number) as [number, number, number];
  if (!(width > 0 && height > 0) || maxval !== 255) throw new Error(`unsupported PPM header ${fields.join(' ')}`);
  const rgb = data.subarray(i, i + width * height * 3);
  if (rgb.length !== width * height * 3) throw new Error(`PPM is short: ${rgb.length} of ${width * height * 3} pixel bytes`);
  return { width, height, rgb };
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

export function readPng(data: Buffer): Picture {
  let off = 8;
  let width = 0;
  let height = 0;
  let bpp = 0;
  const idat: Buffer[] = [];
  while (off + 8 <= data.length) {
    const len = data.readUInt32BE(off);
    const type = data.subarray(off + 4, off + 8).toString('latin1');
    const body = data.subarray(off + 8, off + 8 + len);
    off += 12 + len;
    if (type === 'IHDR') {
      width = body.readUInt32BE(0);
      height = body.readUInt32BE(4);
      const depth = body[8];
      const colour = body[9];
      const interlace = body[12];
      if (depth !== 8 || (colour !== 2 && colour !== 6) || interlace !== 0) throw new Error(`unsupported PNG: depth ${depth}, colour type ${colour}, interlace ${interlace}`);
      bpp = colour === 6 ? 4 : 3;
    } else if (type === 'IDAT') idat.push(body);
    else if (type === 'IEND') break;
  }
  if (!width || !height) throw new Error('PNG has no IHDR');
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * bpp;
  const out = Buffer.alloc(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!;
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= bpp ? out[y * stride + x - bpp]! : 0;
      const b = y > 0 ? out[(y - 1) * stride + x]! : 0;
      const c = x >= bpp && y > 0 ? out[(y - 1) * stride + x - bpp]! : 0;
      const v = line[x]!;
      let r: number;
      switch (filter) {
        case 0: r = v; break;
        case 1: r = v + a; break;
        case 2: r = v + b; break;
        case 3: r = v + ((a + b) >> 1); break;
        case 4: r = v + paeth(a, b, c); break;
        default: throw new Error(`PNG row ${y}: unknown filter ${filter}`);
      }
      out[y * stride + x] = r & 0xff;
    }
  }
  if (bpp === 3) return { width, height, rgb: out };
  const rgb = Buffer.alloc(width * height * 3);
  for (let p = 0; p < width * height; p++) out.copy(rgb, p * 3, p * 4, p * 4 + 3);
  return { width, height, rgb };
}

/** How many different colours the picture has (stops counting at `cap`). */
export function colourCount(p: Picture, cap = 1 << 16): number {
  const seen = new Set<number>();
  for (let i = 0; i < p.rgb.length && seen.size < cap; i += 3) seen.add((p.rgb[i]! << 16) | (p.rgb[i + 1]! << 8) | p.rgb[i + 2]!);
  return seen.size;
}

/** True when every pixel has the same colour. */
export function isBlank(p: Picture): boolean {
  return colourCount(p, 2) < 2;
}
