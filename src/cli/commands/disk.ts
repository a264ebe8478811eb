/**
 * Disks on the command line: `hangar launch … --disk …` and
 * `hangar disk attach|detach|list VM`.
 *
 * A disk is written as
 *   SIZE                  launch: the root disk's size; attach: a new volume (default name)
 *   NAME=SIZE             a new volume <default pool>/<vm>-NAME of SIZE
 *   NAME=POOL/VOLUME      an existing volume
 *   NAME=VOLUME           an existing volume in the default pool
 *   POOL/VOLUME           attach: an existing volume (default name)
 * followed by options after commas: `ro` (read-only), `serial=S`, `pool=P`
 * (the pool of a new volume). The part after "=" is a size when it reads as
 * one (50G, 1048576): a volume whose name looks like a size is written with
 * its pool (default/50G).
 */
import type { Command } from 'commander';
import { HangarError } from '../../common/errors.js';
import { formatSize, parseSize } from '../../common/sizes.js';
import type { DiskRequest, Operation, VmDiskInfo } from '../../host/api/schemas.js';
import { checkVmName, clientFor, followOperation, formatFor, out, printJson, vmPath, withJson } from '../context.js';
import { renderRows } from '../output.js';

function bad(message: string): never {
  throw new HangarError('INVALID_ARGUMENT', message);
}

function sizeOf(s: string): number | null {
  if (!/^\d+(\.\d+)?[A-Za-z]*$/.test(s)) return null;
  try { return parseSize(s); } catch { return null; }
}

/** One disk value as written; `bare` when it is only a size (no name, no volume). */
export interface DiskArg {
  disk: DiskRequest;
  bare: boolean;
}

export function parseDiskArg(value: string, where = '--disk'): DiskArg {
  const [main = '', ...opts] = value.split(',');
  if (main === '') bad(`${where} ${JSON.stringify(value)}: expected SIZE, NAME=SIZE or NAME=POOL/VOLUME`);
  const disk: DiskRequest = {};
  for (const o of opts) {
    if (o === 'ro' || o === 'readonly') disk.readOnly = true;
    else if (o.startsWith('serial=')) disk.serial = o.slice(7);
    else if (o.startsWith('pool=')) disk.pool = o.slice(5);
    else bad(`${where} ${JSON.stringify(value)}: unknown option "${o}" (ro, serial=S, pool=P)`);
  }
  const eq = main.indexOf('=');
  const target = eq >= 0 ? main.slice(eq + 1) : main;
  if (eq >= 0) {
    disk.name = main.slice(0, eq);
    if (disk.name === '') bad(`${where} ${JSON.stringify(value)}: the disk name before "=" is empty`);
  }
  if (target === '') bad(`${where} ${JSON.stringify(value)}: nothing after "="`);
  const size = target.includes('/') ? null : sizeOf(target);
  if (size !== null) {
    disk.size = size;
  } else if (eq < 0 && !target.includes('/')) {
    bad(`${where} ${JSON.stringify(value)}: "${target}" is not a size; name an existing volume as NAME=POOL/VOLUME or POOL/VOLUME`);
  } else {
    disk.volume = target;
  }
  return { disk, bare: eq < 0 && size !== null };
}

/** The create request's rootSize and disks from repeated --disk values. */
export function launchDisks(values: readonly string[]): { rootSize?: number; disks?: DiskRequest[] } {
  let rootSize: number | undefined;
  const disks: DiskRequest[] = [];
  for (const v of values) {
    const a = parseDiskArg(v);
    if (a.bare) {
      if (rootSize !== undefined) bad('--disk SIZE (the root disk\'s size) is given twice');
      if (Object.keys(a.disk).length > 1) bad(`--disk ${v}: the root disk takes no options; give other disks a name (NAME=SIZE)`);
      rootSize = a.disk.size as number;
    } else {
      disks.push(a.disk);
    }
  }
  return { ...(rootSize !== undefined ? { rootSize } : {}), ...(disks.length ? { disks } : {}) };
}

/** `hangar disk attach VM DISK`: a bare SIZE is a new volume, not a root size. */
export function attachRequest(value: string, o: { name?: string; readOnly?: boolean; serial?: string; pool?: string }): DiskRequest {
  const disk = parseDiskArg(value, 'DISK').disk;
  if (o.name !== undefined) {
    if (disk.name !== undefined && disk.name !== o.name) bad(`the disk is named twice: "${disk.name}" and --name ${o.name}`);
    disk.name = o.name;
  }
  if (o.readOnly) disk.readOnly = true;
  if (o.serial !== undefined) disk.serial = o.serial;
  if (o.pool !== undefined) disk.pool = o.pool;
  return disk;
}

export const DISK_HEADERS = ['NAME', 'VOLUME', 'SIZE', 'FORMAT', 'MODE', 'SERIAL'];

export function diskRow(d: VmDiskInfo): string[] {
  return [d.name, d.volume + (d.owned ? ' (own)' : ''), d.sizeBytes !== undefined ? formatSize(d.sizeBytes) : '-', d.format ?? '-', d.readOnly ? 'ro' : 'rw', d.serial ?? '-'];
}

export function registerDiskCommands(program: Command): void {
  const disk = program.command('disk').description("a VM's disks: list, attach (hot-plugged into a running QEMU VM), detach");

  withJson(disk.command('list').alias('ls').description("list a VM's disks").argument('<vm>', 'VM name').option('--format <format>', 'table, json or csv', 'table'))
    .action(async (vm: string, _o: unknown, cmd: Command) => {
      checkVmName(vm);
      const format = formatFor(cmd);
      const disks = await clientFor(cmd).get<VmDiskInfo[]>(vmPath(vm, '/disks'));
      if (format === 'json') return printJson(disks);
      out(renderRows(format, DISK_HEADERS, disks.map(diskRow)));
    });

  withJson(
    disk
      .command('attach')
      .description('attach a disk: a new volume (SIZE, NAME=SIZE) or an existing one (POOL/VOLUME, NAME=POOL/VOLUME)')
      .argument('<vm>', 'VM name')
      .argument('<disk>', 'SIZE | NAME=SIZE | POOL/VOLUME | NAME=POOL/VOLUME, options after commas: ro, serial=S, pool=P')
      .option('--name <name>', 'device name in the VM (default disk1, disk2, …)')
      .option('--ro', 'read-only for the guest')
      .option('--serial <serial>', 'serial number the guest sees (default: the disk name)')
      .option('--pool <pool>', 'pool of a new volume (default: default)')
      .option('--no-wait', 'print the operation id and return at once'),
  ).action(async (vm: string, value: string, o: { name?: string; ro?: boolean; serial?: string; pool?: string; wait: boolean; json?: boolean }, cmd: Command) => {
    checkVmName(vm);
    const body = attachRequest(value, { ...(o.name !== undefined ? { name: o.name } : {}), ...(o.ro ? { readOnly: true } : {}), ...(o.serial !== undefined ? { serial: o.serial } : {}), ...(o.pool !== undefined ? { pool: o.pool } : {}) });
    const client = clientFor(cmd);
    const op = await client.call<Operation>('POST', vmPath(vm, '/disks'), body);
    if (!o.wait) return o.json ? printJson(op) : out(`${op.id}\n`);
    const final = await followOperation(client, op, { label: `Attaching a disk to ${vm}`, done: o.json ? undefined : `Attached to ${vm}`, quiet: Boolean(o.json) });
    if (o.json) printJson(final?.result ?? null);
  });

  withJson(
    disk
      .command('detach')
      .description('detach a disk (unplugged from a running QEMU VM); its volume is kept')
      .argument('<vm>', 'VM name')
      .argument('<name>', 'disk name (see `hangar disk list VM`)')
      .option('--no-wait', 'print the operation id and return at once'),
  ).action(async (vm: string, name: string, o: { wait: boolean; json?: boolean }, cmd: Command) => {
    checkVmName(vm);
    const client = clientFor(cmd);
    const op = await client.call<Operation>('DELETE', vmPath(vm, `/disks/${encodeURIComponent(name)}`));
    if (!o.wait) return o.json ? printJson(op) : out(`${op.id}\n`);
    const final = await followOperation(client, op, { label: `Detaching ${name} from ${vm}`, done: o.json ? undefined : `Detached ${name} from ${vm}`, quiet: Boolean(o.json) });
    if (o.json) printJson(final?.result ?? null);
  });
}
