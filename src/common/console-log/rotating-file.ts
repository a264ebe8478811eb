/**
 * A size-bounded, rotated append-only file (see limits.ts), written with
 * synchronous calls: hangar-vmm writes its console log this way, once per
 * event-loop turn. Write errors (a full disk) drop that output: a VM must
 * keep running when its log cannot be written.
 */
import fs from 'node:fs';
import { checkConsoleLogLimit, type ConsoleLogLimit } from './limits.js';

export class RotatingFile {
  private fd: number | null = null;
  private size = 0;

  constructor(private readonly file: string, private readonly limit: ConsoleLogLimit) {
    checkConsoleLogLimit(limit);
    this.open();
  }

  private open(): void {
    this.fd = fs.openSync(this.file, 'a', 0o640);
    this.size = fs.fstatSync(this.fd).size;
  }

  /** FILE -> FILE.1 -> ... -> FILE.(files-1); the oldest is overwritten. */
  private rotate(): void {
    this.closeFd();
    for (let k = this.limit.files - 1; k >= 1; k--) {
      try { fs.renameSync(k === 1 ? this.file : `${this.file}.${k - 1}`, `${this.file}.${k}`); } catch { /* not there yet */ }
    }
    try { this.open(); } catch { this.fd = null; this.size = 0; }
  }

  write(data: Uint8Array): void {
    let at = 0;
    while (at < data.length) {
      if (this.size >= this.limit.fileBytes) this.rotate();
      const take = Math.min(data.length - at, this.limit.fileBytes - this.size);
      if (this.fd !== null) {
        try { fs.writeSync(this.fd, data, at, take); } catch { /* disk full: drop this piece */ }
      }
      this.size += take;
      at += take;
    }
  }

  private closeFd(): void {
    if (this.fd === null) return;
    try { fs.closeSync(this.fd); } catch { /* already closed */ }
    this.fd = null;
  }

  close(): void {
    this.closeFd();
  }
}
