/**
 * `hangar image list`: images the daemon can boot, and whether they are built.
 */
import type { Command } from 'commander';
import { formatSize } from '../../common/sizes.js';
import type { Image } from '../../host/api/schemas.js';
import { clientFor, formatFor, out, printJson, withJson } from '../context.js';
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
}
