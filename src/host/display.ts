/**
 * A VM's display, as the daemon serves it: screenshots through the engine
 * (QMP screendump) and the raw VNC stream of the VM's Unix socket.
 *
 * `connectVnc` is the seam for a browser console: a WebSocket route can pipe
 * its frames to and from the socket this returns (RFB over WebSocket, as
 * noVNC speaks it), the same way the serial console route pipes the console.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { HangarError } from '../common/errors.js';
import type { VmHandle } from '../engines/engine.js';

export type ScreenshotFormat = 'png' | 'ppm';

export const SCREENSHOT_TYPES: Record<ScreenshotFormat, string> = { png: 'image/png', ppm: 'image/x-portable-pixmap' };

/**
 * What the VM's display shows now, as an image file's bytes. The engine
 * writes it into the VM's folder (the only place the VM process may create
 * files); it is read and removed here.
 */
export async function takeScreenshot(handle: VmHandle, vmDir: string, format: ScreenshotFormat): Promise<Buffer> {
  if (!handle.screendump) throw new HangarError('UNSUPPORTED', `engine ${handle.engine} cannot take screenshots`);
  const file = path.join(vmDir, `screendump-${randomBytes(6).toString('hex')}.${format}`);
  try {
    await handle.screendump(file, format);
    return fs.readFileSync(file);
  } finally {
    fs.rmSync(file, { force: true });
  }
}

/** A connection to the VM's VNC server (RFB), for a proxy to relay. */
export function connectVnc(socket: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socket);
    s.once('connect', () => {
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (err) => reject(new HangarError('UNAVAILABLE', `VNC socket: ${err.message}`, { path: socket })));
  });
}
