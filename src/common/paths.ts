import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { fileURLToPath } from 'node:url';

/** Root of the Hangar checkout: the nearest folder above this file that holds package.json. */
export function projectRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (dir !== path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    dir = path.dirname(dir);
  }
  return process.cwd();
}

/** The one data directory: HANGAR_DATA_DIR, /var/lib/hangar as root, else $XDG_DATA_HOME/hangar. */
export function dataDir(): string {
  if (process.env.HANGAR_DATA_DIR) return path.resolve(process.env.HANGAR_DATA_DIR);
  if (process.getuid?.() === 0) return '/var/lib/hangar';
  const xdg = process.env.XDG_DATA_HOME ?? path.join(os.homedir(), '.local', 'share');
  return path.join(xdg, 'hangar');
}

/** The daemon's Unix socket: HANGAR_SOCKET, else <dataDir>/hangard.sock. */
export function socketPath(): string {
  return process.env.HANGAR_SOCKET ? path.resolve(process.env.HANGAR_SOCKET) : path.join(dataDir(), 'hangard.sock');
}

/** Shared cache for built images (guest kernel, initramfs): <dataDir>/images unless HANGAR_IMAGE_DIR. */
export function imageDir(): string {
  return process.env.HANGAR_IMAGE_DIR ? path.resolve(process.env.HANGAR_IMAGE_DIR) : path.join(dataDir(), 'images');
}
