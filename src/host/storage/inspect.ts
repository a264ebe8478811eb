/**
 * Checks a disk image someone else made before Hangar lets qemu-img or a VM
 * read it. A qcow2 file names other files inside itself (a backing file, an
 * external data file), and QEMU opens those as the daemon's user: an image
 * whose backing file is /etc/shadow would hand that file to a guest. So:
 *
 * - the format is read from the file's own bytes: raw or qcow2 only; other
 *   image formats, encrypted qcow2 and files that are not disks are refused;
 * - every file of the chain (backing files, recursively, and data files) is
 *   resolved with realpath and must lie inside `allowedRoots` (Hangar's own
 *   folders); names with a protocol (`json:`, `nbd:`, `http:`…) are refused
 *   before anything opens them;
 * - the qcow2 header is parsed here first (tables inside the file, no unknown
 *   incompatible features, not marked corrupt or dirty), then qemu-img check
 *   runs on each qcow2 with its backing switched off;
 * - the virtual size must fit `maxVirtualBytes`.
 *
 * Every refusal is a HangarError whose details.reason names the rule
 * (InspectRefusal) and whose message says it in words.
 */
import fs from 'node:fs';
import path from 'node:path';
import { HangarError, type ErrorCode } from '../../common/errors.js';
import { formatSize } from '../../common/sizes.js';
import { detectDiskFormat, readQcow2Header, unknownIncompatibleBits, QCOW2_INCOMPAT } from './disk-format.js';
import { qemuImgCheck, qemuImgInfo, type DiskFormat } from './qemu-img.js';

export type InspectRefusal =
  | 'not-found' | 'not-a-file' | 'unsupported-format' | 'not-a-disk-image' | 'format-mismatch'
  | 'encrypted' | 'corrupt' | 'truncated' | 'unknown-features' | 'dirty' | 'too-large'
  | 'backing-protocol' | 'backing-outside-roots' | 'backing-missing' | 'backing-format' | 'backing-loop' | 'chain-too-long'
  | 'data-file-protocol' | 'data-file-outside-roots' | 'data-file-missing';

const CODE_OF: Partial<Record<InspectRefusal, ErrorCode>> = {
  'not-found': 'NOT_FOUND',
  'too-large': 'RESOURCE_EXHAUSTED',
  'unsupported-format': 'UNSUPPORTED',
  encrypted: 'UNSUPPORTED',
};

export interface InspectOptions {
  /** Folders every backing file and data file must lie in (after realpath). The image itself is the caller's to place. */
  allowedRoots: readonly string[];
  /** Largest virtual size taken; larger → RESOURCE_EXHAUSTED (reason too-large). */
  maxVirtualBytes?: number;
  /** The format the caller expects; the file's bytes must agree. */
  format?: DiskFormat;
  /** Most backing files below the image (default 8). */
  maxChainLength?: number;
  /** Run qemu-img check on every qcow2 of the chain (default true). */
  check?: boolean;
  signal?: AbortSignal;
  /** How messages name the image (default: its path), e.g. "the uploaded file". */
  displayName?: string;
}

export interface InspectedLayer {
  /** Real path (symlinks resolved). */
  path: string;
  format: DiskFormat;
  virtualBytes: number;
  fileBytes: number;
}

export interface DiskImageInspection extends InspectedLayer {
  /** The direct backing file, if any. */
  backing?: { path: string; format: DiskFormat };
  /** Every backing file below the image, nearest first. */
  chain: InspectedLayer[];
  /** The external data file (qcow2), if any. */
  dataFile?: string;
  /** raw only: what makes it look like a disk (partition table, filesystem, blank start). */
  rawContent?: string;
}

function refuse(reason: InspectRefusal, file: string, message: string, extra: Record<string, unknown> = {}): HangarError {
  return new HangarError(CODE_OF[reason] ?? 'INVALID_ARGUMENT', `disk image ${file}: ${message}`, { reason, path: file, ...extra });
}

/** qemu's rule: a name whose first ':' comes before any '/' is a protocol (json:, nbd:, http:, file:…), not a path. */
export function namesProtocol(name: string): boolean {
  const colon = name.indexOf(':');
  if (colon < 0) return false;
  const slash = name.indexOf('/');
  return slash < 0 || colon < slash;
}

function inside(root: string, p: string): boolean {
  const rel = path.relative(root, p);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

function realRoots(roots: readonly string[]): string[] {
  const out: string[] = [];
  for (const r of roots) {
    try { out.push(fs.realpathSync(r)); } catch { /* a root that does not exist allows nothing */ }
  }
  return out;
}

/**
 * Resolves a file the image names (backing or data file) against the folder
 * of the image that names it, and checks it is a file inside the roots.
 */
function resolveNamed(kind: 'backing' | 'data-file', name: string, from: string, roots: string[]): string {
  const what = kind === 'backing' ? 'backing file' : 'external data file';
  if (name.startsWith('json:')) throw refuse(`${kind}-protocol`, from, `its ${what} is a json: description ("${name.slice(0, 80)}"); only plain file paths are allowed`, { named: name });
  if (namesProtocol(name)) throw refuse(`${kind}-protocol`, from, `its ${what} "${name}" names a protocol, not a file; only plain file paths are allowed`, { named: name });
  if (/[\0-\x1f]/.test(name)) throw refuse(`${kind}-protocol`, from, `its ${what} name contains control characters`);
  const wanted = path.resolve(path.dirname(from), name);
  let real: string;
  try {
    real = fs.realpathSync(wanted);
  } catch {
    // Outside the roots is the answer whether or not it exists: no probing the host through image names.
    if (!roots.some((r) => inside(r, wanted))) throw refuse(`${kind}-outside-roots`, from, `its ${what} ${name} lies outside Hangar's storage folders`, { named: name });
    throw refuse(kind === 'backing' ? 'backing-missing' : 'data-file-missing', from, `its ${what} ${name} does not exist`, { named: name });
  }
  if (!roots.some((r) => inside(r, real))) {
    throw refuse(`${kind}-outside-roots`, from, `its ${what} ${name}${real !== name ? ` (${real})` : ''} lies outside Hangar's storage folders`, { named: name });
  }
  return real;
}

interface Opened {
  fd: number;
  size: number;
}

function openLayer(real: string, shown: string, roots: string[] | null, outsideReason: InspectRefusal = 'backing-outside-roots'): Opened {
  let fd: number;
  try {
    fd = fs.openSync(real, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw refuse('not-found', shown, 'does not exist');
    throw refuse('not-a-file', shown, `cannot be opened: ${(e as Error).message}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw refuse('not-a-file', shown, 'is not a regular file');
    if (roots) {
      // What was opened, as the kernel sees it: a folder swapped for a symlink after realpath is caught here.
      const opened = fs.readlinkSync(`/proc/self/fd/${fd}`);
      if (!roots.some((r) => inside(r, opened))) throw refuse(outsideReason, shown, `${opened} lies outside Hangar's storage folders`);
    }
    return { fd, size: st.size };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

interface LayerResult extends InspectedLayer {
  backing?: { path: string; format: DiskFormat };
  dataFile?: string;
  rawContent?: string;
}

async function inspectLayer(real: string, shown: string, expected: DiskFormat | undefined, isTop: boolean, roots: string[], opts: InspectOptions): Promise<LayerResult> {
  const { fd, size } = openLayer(real, shown, isTop ? null : roots);
  let layer: LayerResult;
  try {
    const d = detectDiskFormat(fd, size);
    if (d.kind === 'other-image') throw refuse('unsupported-format', shown, `is a ${d.format} image; Hangar takes raw and qcow2 (convert it first: qemu-img convert -O qcow2)`, { format: d.format });
    if (d.kind === 'not-a-disk') throw refuse('not-a-disk-image', shown, `is not a disk image: it looks like ${d.what}`);
    const format: DiskFormat = d.kind;
    if (expected && expected !== format) throw refuse('format-mismatch', shown, `was given as ${expected} but its contents are ${format}`, { expected, found: format });
    if (format === 'raw') {
      layer = { path: real, format, virtualBytes: size, fileBytes: size, rawContent: d.kind === 'raw' ? d.content : '' };
    } else {
      const h = readQcow2Header(fd, size)!;
      const truncated = h.problems.find((p) => /truncated|ends inside/.test(p));
      if (truncated) throw refuse('truncated', shown, `is a damaged qcow2: ${truncated}`);
      if (h.problems.length) throw refuse('corrupt', shown, `is a damaged qcow2: ${h.problems.join('; ')}`);
      if (h.cryptMethod !== 0 || h.encryptionExt) throw refuse('encrypted', shown, 'is an encrypted qcow2, which Hangar does not take');
      const unknown = unknownIncompatibleBits(h);
      if (unknown !== 0n) throw refuse('unknown-features', shown, `uses qcow2 features this Hangar does not know (incompatible bits 0x${unknown.toString(16)})`);
      if (h.incompatible & QCOW2_INCOMPAT.corrupt) throw refuse('corrupt', shown, 'is marked corrupt by QEMU');
      if (h.incompatible & QCOW2_INCOMPAT.dirty) throw refuse('dirty', shown, 'was not closed cleanly (dirty flag set); check and repair it first: qemu-img check -r all');
      layer = { path: real, format, virtualBytes: h.virtualBytes, fileBytes: size };
      if (h.incompatible & QCOW2_INCOMPAT.dataFile || h.dataFileName !== undefined) {
        if (h.dataFileName === undefined) throw refuse('data-file-missing', shown, 'needs an external data file but does not name one');
        layer.dataFile = resolveNamed('data-file', h.dataFileName, real, roots);
        const dfd = openLayer(layer.dataFile, layer.dataFile, roots, 'data-file-outside-roots');
        fs.closeSync(dfd.fd);
      }
      if (h.backingName !== undefined) {
        const bpath = resolveNamed('backing', h.backingName, real, roots);
        let bformat: DiskFormat | undefined;
        if (h.backingFormat !== undefined) {
          if (h.backingFormat !== 'raw' && h.backingFormat !== 'qcow2') throw refuse('backing-format', shown, `its backing file is given as ${h.backingFormat}; Hangar takes raw and qcow2`, { backingFormat: h.backingFormat });
          bformat = h.backingFormat;
        }
        layer.backing = { path: bpath, format: bformat ?? 'raw' /* set from the backing's bytes below */ };
        if (!bformat) layer.backing.format = detectedFormatOf(bpath, shown, roots);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  if (isTop && opts.maxVirtualBytes !== undefined && layer.virtualBytes > opts.maxVirtualBytes) {
    throw refuse('too-large', shown, `its virtual size ${formatSize(layer.virtualBytes)} is over the ${formatSize(opts.maxVirtualBytes)} allowed`, { virtualBytes: layer.virtualBytes, maxVirtualBytes: opts.maxVirtualBytes });
  }
  if (layer.format === 'qcow2') await checkWithQemu(layer, shown, opts);
  return layer;
}

function detectedFormatOf(file: string, shown: string, roots: string[]): DiskFormat {
  const { fd, size } = openLayer(file, file, roots);
  try {
    const d = detectDiskFormat(fd, size);
    if (d.kind === 'qcow2' || d.kind === 'raw') return d.kind;
    throw refuse('backing-format', shown, `its backing file ${file} is not a raw or qcow2 disk image`);
  } finally {
    fs.closeSync(fd);
  }
}

/** qemu-img's own reading of one qcow2 (backing switched off): must agree with the header, and check clean. */
async function checkWithQemu(layer: LayerResult, shown: string, opts: InspectOptions): Promise<void> {
  let info;
  try {
    info = await qemuImgInfo(layer.path, { format: 'qcow2', noBacking: true });
  } catch (e) {
    throw refuse('corrupt', shown, `qemu-img cannot read it: ${e instanceof HangarError ? e.message.replace(/^qemu-img info: /, '') : String(e)}`);
  }
  if (info.virtualBytes !== layer.virtualBytes) throw refuse('corrupt', shown, `qemu-img reads a virtual size of ${info.virtualBytes} bytes, the header says ${layer.virtualBytes}`);
  if (opts.check === false) return;
  let c;
  try {
    c = await qemuImgCheck(layer.path, 'qcow2', opts.signal ? { signal: opts.signal } : {});
  } catch (e) {
    if (e instanceof HangarError && e.message.includes('cancelled')) throw e;
    throw refuse('corrupt', shown, `qemu-img check cannot read it: ${e instanceof HangarError ? e.message.replace(/^qemu-img check: /, '') : String(e)}`);
  }
  if (c.exitCode === 2 || c.corruptions > 0 || c.checkErrors > 0) {
    const detail = c.messages && c.messages !== 'no message' ? `: ${c.messages.slice(0, 300)}` : '';
    throw refuse('corrupt', shown, `is a damaged qcow2 (qemu-img check found ${c.corruptions} corruptions, ${c.checkErrors} errors)${detail}`, { corruptions: c.corruptions, checkErrors: c.checkErrors });
  }
}

/**
 * Checks the disk image at `file` and everything it refers to (see the top of
 * this file). Resolves with what it is; rejects with a HangarError naming the
 * reason. Nothing outside `allowedRoots` is opened, by us or by qemu-img.
 */
export async function inspectDiskImage(file: string, opts: InspectOptions): Promise<DiskImageInspection> {
  if (typeof file !== 'string' || !path.isAbsolute(file)) throw refuse('not-found', String(file), 'must be given as an absolute path');
  let real: string;
  try {
    real = fs.realpathSync(file);
  } catch {
    throw refuse('not-found', file, 'does not exist');
  }
  const roots = realRoots(opts.allowedRoots);
  const maxChain = opts.maxChainLength ?? 8;
  const shown = opts.displayName ?? file;
  const top = await inspectLayer(real, shown, opts.format, true, roots, opts);
  const chain: InspectedLayer[] = [];
  const seen = new Set<string>([real]);
  let cur: LayerResult = top;
  while (cur.backing) {
    const next = cur.backing;
    if (seen.has(next.path)) throw refuse('backing-loop', shown, `its backing chain loops back to ${next.path}`);
    if (chain.length >= maxChain) throw refuse('chain-too-long', shown, `its backing chain is longer than ${maxChain} files`);
    seen.add(next.path);
    cur = await inspectLayer(next.path, `${next.path} (in the backing chain of ${shown})`, next.format, false, roots, opts);
    chain.push({ path: cur.path, format: cur.format, virtualBytes: cur.virtualBytes, fileBytes: cur.fileBytes });
  }
  const out: DiskImageInspection = { path: top.path, format: top.format, virtualBytes: top.virtualBytes, fileBytes: top.fileBytes, chain };
  if (top.backing) out.backing = top.backing;
  if (top.dataFile) out.dataFile = top.dataFile;
  if (top.rawContent) out.rawContent = top.rawContent;
  return out;
}
