/**
 * A debian-12 image with a few extra packages (fio, iperf3, ...) for a
 * benchmark, built into the benchmark's own image folder, never into the
 * shared one: the shared image's recorded package list (packages.txt) plus
 * the extras, through Hangar's own image build. Built once; a later run
 * finds the folder's packages.txt listing every extra and builds nothing.
 */
import fs from 'node:fs';
import path from 'node:path';
import { projectRoot } from '../src/common/paths.js';

export interface DebianVariant {
  /** The benchmark's image folder (it holds debian-12/ once built). */
  dir: string;
  /** `name` or `name=version` entries added to the shared image's package list. */
  extra: string[];
  /** The shared image folder whose debian-12/packages.txt is the base list (default HANGAR_IMAGE_DIR or .cache/images). */
  sharedDir?: string;
  log: (line: string) => void;
}

/** Builds the variant unless `dir` already holds one with every extra package. */
export async function ensureDebianVariant(v: DebianVariant): Promise<void> {
  const shared = v.sharedDir ?? process.env.HANGAR_IMAGE_DIR ?? path.join(projectRoot(), '.cache', 'images');
  const disk = path.join(v.dir, 'debian-12', 'disk.qcow2');
  const pkgs = path.join(v.dir, 'debian-12', 'packages.txt');
  const names = v.extra.map((e) => e.split('=')[0]!);
  if (fs.existsSync(disk) && fs.existsSync(pkgs)) {
    const have = fs.readFileSync(pkgs, 'utf8');
    if (names.every((n) => new RegExp(`^${n.replace(/[.+]/g, '\\$&')}=`, 'm').test(have))) return;
  }
  const list = fs.readFileSync(path.join(shared, 'debian-12', 'packages.txt'), 'utf8').split('\n').map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#') && !names.includes(l.split('=')[0]!));
  list.push(...v.extra);
  v.log(`building debian-12 with ${v.extra.join(', ')} into ${v.dir} (minutes)`);
  // The image module finds its folder through HANGAR_IMAGE_DIR at each call: pointed at ours for the build only.
  const saved = process.env.HANGAR_IMAGE_DIR;
  process.env.HANGAR_IMAGE_DIR = v.dir;
  try {
    const { buildImage } = await import('../src/host/images/index.js');
    await buildImage('debian-12', { packages: list }, (stage, p) => v.log(`  ${stage}${p !== undefined ? ` ${Math.round(p)}%` : ''}`));
  } finally {
    if (saved === undefined) delete process.env.HANGAR_IMAGE_DIR; else process.env.HANGAR_IMAGE_DIR = saved;
  }
}
