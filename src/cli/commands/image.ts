/**
 * `hangar image list|import|delete`: images the daemon can boot, whether
 * they are built, and images imported from files on the daemon's host.
 */
import path from 'node:path';
import type { Command } from 'commander';
import { HangarError } from '../../common/errors.js';
import { isImageName, IMAGE_NAME_RULE } from '../../api/names.js';
import { formatSize } from '../../common/sizes.js';
import type { Image, ImageImportRequest } from '../../host/api/schemas.js';
import { clientFor, formatFor, out, printJson, withJson } from '../context.js';

function checkImageName(name: string): string {
  if (!isImageName(name)) {
    throw new HangarError('INVALID_ARGUMENT', `image name "${name}" is not valid: ${IMAGE_NAME_RULE}`);
  }
  return name;
}

export interface ImportOptions {
  kernel: string;
  initrd?: string;
  cmdline?: string;
  description?: string;
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
      .description("import an image from a kernel (and initrd) on the daemon's host; the daemon keeps its own copy")
      .argument('<name>', 'image name: lower-case letters, digits, dots, dashes and underscores')
      .requiredOption('--kernel <path>', 'x86-64 ELF64 kernel or Linux bzImage')
      .option('--initrd <path>', 'initrd to load with it')
      .option('--cmdline <args>', "kernel command line (default: the engine's)")
      .option('--description <text>', 'one line shown by `hangar image list`'),
  ).action(async (name: string, o: ImportOptions & { json?: boolean }, cmd: Command) => {
    const img = await clientFor(cmd).call<Image>('POST', '/1.0/images', importRequest(name, o));
    if (o.json) return printJson(img);
    out(`Imported image ${img.name} (${img.sizeBytes !== undefined ? formatSize(img.sizeBytes) : '?'})\n`);
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
