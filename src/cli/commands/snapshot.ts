/**
 * `hangar snapshot create|list|show|restore|delete VM [NAME]` and
 * `hangar copy SRC[/SNAPSHOT] NEW` (docs/snapshots.md).
 */
import type { Command } from 'commander';
import { HangarError } from '../../common/errors.js';
import type { Operation, Snapshot, SnapshotCreateRequest, Vm, VmCopyRequest } from '../../host/api/schemas.js';
import { isSnapshotName, SNAPSHOT_NAME_RULE } from '../../host/snapshots/schemas.js';
import type { ApiClient } from '../client.js';
import { checkVmName, clientFor, followOperation, formatFor, note, out, printJson, vmPath, withJson } from '../context.js';
import { formatSizeApprox, formatTime, renderKeyValues, renderRows } from '../output.js';

export const SNAPSHOT_HEADERS = ['NAME', 'CREATED', 'MEMORY', 'VM STATE', 'DISKS'];

export function snapshotRow(s: Snapshot): string[] {
  return [s.name, formatTime(s.createdAt), s.memory ? `yes (${formatSizeApprox(s.vmStateBytes)})` : 'no', s.vmState, s.disks.map((d) => d.name).join(',')];
}

export function checkSnapshotName(name: string): string {
  if (!isSnapshotName(name)) throw new HangarError('INVALID_ARGUMENT', `"${name}" is not a valid snapshot name (${SNAPSHOT_NAME_RULE})`);
  return name;
}

/** "vm" or "vm/snapshot", checked. */
export function parseCopySource(src: string): { vm: string; snapshot?: string } {
  const slash = src.indexOf('/');
  if (slash < 0) return { vm: checkVmName(src) };
  return { vm: checkVmName(src.slice(0, slash)), snapshot: checkSnapshotName(src.slice(slash + 1)) };
}

const snapPath = (vm: string, snap?: string, suffix = ''): string =>
  vmPath(vm, `/snapshots${snap !== undefined ? `/${encodeURIComponent(snap)}` : ''}${suffix}`);

async function finish(client: ApiClient, op: Operation, o: { json?: boolean; wait: boolean }, label: string, done: string): Promise<Operation | null> {
  if (!o.wait) {
    if (o.json) printJson(op);
    else out(`${op.id}\n`);
    return null;
  }
  return followOperation(client, op, { label, done: o.json ? undefined : done, quiet: Boolean(o.json) });
}

export function registerSnapshotCommands(program: Command): void {
  const snap = program.command('snapshot').description('snapshots of a VM: its disks, and with --memory its running state');

  withJson(
    snap.command('create')
      .description('take a snapshot (a stopped VM: its disks; a running VM: its disks, and with --memory its RAM and devices)')
      .argument('<vm>', 'VM name')
      .argument('[name]', 'snapshot name (default snap0, snap1, ...)')
      .option('--memory', 'also save RAM and device state: restoring resumes the VM where it was (VM must be running)')
      .option('--no-wait', 'print the operation id and return at once'),
  ).action(async (vm: string, name: string | undefined, o: { memory?: boolean; json?: boolean; wait: boolean }, cmd: Command) => {
    checkVmName(vm);
    const body: SnapshotCreateRequest = {};
    if (name !== undefined) body.name = checkSnapshotName(name);
    if (o.memory) body.memory = true;
    const client = clientFor(cmd);
    const op = await client.call<Operation>('POST', snapPath(vm), body);
    const final = await finish(client, op, o, `Snapshotting ${vm}`, `Snapshot taken of ${vm}`);
    if (final && o.json) printJson(final.result);
    else if (final) note(`Snapshot: ${(final.result as Snapshot | undefined)?.name ?? '?'}`);
  });

  withJson(
    snap.command('list').alias('ls').description("list a VM's snapshots, oldest first").argument('<vm>', 'VM name')
      .option('--format <format>', 'table, json or csv', 'table'),
  ).action(async (vm: string, _o: unknown, cmd: Command) => {
    checkVmName(vm);
    const format = formatFor(cmd);
    const list = await clientFor(cmd).get<Snapshot[]>(snapPath(vm));
    if (format === 'json') return printJson(list);
    out(renderRows(format, SNAPSHOT_HEADERS, list.map(snapshotRow)));
  });

  withJson(snap.command('show').description('show one snapshot').argument('<vm>', 'VM name').argument('<name>', 'snapshot name'))
    .action(async (vm: string, name: string, o: { json?: boolean }, cmd: Command) => {
      checkVmName(vm);
      const s = await clientFor(cmd).get<Snapshot>(snapPath(vm, checkSnapshotName(name)));
      if (o.json) return printJson(s);
      out(renderKeyValues({
        name: s.name, vm: s.vm, created: formatTime(s.createdAt), memory: s.memory ? `yes (${formatSizeApprox(s.vmStateBytes)} of machine state)` : 'no',
        'vm state': s.vmState, disks: s.disks.map((d) => `${d.name} (${d.volume})`).join(', '),
      }));
    });

  withJson(
    snap.command('restore')
      .description('put a VM back to a snapshot (a memory snapshot resumes it where it was); refused while it would lose unsaved data')
      .argument('<vm>', 'VM name')
      .argument('<name>', 'snapshot name')
      .option('-f, --force', 'restore even when the VM runs or has run since its newest snapshot (that state is lost)')
      .option('--no-wait', 'print the operation id and return at once'),
  ).action(async (vm: string, name: string, o: { force?: boolean; json?: boolean; wait: boolean }, cmd: Command) => {
    checkVmName(vm);
    const client = clientFor(cmd);
    const op = await client.call<Operation>('POST', snapPath(vm, checkSnapshotName(name), '/restore'), o.force ? { force: true } : {});
    const final = await finish(client, op, o, `Restoring ${vm} to ${name}`, `Restored ${vm} to ${name}`);
    if (final && o.json) printJson(await client.get<Vm>(vmPath(vm)));
  });

  withJson(
    snap.command('delete').alias('rm').description('delete a snapshot').argument('<vm>', 'VM name').argument('<name>', 'snapshot name')
      .option('--no-wait', 'print the operation id and return at once'),
  ).action(async (vm: string, name: string, o: { json?: boolean; wait: boolean }, cmd: Command) => {
    checkVmName(vm);
    const client = clientFor(cmd);
    const op = await client.call<Operation>('DELETE', snapPath(vm, checkSnapshotName(name)));
    const final = await finish(client, op, o, `Deleting snapshot ${name} of ${vm}`, `Deleted snapshot ${name} of ${vm}`);
    if (final && o.json) printJson({ vm, name, deleted: true, operation: final.id });
  });

  withJson(
    program.command('copy')
      .alias('cp')
      .description('copy a stopped VM, or a snapshot of any VM, into a new stopped VM with disks of its own')
      .argument('<source>', 'VM or VM/SNAPSHOT')
      .argument('<name>', 'name of the new VM')
      .option('--no-wait', 'print the operation id and return at once'),
  ).action(async (source: string, name: string, o: { json?: boolean; wait: boolean }, cmd: Command) => {
    const src = parseCopySource(source);
    const body: VmCopyRequest = { name: checkVmName(name) };
    if (src.snapshot !== undefined) body.snapshot = src.snapshot;
    const client = clientFor(cmd);
    const op = await client.call<Operation>('POST', vmPath(src.vm, '/copy'), body);
    const final = await finish(client, op, o, `Copying ${source} to ${name}`, `Copied ${source} to ${name} (stopped)`);
    if (final && o.json) printJson(await client.get<Vm>(vmPath(name)));
    else if (final) note(`Start it with: hangar start ${name}`);
  });
}
