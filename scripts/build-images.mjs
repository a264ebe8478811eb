// Builds (or finds cached) the built-in images so that tests and benchmarks
// do not pay for the first build inside a timed test. Prints progress.
import { ensureImage } from '../dist/src/host/images/index.js';

let last = '';
const img = await ensureImage('tiny', (stage, percent) => {
  const line = percent === undefined ? stage : `${stage} ${Math.round(percent)}%`;
  if (line !== last) process.stderr.write(`image tiny: ${line}\n`);
  last = line;
});
process.stderr.write(`image tiny: ready (${img.kernel})\n`);
