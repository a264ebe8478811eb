/**
 * Which QEMU this host has. The daemon's host check and the engine's
 * capabilities both ask here.
 */
import { execFile } from 'node:child_process';

/** The program the QEMU engine runs; HANGAR_QEMU overrides it (a wrapper, another build). */
export function qemuBinary(): string {
  return process.env.HANGAR_QEMU || 'qemu-system-x86_64';
}

/** Parses the first line of `qemu-system-x86_64 --version`, e.g. "QEMU emulator version 7.2.22 (Debian ...)" → "7.2.22". */
export function parseQemuVersion(output: string): string | null {
  const m = /QEMU emulator version (\d+\.\d+(?:\.\d+)?)/.exec(output);
  return m ? m[1]! : null;
}

/** QEMU's version ("7.2.22"), or null when it is not installed or does not run. */
export function qemuVersion(): Promise<string | null> {
  return new Promise((resolve) => {
    execFile(qemuBinary(), ['--version'], { timeout: 10_000 }, (err, stdout) => {
      resolve(err ? null : parseQemuVersion(String(stdout)));
    });
  });
}
