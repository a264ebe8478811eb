/** The screendump reader of test/helpers/framebuffer.ts: PPM and PNG (every row filter), blank or not. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { colourCount, isBlank, readPicture } from '../helpers/framebuffer.js';

function ppm(w: number, h: number, px: (x: number, y: number) => [number, number, number]): Buffer {
  const body = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) body.set(px(x, y), (y * w + x) * 3);
  return Buffer.concat([Buffer.from(`P6\n# made by a test\n${w} ${h}\n255\n`, 'latin1'), body]);
}

function chunk(type: string, body: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  // The reader does not check CRCs; zeros are enough here.
  return Buffer.concat([len, Buffer.from(type, 'latin1'), body, Buffer.alloc(4)]);
}

/** A PNG whose row y uses filter y % 5 (each filter computed here the way an encoder would). */
function png(w: number, h: number, bpp: 3 | 4, px: (x: number, y: number) => number[]): Buffer {
  const raw: number[][] = [];
  for (let y = 0; y < h; y++) { const row: number[] = []; for (let x = 0; x < w; x++) row.push(...px(x, y).slice(0, bpp)); raw.push(row); }
  const paeth = (a: number, b: number, c: number) => { const p = a + b - c; const pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c); return pa <= pb && pa <= pc ? a : pb <= pc ? b : c; };
  const lines: number[] = [];
  for (let y = 0; y < h; y++) {
    const f = y % 5;
    lines.push(f);
    for (let i = 0; i < w * bpp; i++) {
      const v = raw[y]![i]!;
      const a = i >= bpp ? raw[y]![i - bpp]! : 0;
      const b = y > 0 ? raw[y - 1]![i]! : 0;
      const c = i >= bpp && y > 0 ? raw[y - 1]![i - bpp]! : 0;
      const pred = [0, a, b, (a + b) >> 1, paeth(a, b, c)][f]!;
      lines.push((v - pred) & 0xff);
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;
  ihdr[9] = bpp === 4 ? 6 : 2;
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(Buffer.from(lines))), chunk('IEND', Buffer.alloc(0))]);
}

const pattern = (x: number, y: number): number[] => [(x * 37 + y) & 0xff, (y * 11) & 0xff, (x ^ y) & 0xff, 255];

test('PPM: header with a comment, pixels; blank when one colour', () => {
  const p = readPicture(ppm(4, 3, (x, y) => [x, y, 7]));
  assert.deepEqual([p.width, p.height], [4, 3]);
  assert.deepEqual([...p.rgb.subarray(3 * 5, 3 * 6)], [1, 1, 7]);
  assert.equal(isBlank(p), false);
  assert.equal(isBlank(readPicture(ppm(8, 8, () => [0, 0, 0]))), true);
  assert.throws(() => readPicture(ppm(4, 3, () => [0, 0, 0]).subarray(0, 30)), /short/);
});

test('PNG: every row filter, RGB and RGBA, decodes to the same pixels as PPM', () => {
  for (const bpp of [3, 4] as const) {
    const p = readPicture(png(9, 10, bpp, pattern));
    const q = readPicture(ppm(9, 10, (x, y) => pattern(x, y).slice(0, 3) as [number, number, number]));
    assert.deepEqual([p.width, p.height], [9, 10]);
    assert.ok(p.rgb.equals(q.rgb), `bpp ${bpp}`);
    assert.equal(isBlank(p), false);
  }
  const flat = readPicture(png(16, 6, 3, () => [20, 30, 40]));
  assert.equal(isBlank(flat), true);
  assert.equal(colourCount(flat), 1);
  assert.throws(() => readPicture(Buffer.from('GIF89a....')), /not a PPM/);
});
