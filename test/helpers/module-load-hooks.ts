/**
 * Module loader hooks for module-load-recorder.ts (they run in Node's loader
 * thread): every module's URL is appended, one line each, to the file named
 * by `initialize`'s data, once its source is loaded and before the process
 * gets it, so a module evaluated before some moment has its line in the file
 * before anything the process itself appends at that moment.
 */
import fs from 'node:fs';

let file = '';

export function initialize(data: { file: string }): void {
  file = data.file;
}

type Load = (url: string, context: unknown) => Promise<unknown>;

export async function load(url: string, context: unknown, next: Load): Promise<unknown> {
  const r = await next(url, context);
  fs.appendFileSync(file, `${url}\n`);
  return r;
}
