/**
 * Image uploads: a client sends the kernel (and initrd) bytes through the
 * API, so an image can come from any machine that reaches the daemon, over
 * the Unix socket or TCP, and the daemon never reads a host path for it.
 *
 *   POST /1.0/images/uploads {name, kernelBytes, initrdBytes?, cmdline?, description?}
 *     → 202, an operation that stays running until the files are in
 *   PUT  /1.0/images/uploads/<operation id>/kernel   (application/octet-stream)
 *   PUT  /1.0/images/uploads/<operation id>/initrd
 *     → the operation reports "uploading" with a percentage and ends with the Image
 *   DELETE /1.0/images/uploads/<operation id> cancels
 *
 * Sizes are declared first, so the quota is checked (and the space reserved)
 * before one byte is stored, and a part is cut off at the first byte beyond
 * its declared size. Each part's first bytes are format-checked as soon as
 * they arrive. Any error ends the whole import: the operation fails, the
 * hidden work folder is removed, the name and the reserved bytes are freed.
 * An upload that receives nothing for `idleMs` fails the same way.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { HangarError, toHangarError } from '../../common/errors.js';
import type { Operation } from '../api/schemas.js';
import type { OperationManager, ReportProgress } from '../operations.js';
import { FORMAT_HEAD_BYTES } from './formats.js';
import {
  checkImportRequest, checkInitrdHead, checkKernelHead, claimImageName, installImage, makeImportWorkDir, usedImageBytes,
  MAX_INITRD_BYTES, MAX_KERNEL_BYTES, type LocalImage,
} from './local.js';
import { reserveImageBytes } from './policy.js';
import { checkDiskImportFields, finishDiskUpload, MAX_DISK_IMAGE_BYTES, type FirmwareBoot } from './disk-import.js';
import type { DiskFormat } from '../storage/qemu-img.js';

export type UploadPart = 'kernel' | 'initrd' | 'disk';

/** A kernel image (kernelBytes, initrdBytes) or a disk image (diskBytes, boot, format): one or the other. */
export interface UploadRequest {
  name: string;
  kernelBytes?: number;
  initrdBytes?: number;
  cmdline?: string;
  description?: string;
  diskBytes?: number;
  boot?: FirmwareBoot;
  format?: DiskFormat;
}

export interface UploadOptions {
  /** Built-in image names, which cannot be taken. */
  reservedNames: () => readonly string[];
  /** What the operation's result shows for the finished image. */
  present: (image: LocalImage) => unknown;
  /** An upload that receives nothing for this long fails (default 5 minutes). */
  idleMs?: number;
  /** Most uploads in progress at once (default 4). */
  maxPending?: number;
}

interface PartState {
  declared: number;
  received: number;
  /** 'waiting' → 'receiving' → 'done'. */
  state: 'waiting' | 'receiving' | 'done';
}

interface Pending {
  id: string;
  req: UploadRequest;
  work: string;
  parts: Map<UploadPart, PartState>;
  release: () => void;
  report: ReportProgress | null;
  settle: { resolve: (v: unknown) => void; reject: (e: unknown) => void };
  idle: NodeJS.Timeout | null;
  /** The body being read right now, to cut off when the import fails. */
  body: Readable | null;
  lastPercent: number;
  failed: HangarError | null;
}

const FILE_OF: Record<UploadPart, string> = { kernel: 'kernel', initrd: 'initrd.img', disk: 'upload.img' };

export class ImageUploads {
  private readonly pending = new Map<string, Pending>();
  private readonly idleMs: number;
  private readonly maxPending: number;

  constructor(private readonly operations: OperationManager, private readonly opts: UploadOptions) {
    this.idleMs = opts.idleMs ?? 5 * 60_000;
    this.maxPending = opts.maxPending ?? 4;
  }

  /** Starts an upload: checks everything that can be checked before the bytes, reserves name and space. */
  begin(req: UploadRequest): Operation {
    const isDisk = req.diskBytes !== undefined;
    if (isDisk === (req.kernelBytes !== undefined)) {
      throw new HangarError('INVALID_ARGUMENT', 'an upload is a kernel image (kernelBytes, initrdBytes) or a disk image (diskBytes): give one of kernelBytes and diskBytes', { field: 'diskBytes' });
    }
    if (isDisk) {
      if (req.initrdBytes !== undefined || req.cmdline !== undefined) throw new HangarError('INVALID_ARGUMENT', 'a disk image boots by firmware: it takes no initrd and no cmdline', { field: req.initrdBytes !== undefined ? 'initrdBytes' : 'cmdline' });
      checkDiskImportFields(req, this.opts.reservedNames());
      checkSize(req.diskBytes, 'diskBytes', MAX_DISK_IMAGE_BYTES);
    } else {
      if (req.boot !== undefined || req.format !== undefined) throw new HangarError('INVALID_ARGUMENT', 'boot and format go with a disk image (diskBytes)', { field: req.boot !== undefined ? 'boot' : 'format' });
      checkImportRequest(req, this.opts.reservedNames());
      checkSize(req.kernelBytes, 'kernelBytes', MAX_KERNEL_BYTES);
      if (req.initrdBytes !== undefined) checkSize(req.initrdBytes, 'initrdBytes', MAX_INITRD_BYTES);
    }
    if (this.pending.size >= this.maxPending) {
      throw new HangarError('RESOURCE_EXHAUSTED', `${this.pending.size} image uploads are already in progress; finish or cancel one first`, { max: this.maxPending });
    }
    const releaseName = claimImageName(req.name, this.opts.reservedNames());
    let releaseBytes = (): void => {};
    let work: string | null = null;
    try {
      releaseBytes = reserveImageBytes(`upload:${req.name}`, (req.kernelBytes ?? 0) + (req.initrdBytes ?? 0) + (req.diskBytes ?? 0), usedImageBytes());
      work = makeImportWorkDir(req.name);
    } catch (e) {
      releaseBytes();
      releaseName();
      throw toHangarError(e);
    }
    const parts = new Map<UploadPart, PartState>(isDisk
      ? [['disk', { declared: req.diskBytes!, received: 0, state: 'waiting' }]]
      : [['kernel', { declared: req.kernelBytes!, received: 0, state: 'waiting' }]]);
    if (req.initrdBytes !== undefined) parts.set('initrd', { declared: req.initrdBytes, received: 0, state: 'waiting' });
    let settle!: Pending['settle'];
    const done = new Promise<unknown>((resolve, reject) => { settle = { resolve, reject }; });
    // Failed before the operation's work picked it up (cancelled at once): not an unhandled rejection.
    done.catch(() => {});
    const workDir = work;
    const op = this.operations.run(`Import image ${req.name} (upload)`, [], async (report) => {
      const p = this.pending.get(op.id);
      if (p) { p.report = report; report({ stage: 'waiting for upload', percent: 0 }); }
      return done;
    });
    const p: Pending = {
      id: op.id, req, work: workDir, parts, report: null, settle, idle: null, body: null, lastPercent: -1, failed: null,
      release: () => { releaseBytes(); releaseName(); },
    };
    this.pending.set(op.id, p);
    this.touch(p);
    return op;
  }

  /**
   * Stores one part from a request body. Resolves with the part's state, and
   * with the image once it was the last part. Rejects (and fails the whole
   * import) on any error; the caller answers with it and closes the connection.
   */
  async receive(id: string, part: UploadPart, body: Readable, contentLength?: number): Promise<{ part: UploadPart; bytes: number; image?: unknown }> {
    const p = this.pending.get(id);
    if (!p) throw new HangarError('NOT_FOUND', `no image upload in progress with id ${id}`, { id });
    const st = p.parts.get(part);
    if (!st) throw this.fail(p, new HangarError('INVALID_ARGUMENT', `this upload declared no ${part}`, { part }));
    if (st.state !== 'waiting') throw new HangarError('INVALID_STATE', `the ${part} of this upload is ${st.state === 'done' ? 'already stored' : 'being received'}`, { part });
    if (contentLength !== undefined && contentLength !== st.declared) {
      throw this.fail(p, new HangarError('INVALID_ARGUMENT', `the ${part} was declared as ${st.declared} bytes but the request carries ${contentLength}`, { part, declared: st.declared, sent: contentLength }));
    }
    st.state = 'receiving';
    p.body = body;
    const file = path.join(p.work, FILE_OF[part]);
    const fh = await fs.promises.open(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
    let head: Buffer | null = Buffer.alloc(0);
    try {
      for await (const chunk of body) {
        if (p.failed) throw p.failed;
        const buf = chunk as Buffer;
        if (st.received + buf.length > st.declared) {
          throw new HangarError('INVALID_ARGUMENT', `the ${part} is longer than the ${st.declared} bytes declared: upload cut off`, { part, declared: st.declared });
        }
        if (head) {
          head = Buffer.concat([head, buf.subarray(0, FORMAT_HEAD_BYTES - head.length)]);
          if (head.length >= Math.min(FORMAT_HEAD_BYTES, st.declared)) { checkHead(part, head); head = null; }
        }
        await writeAll(fh, buf);
        st.received += buf.length;
        this.touch(p);
        this.progress(p, part);
      }
      if (p.failed) throw p.failed;
      if (st.received !== st.declared) {
        throw new HangarError('INVALID_ARGUMENT', `the ${part} ended after ${st.received} of the ${st.declared} bytes declared`, { part, declared: st.declared, received: st.received });
      }
      if (head) checkHead(part, head);
    } catch (e) {
      throw this.fail(p, toHangarError(e, 'INVALID_ARGUMENT'));
    } finally {
      await fh.close();
      p.body = null;
    }
    st.state = 'done';
    if (![...p.parts.values()].every((s) => s.state === 'done')) return { part, bytes: st.received };
    return { part, bytes: st.received, image: await this.finish(p) };
  }

  /** Cancels an upload in progress (DELETE): the operation fails, nothing is kept. */
  cancel(id: string): void {
    const p = this.pending.get(id);
    if (!p) throw new HangarError('NOT_FOUND', `no image upload in progress with id ${id}`, { id });
    this.fail(p, new HangarError('INVALID_STATE', 'the upload was cancelled'));
  }

  /** Fails every upload in progress (daemon shutdown). */
  abortAll(reason: string): void {
    for (const p of [...this.pending.values()]) this.fail(p, new HangarError('UNAVAILABLE', reason));
  }

  get size(): number {
    return this.pending.size;
  }

  private async finish(p: Pending): Promise<unknown> {
    this.pending.delete(p.id);
    if (p.idle) clearTimeout(p.idle);
    try {
      const image = p.parts.has('disk') ? await this.finishDisk(p) : installImage(p.work, {
        name: p.req.name,
        description: p.req.description ?? `uploaded kernel${p.parts.has('initrd') ? ' and initrd' : ''}`,
        ...(p.req.cmdline !== undefined ? { cmdline: p.req.cmdline } : {}),
        kernelFormat: checkKernelHead(readStart(path.join(p.work, 'kernel')), 'upload'),
        ...(p.parts.has('initrd') ? { initrdFormat: checkInitrdHead(readStart(path.join(p.work, 'initrd.img')), 'upload') } : {}),
        source: { kernel: 'upload', ...(p.parts.has('initrd') ? { initrd: 'upload' } : {}) },
        importedAt: new Date().toISOString(),
      });
      const shown = this.opts.present(image);
      p.settle.resolve(shown);
      return shown;
    } catch (e) {
      const err = toHangarError(e);
      fs.rmSync(p.work, { recursive: true, force: true });
      p.settle.reject(err);
      throw err;
    } finally {
      p.release();
    }
  }

  /** A disk upload: checked and converted (disk-import.ts) into a folder of its own; the upload's folder goes. */
  private async finishDisk(p: Pending): Promise<LocalImage> {
    const file = path.join(p.work, FILE_OF.disk);
    try {
      return await finishDiskUpload(file, {
        name: p.req.name, ...(p.req.boot ? { boot: p.req.boot } : {}), ...(p.req.format ? { format: p.req.format } : {}),
        ...(p.req.description !== undefined ? { description: p.req.description } : {}),
      }, p.parts.get('disk')!.declared, (r) => p.report?.(r));
    } finally {
      fs.rmSync(p.work, { recursive: true, force: true });
    }
  }

  /** Ends an import with `err`: cuts off its body, removes its files, fails its operation. */
  private fail(p: Pending, err: HangarError): HangarError {
    if (p.failed) return err;
    p.failed = err;
    this.pending.delete(p.id);
    if (p.idle) clearTimeout(p.idle);
    p.body?.destroy();
    fs.rmSync(p.work, { recursive: true, force: true });
    p.release();
    p.settle.reject(err);
    return err;
  }

  private touch(p: Pending): void {
    if (p.idle) clearTimeout(p.idle);
    p.idle = setTimeout(() => {
      this.fail(p, new HangarError('TIMEOUT', `the upload received nothing for ${Math.round(this.idleMs / 1000)} s`));
    }, this.idleMs);
    p.idle.unref();
  }

  private progress(p: Pending, part: UploadPart): void {
    let total = 0;
    let got = 0;
    for (const s of p.parts.values()) { total += s.declared; got += s.received; }
    const percent = Math.floor((got / total) * 100);
    if (percent === p.lastPercent) return;
    p.lastPercent = percent;
    p.report?.({ stage: `uploading ${part}`, percent });
  }
}

function checkSize(n: unknown, field: string, max: number): void {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1 || n > max) {
    throw new HangarError('INVALID_ARGUMENT', `${field} must be a whole number of bytes from 1 to ${max}`, { field, max });
  }
}

function checkHead(part: UploadPart, head: Buffer): void {
  if (part === 'kernel') checkKernelHead(head, 'upload');
  else if (part === 'initrd') checkInitrdHead(head, 'upload');
  // A disk is inspected whole once it has arrived (disk-import.ts).
}

/** Writes all of `buf` (a short write is continued). Volume uploads use it too. */
export async function writeAll(fh: fs.promises.FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
}

function readStart(file: string): Buffer {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    const b = Buffer.alloc(FORMAT_HEAD_BYTES);
    const n = fs.readSync(fd, b, 0, b.length, 0);
    return b.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}
