/**
 * `hangar image list|import|delete`: images the daemon can boot, whether
 * they are built, and imported ones. `import` uploads local files through
 * the API (so it works against a remote daemon too) with progress; with
 * --from-daemon-dir it names files in the daemon's own import folders instead.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { HangarError } from '../../common/errors.js';
import { isImageName, IMAGE_NAME_RULE } from '../../api/names.js';
import { formatSize } from '../../common/sizes.js';
import type { Image, ImageImportRequest, Operation } from '../../host/api/schemas.js';
import { errorFromResponse, type ApiClient } from '../client.js';
import { clientFor, followOperation, formatFor, out, printJson, withJson } from '../context.js';
import { ProgressReporter } from '../progress.js';

function checkImageName(name: string): string {
  if (!isImageName(name)) {
    throw new HangarError('INVALID_ARGUMENT', `image name "${name}" is not valid: ${IMAGE_NAME_RULE}`);
  }
  return name;
}

export interface ImportOptions {
  kernel?: string;
  /** A disk image (raw or qcow2 with its own boot loader) instead of a kernel. */
  disk?: string;
  boot?: string;
  format?: string;
  initrd?: string;
  cmdline?: string;
  description?: string;
  fromDaemonDir?: boolean;
}

/** A local file to upload: must be a non-empty regular file (a symlink to one is fine: it is the user's own). */
function localFile(p: string, what: string): { path: string; size: number } {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new HangarError('NOT_FOUND', `${what} ${p} does not exist`);
    throw new HangarError('INVALID_ARGUMENT', `cannot read ${what} ${p}: ${(e as Error).message}`);
  }
  if (!st.isFile()) throw new HangarError('INVALID_ARGUMENT', `${what} ${p} is not a regular file`);
  if (st.size === 0) throw new HangarError('INVALID_ARGUMENT', `${what} ${p} is empty`);
  return { path: p, size: st.size };
}

/**
 * Uploads a kernel (and initrd) as a new image: announces the sizes, sends
 * each file, and returns the image the finished operation reports. Progress
 * (bytes sent) goes to stderr unless quiet.
 */
export async function uploadImage(client: ApiClient, name: string, o: ImportOptions, quiet: boolean): Promise<Image> {
  checkImageName(name);
  if (o.disk !== undefined) return uploadDisk(client, name, o as ImportOptions & { disk: string }, quiet);
  if (!o.kernel) throw new HangarError('INVALID_ARGUMENT', '--kernel or --disk is required');
  const kernel = localFile(o.kernel, 'kernel');
  const initrd = o.initrd !== undefined ? localFile(o.initrd, 'initrd') : undefined;
  const op = await client.call<Operation>('POST', '/1.0/images/uploads', {
    name, kernelBytes: kernel.size, ...(initrd ? { initrdBytes: initrd.size } : {}),
    ...(o.cmdline !== undefined ? { cmdline: o.cmdline } : {}), ...(o.description !== undefined ? { description: o.description } : {}),
  });
  const total = kernel.size + (initrd?.size ?? 0);
  const progress = quiet ? undefined : new ProgressReporter(`Uploading image ${name} (${formatSize(total)})`);
  progress?.start();
  let before = 0;
  try {
    for (const [part, f] of [['kernel', kernel], ...(initrd ? [['initrd', initrd]] : [])] as Array<[string, { path: string; size: number }]>) {
      const url = `/1.0/images/uploads/${encodeURIComponent(op.id)}/${part}`;
      let res;
      try {
        res = await client.upload('PUT', url, f.path, f.size, (sent) => {
          progress?.update({ description: '', progress: { stage: `uploading ${part}`, percent: ((before + sent) / total) * 100 } });
        });
      } catch (e) {
        // The daemon cut the upload off: its operation says why.
        await client.waitOperation(op.id);
        throw e;
      }
      if (res.status >= 400) throw errorFromResponse(res);
      before += f.size;
    }
    const final = await client.waitOperation(op.id);
    progress?.stop();
    return final.result as Image;
  } catch (e) {
    progress?.stop();
    throw e;
  }
}

/** The disk-image fields of an import (--boot, --format), checked here so a typo costs no upload. */
function diskFields(o: ImportOptions): { boot?: 'bios' | 'uefi'; format?: 'raw' | 'qcow2' } {
  if (o.kernel !== undefined || o.initrd !== undefined || o.cmdline !== undefined) {
    throw new HangarError('INVALID_ARGUMENT', '--disk imports a disk with its own boot loader: it takes no --kernel, --initrd or --cmdline');
  }
  if (o.boot !== undefined && o.boot !== 'bios' && o.boot !== 'uefi') throw new HangarError('INVALID_ARGUMENT', `--boot must be bios or uefi, not "${o.boot}"`);
  if (o.format !== undefined && o.format !== 'raw' && o.format !== 'qcow2') throw new HangarError('INVALID_ARGUMENT', `--format must be raw or qcow2, not "${o.format}"`);
  return { ...(o.boot !== undefined ? { boot: o.boot } : {}), ...(o.format !== undefined ? { format: o.format } : {}) };
}

/**
 * Uploads a disk image: announces its size, sends it, and follows the
 * operation (the daemon checks and converts it once it has arrived).
 */
async function uploadDisk(client: ApiClient, name: string, o: ImportOptions & { disk: string }, quiet: boolean): Promise<Image> {
  const fields = diskFields(o);
  const disk = localFile(o.disk, 'disk');
  const op = await client.call<Operation>('POST', '/1.0/images/uploads', {
    name, diskBytes: disk.size, ...fields, ...(o.description !== undefined ? { description: o.description } : {}),
  });
  const progress = quiet ? undefined : new ProgressReporter(`Uploading disk image ${name} (${formatSize(disk.size)})`);
  progress?.start();
  try {
    let res;
    try {
      res = await client.upload('PUT', `/1.0/images/uploads/${encodeURIComponent(op.id)}/disk`, disk.path, disk.size, (sent) => {
        progress?.update({ description: '', progress: { stage: 'uploading disk', percent: (sent / disk.size) * 100 } });
      });
    } catch (e) {
      await client.waitOperation(op.id);
      throw e;
    }
    if (res.status >= 400) throw errorFromResponse(res);
    const final = await client.waitOperation(op.id);
    progress?.stop();
    return final.result as Image;
  } catch (e) {
    progress?.stop();
    throw e;
  }
}

/** Imports a disk image from the daemon's import folders (POST /1.0/images with `disk`), following the copy. */
async function importDiskFromDaemonDir(client: ApiClient, name: string, o: ImportOptions & { disk: string }, quiet: boolean, cwd = process.cwd()): Promise<Image> {
  checkImageName(name);
  const body = { name, disk: path.resolve(cwd, o.disk), ...diskFields(o), ...(o.description !== undefined ? { description: o.description } : {}) };
  const op = await client.call<Operation>('POST', '/1.0/images', body);
  const final = await followOperation(client, op, { label: `Importing disk image ${name}`, quiet });
  return final.result as Image;
}

/**
 * Builds the POST /1.0/images body. Paths are made absolute here, against the
 * CLI's working directory, because the daemon reads them from its own.
 */
export function importRequest(name: string, o: ImportOptions, cwd = process.cwd()): ImageImportRequest {
  checkImageName(name);
  if (!o.kernel) throw new HangarError('INVALID_ARGUMENT', '--kernel is required');
  const body: ImageImportRequest = { name, kernel: path.resolve(cwd, o.kernel) };
  if (o.initrd !== undefined) body.initrd = path.resolve(cwd, o.initrd);
  if (o.cmdline !== undefined) body.cmdline = o.cmdline;
  if (o.description !== undefined) body.description = o.description;
  return body;
}
import { renderRows } from '../output.js';

/** A packages.txt as the build request wants it: name=version lines, comments and blanks dropped. */
export function readPackageList(file: string): string[] {
  const text = fs.readFileSync(localFile(file, 'package list').path, 'utf8');
  const lines: string[] = [];
  for (const [n, raw] of text.split('\n').entries()) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    if (!/^[a-z0-9][a-z0-9+.-]*(:[a-z0-9]+)?=[A-Za-z0-9.+~:-]+$/.test(line)) {
      throw new HangarError('INVALID_ARGUMENT', `${file} line ${n + 1}: "${line.slice(0, 80)}" is not name=version`);
    }
    lines.push(line);
  }
  if (lines.length === 0) throw new HangarError('INVALID_ARGUMENT', `${file} lists no packages`);
  return lines;
}

export const IMAGE_HEADERS = ['NAME', 'STATUS', 'SIZE', 'DESCRIPTION'];

export function imageRow(i: Image): string[] {
  return [i.name, i.status, i.sizeBytes !== undefined ? formatSize(i.sizeBytes) : '-', i.description];
}

export function registerImageCommands(program: Command): void {
  const image = program.command('image').description('images VMs boot from');
  withJson(image.command('list').alias('ls').description('list images').option('--format <format>', 'table, json or csv', 'table')).action(
    async (_o: unknown, cmd: Command) => {
      const format = formatFor(cmd);
      const images = await clientFor(cmd).get<Image[]>('/1.0/images');
      if (format === 'json') return printJson(images);
      out(renderRows(format, IMAGE_HEADERS, images.map(imageRow)));
    },
  );

  withJson(
    image
      .command('import')
      .description('import an image: uploads a kernel (and initrd), or a disk with its own boot loader, to the daemon, which keeps its own copy')
      .argument('<name>', 'image name: lower-case letters, digits, dots, dashes and underscores')
      .option('--kernel <path>', 'x86-64 ELF64 kernel or Linux bzImage')
      .option('--disk <path>', 'instead of a kernel: a raw or qcow2 disk that boots by firmware (checked: no backing files, not corrupt, within the quota)')
      .option('--boot <firmware>', 'with --disk: bios or uefi, the firmware its boot loader needs (default bios)')
      .option('--format <format>', 'with --disk: raw or qcow2, what the file is (default: read from its bytes)')
      .option('--initrd <path>', 'initrd to load with it: cpio, or gzip/xz/zstd/lz4/bzip2-compressed cpio')
      .option('--cmdline <args>', "kernel command line (default: the engine's)")
      .option('--description <text>', 'one line shown by `hangar image list`')
      .option('--from-daemon-dir', "don't upload: the paths name files in the daemon's import folders on its host"),
  ).action(async (name: string, o: ImportOptions & { json?: boolean }, cmd: Command) => {
    const client = clientFor(cmd);
    if ((o.kernel === undefined) === (o.disk === undefined)) throw new HangarError('INVALID_ARGUMENT', 'give --kernel (a kernel image) or --disk (a disk image)');
    const img = o.fromDaemonDir
      ? (o.disk !== undefined ? await importDiskFromDaemonDir(client, name, o as ImportOptions & { disk: string }, Boolean(o.json)) : await client.call<Image>('POST', '/1.0/images', importRequest(name, o)))
      : await uploadImage(client, name, o, Boolean(o.json));
    if (o.json) return printJson(img);
    out(`Imported image ${img.name} (${img.sizeBytes !== undefined ? formatSize(img.sizeBytes) : '?'})\n`);
  });

  withJson(
    image
      .command('build')
      .description('build a built-in image now (again, if it is built: the new build replaces the old one when it is complete)')
      .argument('<name>', 'built-in image name, e.g. debian-12')
      .option('--packages <file>', "install exactly these name=version packages: an earlier build's packages.txt")
      .option('--no-wait', 'print the operation id and return at once'),
  ).action(async (name: string, o: { packages?: string; wait: boolean; json?: boolean }, cmd: Command) => {
    checkImageName(name);
    const body = o.packages !== undefined ? { packages: readPackageList(o.packages) } : {};
    const client = clientFor(cmd);
    const op = await client.call<Operation>('POST', `/1.0/images/${encodeURIComponent(name)}/build`, body);
    if (!o.wait) {
      if (o.json) return printJson(op);
      return out(`${op.id}\n`);
    }
    const final = await followOperation(client, op, { label: `Building image ${name}`, quiet: Boolean(o.json) });
    const img = final.result as Image;
    if (o.json) return printJson(img);
    out(`Built image ${img.name} (${img.sizeBytes !== undefined ? formatSize(img.sizeBytes) : '?'})\n`);
  });

  withJson(image.command('delete').alias('rm').description('delete an imported image (refused while a VM uses it)').argument('<name>', 'image name')).action(
    async (name: string, o: { json?: boolean }, cmd: Command) => {
      checkImageName(name);
      await clientFor(cmd).call('DELETE', `/1.0/images/${encodeURIComponent(name)}`);
      if (o.json) return printJson({ name, deleted: true });
      out(`Deleted image ${name}\n`);
    },
  );
}
