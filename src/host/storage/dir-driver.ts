/**
 * The `dir` pool driver: a folder of image files, `<volume>.<format>`, 0600,
 * in a folder of the daemon's (0700). Volumes being made are hidden work
 * files (`.<volume>.<format>.<random>.part`) in the same folder, put in place
 * with link(2), which never replaces an existing file, so a failure halfway
 * leaves no half volume under a volume's name.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { HangarError } from '../../common/errors.js';
import type { NewVolume, PoolCapacity, PoolDriver } from './driver.js';
import { qemuImgCreate, type DiskFormat } from './qemu-img.js';

const WORK_RE = /^\.[A-Za-z0-9][A-Za-z0-9._-]*\.[0-9a-f]{12}\.part$/;

export class DirPoolDriver implements PoolDriver {
  readonly name = 'dir' as const;

  constructor(readonly root: string) {
    if (!path.isAbsolute(root)) throw new HangarError('INVALID_ARGUMENT', `a dir pool's path must be absolute, got "${root}"`);
  }

  prepare(): void {
    fs.mkdirSync(this.root, { recursive: true, mode: 0o700 });
    const st = fs.lstatSync(this.root);
    if (!st.isDirectory()) throw new HangarError('INVALID_ARGUMENT', `pool folder ${this.root} is not a folder`);
  }

  volumePath(volume: string, format: DiskFormat): string {
    return path.join(this.root, `${volume}.${format}`);
  }

  workPath(volume: string, format: DiskFormat): string {
    this.prepare();
    return path.join(this.root, `.${volume}.${format}.${randomBytes(6).toString('hex')}.part`);
  }

  install(work: string, volume: string, format: DiskFormat): string {
    const final = this.volumePath(volume, format);
    fs.chmodSync(work, 0o600);
    // The data reaches the disk before the name does.
    const fd = fs.openSync(work, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try { fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
    try {
      fs.linkSync(work, final);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new HangarError('ALREADY_EXISTS', `${final} already exists: a file Hangar does not know is in the pool's folder under this volume's name`, { path: final });
      }
      throw e;
    }
    fs.rmSync(work, { force: true });
    return final;
  }

  async create(volume: string, spec: NewVolume): Promise<string> {
    const work = this.workPath(volume, spec.format);
    try {
      await qemuImgCreate(work, {
        format: spec.format,
        ...(spec.sizeBytes !== undefined ? { sizeBytes: spec.sizeBytes } : {}),
        ...(spec.backing ? { backing: spec.backing } : {}),
      });
      return this.install(work, volume, spec.format);
    } catch (e) {
      this.discardWork(work);
      throw e;
    }
  }

  remove(volume: string, format: DiskFormat): void {
    fs.rmSync(this.volumePath(volume, format), { force: true });
  }

  discardWork(work: string): void {
    if (path.dirname(work) !== this.root) return;
    fs.rmSync(work, { force: true });
  }

  allocatedBytes(volume: string, format: DiskFormat): number {
    try {
      return fs.statSync(this.volumePath(volume, format)).blocks * 512;
    } catch {
      return 0;
    }
  }

  capacity(): PoolCapacity {
    try {
      const s = fs.statfsSync(this.root);
      return { totalBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize };
    } catch {
      return { totalBytes: 0, freeBytes: 0 };
    }
  }

  cleanWork(): string[] {
    let names: string[];
    try { names = fs.readdirSync(this.root); } catch { return []; }
    const removed: string[] = [];
    for (const n of names) {
      if (!WORK_RE.test(n)) continue;
      fs.rmSync(path.join(this.root, n), { force: true });
      removed.push(path.join(this.root, n));
    }
    return removed;
  }

  isEmpty(): boolean {
    try {
      return fs.readdirSync(this.root).every((n) => WORK_RE.test(n));
    } catch {
      return true;
    }
  }

  destroy(): void {
    this.cleanWork();
    try {
      fs.rmdirSync(this.root);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') throw new HangarError('INVALID_STATE', `pool folder ${this.root} could not be removed: ${(e as Error).message}`);
    }
  }
}
