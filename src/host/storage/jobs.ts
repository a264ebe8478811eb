/**
 * Long volume work, run as operations with progress: copying a volume
 * (qemu-img convert, which also changes format and flattens an overlay),
 * importing a raw or qcow2 file from the daemon's import folders, receiving
 * an upload through the API, and preparing an export.
 *
 * Each job claims its volume first (name and quota, state `creating`; see
 * StorageService.claimVolume), writes into a hidden work file in the pool and
 * puts it in place only when complete. Any failure (qemu-img killed, a
 * refused image, a cancelled upload) removes the work file and the claim:
 * no half volume is ever visible under a volume's name.
 */
import fs from 'node:fs';
import type { Readable } from 'node:stream';
import { HangarError, toHangarError } from '../../common/errors.js';
import { formatSize } from '../../common/sizes.js';
import type { Operation } from '../api/schemas.js';
import type { OperationManager, ReportProgress } from '../operations.js';
import { importPolicy, openImportSource } from '../images/policy.js';
import { writeAll } from '../images/upload.js';
import { inspectDiskImage, type DiskImageInspection } from './inspect.js';
import { qemuImgConvert, qemuImgInfo, type DiskFormat } from './qemu-img.js';
import { MAX_VOLUME_BYTES, type StorageService } from './service.js';
import type { VolumeRecord } from './records.js';

export interface VolumeJobOptions {
  /** How a finished volume is shown in an operation's result. */
  present: (v: VolumeRecord) => unknown;
  /** An upload that receives nothing for this long fails (default 5 minutes). */
  uploadIdleMs?: number;
  /** Most uploads in progress at once (default 4). */
  maxUploads?: number;
}

interface PendingUpload {
  pool: string;
  name: string;
  declared: number;
  received: number;
  format: DiskFormat | undefined;
  work: string;
  receiving: boolean;
  release: () => void;
  settle: { resolve: (v: unknown) => void; reject: (e: unknown) => void };
  report: ReportProgress | null;
  idle: NodeJS.Timeout | null;
  body: Readable | null;
  failed: HangarError | null;
  lastPercent: number;
}

/** A lock message from qemu-img means a running VM holds the image. */
function inUse(e: unknown, what: string): HangarError {
  const err = toHangarError(e);
  if (/lock|another process/i.test(err.message)) {
    return new HangarError('INVALID_STATE', `${what} is in use by a running VM; stop the VM first`, { reason: 'in-use' });
  }
  return err;
}

export class VolumeJobs {
  private readonly uploads = new Map<string, PendingUpload>();
  private readonly idleMs: number;
  private readonly maxUploads: number;

  constructor(private readonly storage: StorageService, private readonly operations: OperationManager, private readonly opts: VolumeJobOptions) {
    this.idleMs = opts.uploadIdleMs ?? 5 * 60_000;
    this.maxUploads = opts.maxUploads ?? 4;
  }

  /** Largest virtual size a new volume in `pool` may have now. */
  private headroom(pool: string): number {
    const p = this.storage.requirePool(pool);
    return Math.max(0, Math.min(MAX_VOLUME_BYTES, p.quotaBytes - this.storage.records.provisionedBytes(p.name)));
  }

  /**
   * Copies `from` ("pool/volume") into a new volume `name` of `pool`, in
   * `format` (default: the source's). An overlay is flattened: the copy stands alone.
   */
  clone(pool: string, name: string, from: string, opts: { format?: DiskFormat; description?: string } = {}): Operation {
    const ref = this.storage.parseRef(from);
    const src = this.storage.requireVolume(ref.pool, ref.volume);
    const srcPath = this.storage.volumePath(src.pool, src.name);
    const format = opts.format ?? src.format;
    const claim = this.storage.claimVolume({
      pool, name, format, sizeBytes: src.sizeBytes, origin: { kind: 'clone', from: `${src.pool}/${src.name}` },
      ...(opts.description !== undefined ? { description: opts.description } : {}),
    });
    return this.operations.run(`Copy volume ${src.pool}/${src.name} to ${pool}/${name}`, [], (report) =>
      this.storage.withBusy(src.pool, src.name, `being copied to ${pool}/${name}`, () =>
        this.convertInto(claim, name, { file: srcPath, format: src.format, shown: `volume ${src.pool}/${src.name}` }, format, report)));
  }

  /**
   * Imports a raw or qcow2 file from the daemon's import folders (the image
   * import policy) into a new volume. The file is checked with
   * inspectDiskImage before the answer: its backing chain must stay inside
   * the import folders, its virtual size inside the pool's quota.
   */
  async importPath(pool: string, name: string, file: string, opts: { format?: DiskFormat; description?: string } = {}): Promise<Operation> {
    this.storage.requirePool(pool);
    const src = openImportSource(file, 'path', MAX_VOLUME_BYTES);
    let real: string;
    try {
      real = fs.readlinkSync(`/proc/self/fd/${src.fd}`);
    } finally {
      fs.closeSync(src.fd);
    }
    const headroom = this.headroom(pool);
    let info: DiskImageInspection;
    try {
      info = await inspectDiskImage(real, { allowedRoots: importPolicy().importDirs, maxVirtualBytes: headroom });
    } catch (e) {
      if (e instanceof HangarError && e.details?.reason === 'too-large') {
        throw new HangarError('RESOURCE_EXHAUSTED', `${file}: its virtual size is over what pool "${pool}" has left under its quota (${formatSize(headroom)})`, { ...e.details, pool });
      }
      throw e;
    }
    const format = opts.format ?? info.format;
    const claim = this.storage.claimVolume({
      pool, name, format, sizeBytes: info.virtualBytes, origin: { kind: 'import', source: file },
      ...(opts.description !== undefined ? { description: opts.description } : {}),
    });
    return this.operations.run(`Import volume ${pool}/${name} from ${file}`, [], (report) =>
      this.convertInto(claim, name, { file: info.path, format: info.format, shown: file }, format, report));
  }

  /** qemu-img convert from a source into the claimed volume's work file, then in place. */
  private async convertInto(
    claim: ReturnType<StorageService['claimVolume']>, name: string, src: { file: string; format: DiskFormat; shown: string }, format: DiskFormat, report: ReportProgress,
  ): Promise<unknown> {
    const work = claim.driver.workPath(name, format);
    try {
      report({ stage: 'copying', percent: 0 });
      await qemuImgConvert(src.file, work, { srcFormat: src.format, dstFormat: format, onProgress: (p) => report({ stage: 'copying', percent: p }) })
        .catch((e: unknown) => { throw inUse(e, src.shown); });
      claim.driver.install(work, name, format);
      return this.opts.present(this.storage.finishVolume(claim.pool.name, name));
    } catch (e) {
      claim.driver.discardWork(work);
      claim.release();
      throw e;
    }
  }

  // --- uploads ---------------------------------------------------------------

  /**
   * Starts an upload of `bytes` bytes into a new volume: claims name and
   * quota (the declared size, until the image says its virtual size), and
   * returns an operation that runs until PUT .../content has delivered it.
   */
  beginUpload(pool: string, name: string, bytes: number, opts: { format?: DiskFormat; description?: string } = {}): Operation {
    if (!Number.isSafeInteger(bytes) || bytes < 512 || bytes > MAX_VOLUME_BYTES) {
      throw new HangarError('INVALID_ARGUMENT', `an upload's size must be from 512 bytes to ${formatSize(MAX_VOLUME_BYTES)}`, { bytes });
    }
    if (this.uploads.size >= this.maxUploads) throw new HangarError('RESOURCE_EXHAUSTED', `${this.uploads.size} volume uploads are already in progress; finish or cancel one first`);
    const claim = this.storage.claimVolume({
      pool, name, format: opts.format ?? 'raw', sizeBytes: bytes, origin: { kind: 'upload' },
      ...(opts.description !== undefined ? { description: opts.description } : {}),
    });
    const work = claim.driver.workPath(name, 'raw');
    let settle!: PendingUpload['settle'];
    const done = new Promise<unknown>((resolve, reject) => { settle = { resolve, reject }; });
    done.catch(() => {});
    const u: PendingUpload = {
      pool: claim.pool.name, name, declared: bytes, received: 0, format: opts.format, work, receiving: false, settle,
      report: null, idle: null, body: null, failed: null, lastPercent: -1,
      release: () => { claim.driver.discardWork(work); claim.release(); },
    };
    const op = this.operations.run(`Upload volume ${claim.pool.name}/${name}`, [], async (report) => {
      u.report = report;
      report({ stage: 'waiting for upload', percent: 0 });
      return done;
    });
    this.uploads.set(key(u.pool, name), u);
    this.touch(u);
    return op;
  }

  /** Receives the bytes of an upload (PUT .../content); resolves with the finished volume. */
  async receive(pool: string, name: string, body: Readable, contentLength?: number): Promise<unknown> {
    const u = this.uploads.get(key(pool, name));
    if (!u) throw new HangarError('NOT_FOUND', `no upload in progress for volume ${pool}/${name}`, { pool, volume: name });
    if (u.receiving) throw new HangarError('INVALID_STATE', `the upload of ${pool}/${name} is already being received`);
    if (contentLength !== undefined && contentLength !== u.declared) {
      throw this.fail(u, new HangarError('INVALID_ARGUMENT', `the upload was declared as ${u.declared} bytes but the request carries ${contentLength}`, { declared: u.declared, sent: contentLength }));
    }
    u.receiving = true;
    u.body = body;
    const fh = await fs.promises.open(u.work, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
    try {
      for await (const chunk of body) {
        if (u.failed) throw u.failed;
        const buf = chunk as Buffer;
        if (u.received + buf.length > u.declared) throw new HangarError('INVALID_ARGUMENT', `the upload is longer than the ${u.declared} bytes declared: cut off`, { declared: u.declared });
        await writeAll(fh, buf);
        u.received += buf.length;
        this.touch(u);
        const percent = Math.floor((u.received / u.declared) * 90);
        if (percent !== u.lastPercent) { u.lastPercent = percent; u.report?.({ stage: 'uploading', percent }); }
      }
      if (u.failed) throw u.failed;
      if (u.received !== u.declared) throw new HangarError('INVALID_ARGUMENT', `the upload ended after ${u.received} of the ${u.declared} bytes declared`, { declared: u.declared, received: u.received });
    } catch (e) {
      await fh.close().catch(() => {});
      throw this.fail(u, toHangarError(e, 'INVALID_ARGUMENT'));
    }
    await fh.close();
    u.body = null;
    if (u.idle) clearTimeout(u.idle);
    try {
      const shown = await this.finishUpload(u);
      this.uploads.delete(key(u.pool, u.name));
      u.settle.resolve(shown);
      return shown;
    } catch (e) {
      throw this.fail(u, toHangarError(e, 'INVALID_ARGUMENT'));
    }
  }

  /**
   * Checks what arrived as a disk image (no backing file or data file at all:
   * an upload names nothing on this host), fixes the quota to its virtual
   * size, and converts it when it came in another format.
   */
  private async finishUpload(u: PendingUpload): Promise<unknown> {
    u.report?.({ stage: 'checking', percent: 90 });
    const pool = this.storage.requirePool(u.pool);
    const headroom = Math.max(0, pool.quotaBytes - (this.storage.records.provisionedBytes(u.pool) - u.declared));
    const info = await inspectDiskImage(u.work, { allowedRoots: [], maxVirtualBytes: Math.min(headroom, MAX_VOLUME_BYTES), displayName: `uploaded for ${u.pool}/${u.name}` });
    const format = u.format ?? info.format;
    const driver = this.storage.driverOf(pool);
    this.storage.records.transaction(() => {
      // The claim held the declared bytes; the volume's virtual size is what it keeps.
      const others = this.storage.records.provisionedBytes(u.pool) - u.declared;
      if (others + info.virtualBytes > pool.quotaBytes) {
        throw new HangarError('RESOURCE_EXHAUSTED', `pool "${u.pool}" quota exceeded: the uploaded image's virtual size is ${formatSize(info.virtualBytes)}`, { pool: u.pool });
      }
      this.storage.records.updateVolume(u.pool, u.name, { sizeBytes: info.virtualBytes, format });
    });
    if (format === info.format) {
      driver.install(u.work, u.name, format);
    } else {
      u.report?.({ stage: 'converting', percent: 92 });
      const out = driver.workPath(u.name, format);
      try {
        await qemuImgConvert(u.work, out, { srcFormat: info.format, dstFormat: format, onProgress: (p) => u.report?.({ stage: 'converting', percent: 92 + p * 0.08 }) });
        driver.install(out, u.name, format);
      } catch (e) {
        driver.discardWork(out);
        throw e;
      }
      driver.discardWork(u.work);
    }
    return this.opts.present(this.storage.finishVolume(u.pool, u.name));
  }

  /** Cancels an upload in progress: its operation fails, nothing is kept. */
  cancelUpload(pool: string, name: string): void {
    const u = this.uploads.get(key(pool, name));
    if (!u) throw new HangarError('NOT_FOUND', `no upload in progress for volume ${pool}/${name}`, { pool, volume: name });
    this.fail(u, new HangarError('INVALID_STATE', 'the upload was cancelled'));
  }

  /** Fails every upload in progress (daemon shutdown). */
  abortAll(reason: string): void {
    for (const u of [...this.uploads.values()]) this.fail(u, new HangarError('UNAVAILABLE', reason));
  }

  isUploading(pool: string, name: string): boolean {
    return this.uploads.has(key(pool, name));
  }

  private fail(u: PendingUpload, err: HangarError): HangarError {
    if (u.failed) return err;
    u.failed = err;
    this.uploads.delete(key(u.pool, u.name));
    if (u.idle) clearTimeout(u.idle);
    u.body?.destroy();
    u.release();
    u.settle.reject(err);
    return err;
  }

  private touch(u: PendingUpload): void {
    if (u.idle) clearTimeout(u.idle);
    u.idle = setTimeout(() => this.fail(u, new HangarError('TIMEOUT', `the upload received nothing for ${Math.round(this.idleMs / 1000)} s`)), this.idleMs);
    u.idle.unref();
  }

  // --- export ------------------------------------------------------------------

  /**
   * What GET .../content sends: the volume's own file when it stands alone in
   * the format asked for, otherwise a standalone copy in that format made
   * first (removed once sent). Refused while a running VM writes to it.
   */
  async prepareExport(pool: string, name: string, format?: DiskFormat): Promise<{ file: string; bytes: number; format: DiskFormat; cleanup: () => void }> {
    const v = this.storage.requireVolume(pool, name);
    const file = this.storage.volumePath(pool, name);
    const want = format ?? v.format;
    // Without -U, qemu-img takes the image's lock: a VM that runs on it makes this fail.
    await qemuImgInfo(file, { format: v.format }).catch((e: unknown) => { throw inUse(e, `volume ${pool}/${name}`); });
    if (want === v.format && v.backing === null) {
      return { file, bytes: fs.statSync(file).size, format: want, cleanup: () => {} };
    }
    const driver = this.storage.driverOf(this.storage.requirePool(pool));
    const work = driver.workPath(`export-${name}`, want);
    try {
      await this.storage.withBusy(pool, name, 'being exported', () => qemuImgConvert(file, work, { srcFormat: v.format, dstFormat: want }))
        .catch((e: unknown) => { throw inUse(e, `volume ${pool}/${name}`); });
      fs.chmodSync(work, 0o600);
      return { file: work, bytes: fs.statSync(work).size, format: want, cleanup: () => driver.discardWork(work) };
    } catch (e) {
      driver.discardWork(work);
      throw e;
    }
  }
}

function key(pool: string, name: string): string {
  return `${pool}/${name}`;
}
