// Builds (or finds cached) the built-in images so that tests and benchmarks
// do not pay for the first build inside a timed test. Prints progress.
// HANGAR_TEST_IMAGES (comma-separated) narrows the list; debian-12 takes a
// few minutes the first time (a Debian install), then comes from the cache.
import { ensureImage } from '../dist/src/host/images/index.js';

const names = (process.env.HANGAR_TEST_IMAGES ?? 'tiny,debian-12').split(',').map((s) => s.trim()).filter(Boolean);
for (const name of names) {
  const t0 = Date.now();
  let last = '';
  const img = await ensureImage(name, (stage, percent) => {
    const line = percent === undefined ? stage : `${stage} ${Math.round(percent)}%`;
    if (line !== last) process.stderr.write(`image ${name}: ${line}\n`);
    last = line;
  });
  const took = (Date.now() - t0) / 1000;
  process.stderr.write(`image ${name}: ready (${img.disk ?? img.kernel})${took > 1 ? ` in ${took.toFixed(0)} s` : ''}\n`);
}
