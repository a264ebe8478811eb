/**
 * The one wrapper around qemu-img. Every call goes through `runQemuImg`:
 * execFile with an argument array (no shell), LC_ALL=C so messages can be
 * matched, a small fixed environment, a timeout, and failures turned into
 * HangarError values whose message is qemu-img's own words without its
 * prefix, so a user reads "Could not open '/x': No such file or directory"
 * rather than a stack trace.
 *
 * Callers that open images a user gave us must check them first
 * (inspect.ts): qemu-img opens backing files and external data files on its
 * own, and those names come from inside the image.
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { HangarError, type ErrorCode } from '../../common/errors.js';

export type DiskFormat = 'raw' | 'qcow2';
export const DISK_FORMATS: readonly DiskFormat[] = ['raw', 'qcow2'];

/** Quick calls (info, create, resize, snapshot): 60 s. A convert or check may take much longer. */
export const QEMU_IMG_TIMEOUT_MS = 60_000;
export const QEMU_IMG_LONG_TIMEOUT_MS = 6 * 3600_000;

/** The qemu-img binary: HANGAR_QEMU_IMG (tests, odd installs), else from PATH. */
export function qemuImgBinary(): string {
  return process.env.HANGAR_QEMU_IMG || 'qemu-img';
}

export interface RunOptions {
  timeoutMs?: number;
  /** Aborting kills qemu-img (SIGKILL) and the call fails with INVALID_STATE "cancelled". */
  signal?: AbortSignal;
  /** Called with every chunk qemu-img writes to stdout (progress). */
  onStdout?: (chunk: string) => void;
  /** Exit codes that are answers, not failures (qemu-img check: 2 and 3). */
  okExitCodes?: number[];
  /** The code a failure gets when its message matches nothing known (default INTERNAL). */
  failCode?: ErrorCode;
  /** Called once the process exists (tests kill it halfway). */
  onSpawn?: (child: ChildProcess) => void;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** qemu-img's messages without the "qemu-img: " prefix, one per line, warnings dropped. */
export function readableQemuImgError(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.replace(/^qemu-img: /, '').trim())
    .filter((l) => l.length > 0 && !/^warning:/i.test(l) && !/^Try 'qemu-img --help'/.test(l));
  return lines.join('; ') || 'no message';
}

/** Picks the error code a qemu-img failure deserves from its message. */
function codeFor(message: string, fallback: ErrorCode): ErrorCode {
  if (/No such file or directory/i.test(message)) return 'NOT_FOUND';
  if (/No space left on device|Disk quota exceeded|File too large|Image is too big|too large/i.test(message)) return 'RESOURCE_EXHAUSTED';
  if (/Failed to get .*lock|Is another process using the image/i.test(message)) return 'INVALID_STATE';
  if (/Permission denied|Operation not permitted/i.test(message)) return 'INVALID_STATE';
  if (/--shrink|Invalid parameter|invalid|not in .* format|Unknown|Could not parse|Parameter .* expects/i.test(message)) return 'INVALID_ARGUMENT';
  return fallback;
}

/** Runs qemu-img with `args`; resolves on success (or an ok exit code), rejects with a HangarError. */
export function runQemuImg(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? QEMU_IMG_TIMEOUT_MS;
  const sub = args[0] ?? '';
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) {
      reject(new HangarError('INVALID_STATE', `qemu-img ${sub} was cancelled`));
      return;
    }
    let timedOut = false;
    let cancelled = false;
    const child = execFile(
      qemuImgBinary(),
      args,
      {
        env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
        maxBuffer: 64 * 1024 * 1024,
        encoding: 'utf8',
        windowsHide: true,
      },
      (err, stdout, stderr) => {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        if (!err) {
          resolve({ stdout, stderr, exitCode: 0 });
          return;
        }
        const e = err as NodeJS.ErrnoException & { code?: string | number };
        if (e.code === 'ENOENT') {
          reject(new HangarError('UNAVAILABLE', `qemu-img is not installed (${qemuImgBinary()} not found): install the qemu-utils package`));
          return;
        }
        if (cancelled) {
          reject(new HangarError('INVALID_STATE', `qemu-img ${sub} was cancelled`));
          return;
        }
        if (timedOut) {
          reject(new HangarError('TIMEOUT', `qemu-img ${sub} did not finish within ${Math.round(timeoutMs / 1000)} s`));
          return;
        }
        const exitCode = typeof e.code === 'number' ? e.code : -1;
        if (exitCode >= 0 && opts.okExitCodes?.includes(exitCode)) {
          resolve({ stdout, stderr, exitCode });
          return;
        }
        // Killed from outside (OOM killer, an admin): not the request's fault, whatever it printed before.
        const signal = child.signalCode ?? (exitCode > 128 ? `signal ${exitCode - 128}` : null);
        if (signal) {
          reject(new HangarError('INTERNAL', `qemu-img ${sub} was killed by ${signal === 'signal 9' ? 'SIGKILL' : signal} before it finished`, { exitCode, signal }));
          return;
        }
        const message = readableQemuImgError(stderr || e.message);
        reject(new HangarError(codeFor(message, opts.failCode ?? 'INTERNAL'), `qemu-img ${sub}: ${message}`, { exitCode }));
      },
    );
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    timer.unref();
    const onAbort = (): void => {
      cancelled = true;
      child.kill('SIGKILL');
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    if (opts.onStdout) child.stdout?.on('data', (d: string | Buffer) => opts.onStdout!(String(d)));
    opts.onSpawn?.(child);
  });
}

// --- info -------------------------------------------------------------------

export interface QemuImgSnapshot {
  id: string;
  name: string;
  /** Seconds since the epoch. */
  dateSec: number;
  vmStateBytes: number;
}

export interface QemuImgInfo {
  filename: string;
  format: string;
  virtualBytes: number;
  /** Bytes the file takes on disk (allocated), when qemu-img can tell. */
  actualBytes?: number;
  clusterBytes?: number;
  /** The backing name as written in the image, and as qemu-img resolves it. */
  backingFilename?: string;
  fullBackingFilename?: string;
  backingFormat?: string;
  dirty: boolean;
  encrypted: boolean;
  /** qcow2 only. */
  dataFile?: string;
  corrupt?: boolean;
  snapshots: QemuImgSnapshot[];
}

interface RawInfo {
  filename?: string;
  format?: string;
  'virtual-size'?: number;
  'actual-size'?: number;
  'cluster-size'?: number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  'dirty-flag'?: boolean;
  encrypted?: boolean;
  snapshots?: Array<{ id?: string; name?: string; 'date-sec'?: number; 'vm-state-size'?: number }>;
  'format-specific'?: { type?: string; data?: { 'data-file'?: string; corrupt?: boolean } };
}

function parseInfo(r: RawInfo): QemuImgInfo {
  if (typeof r.format !== 'string' || typeof r['virtual-size'] !== 'number') {
    throw new HangarError('INTERNAL', 'qemu-img info gave an answer without format or virtual size');
  }
  const info: QemuImgInfo = {
    filename: r.filename ?? '',
    format: r.format,
    virtualBytes: r['virtual-size'],
    dirty: r['dirty-flag'] === true,
    encrypted: r.encrypted === true,
    snapshots: (r.snapshots ?? []).map((s) => ({ id: String(s.id ?? ''), name: String(s.name ?? ''), dateSec: s['date-sec'] ?? 0, vmStateBytes: s['vm-state-size'] ?? 0 })),
  };
  if (typeof r['actual-size'] === 'number') info.actualBytes = r['actual-size'];
  if (typeof r['cluster-size'] === 'number') info.clusterBytes = r['cluster-size'];
  if (typeof r['backing-filename'] === 'string') info.backingFilename = r['backing-filename'];
  if (typeof r['full-backing-filename'] === 'string') info.fullBackingFilename = r['full-backing-filename'];
  if (typeof r['backing-filename-format'] === 'string') info.backingFormat = r['backing-filename-format'];
  const fs = r['format-specific'];
  if (fs?.type === 'qcow2' && fs.data) {
    if (typeof fs.data['data-file'] === 'string') info.dataFile = fs.data['data-file'];
    if (typeof fs.data.corrupt === 'boolean') info.corrupt = fs.data.corrupt;
  }
  return info;
}

/**
 * Names one image for qemu-img. With `noBacking` the image is named as a
 * json: description whose backing is null, so qemu-img never opens the
 * backing file (for `check` of an image whose chain we did not want opened).
 */
export function imageSpec(file: string, format: DiskFormat, noBacking = false): string[] {
  if (!noBacking || format !== 'qcow2') return ['-f', format, file];
  return [`json:${JSON.stringify({ driver: 'qcow2', file: { driver: 'file', filename: file }, backing: null })}`];
}

export interface InfoOptions {
  /** The format, given explicitly (never probed) when known. */
  format?: DiskFormat;
  /** Read an image a running VM holds open (no lock taken). */
  forceShare?: boolean;
  timeoutMs?: number;
  /** qcow2: name the image with its backing switched off (see imageSpec). Needs `format`. */
  noBacking?: boolean;
}

/** `qemu-img info --output=json` of one image (qemu-img info itself does not open backing files). */
export async function qemuImgInfo(file: string, opts: InfoOptions = {}): Promise<QemuImgInfo> {
  const args = ['info', '--output=json'];
  if (opts.forceShare) args.push('-U');
  if (opts.format) args.push(...imageSpec(file, opts.format, opts.noBacking === true));
  else args.push(file);
  const r = await runQemuImg(args, { timeoutMs: opts.timeoutMs ?? QEMU_IMG_TIMEOUT_MS, failCode: 'INVALID_ARGUMENT' });
  return parseInfo(JSON.parse(r.stdout) as RawInfo);
}

/**
 * `qemu-img info --output=json --backing-chain`: the image first, then each
 * backing file. Opens the whole chain: only for images Hangar made itself or
 * checked with inspectDiskImage.
 */
export async function qemuImgInfoChain(file: string, opts: InfoOptions = {}): Promise<QemuImgInfo[]> {
  const args = ['info', '--output=json', '--backing-chain'];
  if (opts.forceShare) args.push('-U');
  if (opts.format) args.push('-f', opts.format);
  args.push(file);
  const r = await runQemuImg(args, { timeoutMs: opts.timeoutMs ?? QEMU_IMG_TIMEOUT_MS, failCode: 'INVALID_ARGUMENT' });
  const parsed = JSON.parse(r.stdout) as RawInfo[] | RawInfo;
  return (Array.isArray(parsed) ? parsed : [parsed]).map(parseInfo);
}

// --- check ------------------------------------------------------------------

export interface QemuImgCheck {
  /** 0 clean, 2 corrupt, 3 leaked clusters only (harmless). */
  exitCode: number;
  corruptions: number;
  leaks: number;
  checkErrors: number;
  imageEndOffset?: number;
  /** qemu-img's own lines about what is wrong (stderr). */
  messages: string;
}

/** `qemu-img check --output=json`, never repairing; the backing file is not opened. */
export async function qemuImgCheck(file: string, format: DiskFormat, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<QemuImgCheck> {
  const r = await runQemuImg(['check', '--output=json', ...imageSpec(file, format, true)], {
    timeoutMs: opts.timeoutMs ?? QEMU_IMG_LONG_TIMEOUT_MS,
    ...(opts.signal ? { signal: opts.signal } : {}),
    okExitCodes: [2, 3],
    failCode: 'INVALID_ARGUMENT',
  });
  let j: { corruptions?: number; leaks?: number; 'check-errors'?: number; 'image-end-offset'?: number } = {};
  try {
    j = r.stdout.trim() ? (JSON.parse(r.stdout) as typeof j) : {};
  } catch {
    /* exit code and stderr still tell */
  }
  const out: QemuImgCheck = {
    exitCode: r.exitCode,
    corruptions: j.corruptions ?? 0,
    leaks: j.leaks ?? 0,
    checkErrors: j['check-errors'] ?? 0,
    messages: readableQemuImgError(r.stderr),
  };
  if (typeof j['image-end-offset'] === 'number') out.imageEndOffset = j['image-end-offset'];
  return out;
}

// --- create -----------------------------------------------------------------

export interface CreateOptions {
  format: DiskFormat;
  /** Virtual size; may be left out when a backing file gives it. */
  sizeBytes?: number;
  /** Backing file: an absolute path and its format, always both (qemu-img must not probe). */
  backing?: { file: string; format: DiskFormat };
  /** raw: 'off' (sparse) or 'falloc'; qcow2: 'off' or 'metadata'. */
  preallocation?: 'off' | 'metadata' | 'falloc' | 'full';
}

/** `qemu-img create`. Overwrites `file` if it exists: callers create under a fresh name. */
export async function qemuImgCreate(file: string, opts: CreateOptions): Promise<void> {
  const args = ['create', '-q', '-f', opts.format];
  const o: string[] = [];
  if (opts.preallocation) o.push(`preallocation=${opts.preallocation}`);
  if (opts.backing) {
    if (opts.format !== 'qcow2') throw new HangarError('INVALID_ARGUMENT', 'only a qcow2 image can have a backing file');
    args.push('-b', opts.backing.file, '-F', opts.backing.format);
  }
  if (o.length) args.push('-o', o.join(','));
  args.push(file);
  if (opts.sizeBytes !== undefined) args.push(String(opts.sizeBytes));
  else if (!opts.backing) throw new HangarError('INVALID_ARGUMENT', 'a new image needs a size');
  await runQemuImg(args, { failCode: 'INVALID_ARGUMENT' });
}

// --- convert ----------------------------------------------------------------

export interface ConvertOptions {
  srcFormat: DiskFormat;
  dstFormat: DiskFormat;
  /** Percent done, 0–100, as qemu-img reports it (-p). */
  onProgress?: (percent: number) => void;
  signal?: AbortSignal;
  timeoutMs?: number;
  /** qcow2 output: compress clusters (-c). */
  compress?: boolean;
  /** The source is in use by a running VM (-U). */
  forceShare?: boolean;
  onSpawn?: (child: ChildProcess) => void;
}

/** Reads the last "(NN.NN/100%)" of a chunk of `qemu-img convert -p` output. */
export function parseConvertProgress(chunk: string): number | null {
  let last: number | null = null;
  for (const m of chunk.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)) last = Number(m[1]);
  return last;
}

/**
 * `qemu-img convert`: copies `src` into a new standalone image `dst` (backing
 * files are read through, so the result has none). Writes to `dst` directly;
 * callers convert into a temporary name and rename on success.
 */
export async function qemuImgConvert(src: string, dst: string, opts: ConvertOptions): Promise<void> {
  const args = ['convert', '-p', '-f', opts.srcFormat, '-O', opts.dstFormat];
  if (opts.forceShare) args.push('-U');
  if (opts.compress) {
    if (opts.dstFormat !== 'qcow2') throw new HangarError('INVALID_ARGUMENT', 'only qcow2 output can be compressed');
    args.push('-c');
  }
  args.push(src, dst);
  let last = -1;
  await runQemuImg(args, {
    timeoutMs: opts.timeoutMs ?? QEMU_IMG_LONG_TIMEOUT_MS,
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(opts.onSpawn ? { onSpawn: opts.onSpawn } : {}),
    failCode: 'INVALID_ARGUMENT',
    onStdout: (chunk) => {
      const p = parseConvertProgress(chunk);
      if (p !== null && p !== last) {
        last = p;
        opts.onProgress?.(p);
      }
    },
  });
}

// --- resize -----------------------------------------------------------------

/** `qemu-img resize` to exactly `sizeBytes`; a smaller size is refused unless `shrink`. */
export async function qemuImgResize(file: string, format: DiskFormat, sizeBytes: number, opts: { shrink?: boolean } = {}): Promise<void> {
  const args = ['resize', '-q', '-f', format];
  if (opts.shrink) args.push('--shrink');
  args.push(file, String(sizeBytes));
  await runQemuImg(args, { failCode: 'INVALID_ARGUMENT' });
}

// --- internal snapshots (qcow2) ------------------------------------------------

export type SnapshotAction = 'create' | 'apply' | 'delete';
const SNAPSHOT_FLAG: Record<SnapshotAction, string> = { create: '-c', apply: '-a', delete: '-d' };

/** `qemu-img snapshot -c|-a|-d NAME` on a qcow2 image that no running VM holds. */
export async function qemuImgSnapshot(file: string, action: SnapshotAction, name: string): Promise<void> {
  if (name.length === 0 || name.length > 128 || /[\0\n]/.test(name)) throw new HangarError('INVALID_ARGUMENT', `"${name}" is not a usable snapshot name`);
  // `qemu-img snapshot` has no -f (QEMU 7.2): the format is pinned through --image-opts instead (never probed).
  const opts = `driver=qcow2,file.filename=${file.replace(/,/g, ',,')}`;
  await runQemuImg(['snapshot', '-q', SNAPSHOT_FLAG[action], name, '--image-opts', opts], { failCode: 'INVALID_ARGUMENT' });
}

/** The internal snapshots of a qcow2 image (`snapshot -l` has no JSON; info has the same list). */
export async function qemuImgSnapshotList(file: string, opts: { forceShare?: boolean } = {}): Promise<QemuImgSnapshot[]> {
  return (await qemuImgInfo(file, { format: 'qcow2', ...(opts.forceShare ? { forceShare: true } : {}) })).snapshots;
}
