/**
 * Fuzzing the kernel loader: mutated ELF test guests (header, program
 * headers, note lengths), mutated bzImages (setup sectors, protocol
 * version, flags, sizes), truncated images and random bytes, with and
 * without an initrd and with command lines up to past the limit. Every
 * input must load or be refused with a HangarError, never hang (the
 * loader runs in a worker that is ended when it stops making progress)
 * and never touch memory outside guest RAM. Seeds are fixed; the suite runs
 * 400 inputs, HANGAR_FUZZ_SCALE=N (npm run fuzz) N times as many.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fuzzScale } from '../helpers/fuzz.js';
import { buildGuest, makeBzImage } from '../helpers/vmm.js';
import { runLoaderJob } from './loader-harness.js';

let dir = '';
let elf = '';
let bz = '';

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-loader-fuzz-'));
  elf = buildGuest('hello');
  bz = path.join(dir, 'hello.bzImage');
  makeBzImage(elf, bz);
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('mutated and random kernel images load or are refused with a HangarError, never hang or write outside RAM', async () => {
  const iterations = 400 * fuzzScale();
  const r = await runLoaderJob({ kind: 'fuzz', elf, bz, dir, base: 0x10ad, iterations, memBytes: 8 * 2 ** 20 });
  assert.equal(r.t, 'done', `seed ${r.seed}: ${r.message}`);
  assert.equal(r.loaded! + r.refused!, iterations);
  // A fuzzer that only ever produces garbage tests nothing: some mutations must still load.
  assert.ok(r.loaded! > 0 && r.refused! > 0, `loaded ${r.loaded}, refused ${r.refused}`);
});
