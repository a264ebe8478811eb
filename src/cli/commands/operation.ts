/**
 * `hangar operation list|show|wait`: the daemon's long-running operations.
 */
import type { Command } from 'commander';
import { HangarError } from '../../common/errors.js';
import type { Operation } from '../../host/api/schemas.js';
import { clientFor, followOperation, formatFor, out, parseIntOption, printJson, withJson } from '../context.js';
import { formatTime, renderKeyValues, renderRows } from '../output.js';
import { ProgressReporter } from '../progress.js';

export const OPERATION_HEADERS = ['ID', 'STATUS', 'DESCRIPTION', 'PROGRESS', 'VMS', 'UPDATED'];

export function operationRow(op: Operation): string[] {
  return [
    op.id,
    op.status,
    op.description,
    op.status === 'running' ? ProgressReporter.describe(op, '-') : op.error ? `${op.error.code}` : '-',
    op.resources.vms.join(' ') || '-',
    formatTime(op.updatedAt),
  ];
}

export function renderOperation(op: Operation): string {
  const o: Record<string, unknown> = {
    id: op.id,
    description: op.description,
    status: op.status,
    progress: op.progress ? ProgressReporter.describe(op, '-') : null,
    vms: op.resources.vms,
    created: formatTime(op.createdAt),
    updated: formatTime(op.updatedAt),
  };
  if (op.error) o.error = `${op.error.message} (${op.error.code})`;
  if (op.result !== undefined) o.result = typeof op.result === 'object' && op.result !== null ? op.result : String(op.result);
  return renderKeyValues(o);
}

function checkId(id: string): string {
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(id)) throw new HangarError('INVALID_ARGUMENT', `"${id}" is not an operation id`);
  return id;
}

export function registerOperationCommands(program: Command): void {
  const op = program.command('operation').alias('op').description('long-running operations of the daemon');

  withJson(op.command('list').alias('ls').description('list recent operations').option('--format <format>', 'table, json or csv', 'table')).action(
    async (_o: unknown, cmd: Command) => {
      const format = formatFor(cmd);
      const ops = await clientFor(cmd).get<Operation[]>('/1.0/operations');
      if (format === 'json') return printJson(ops);
      out(renderRows(format, OPERATION_HEADERS, ops.map(operationRow)));
    },
  );

  withJson(op.command('show').description('show one operation').argument('<id>', 'operation id')).action(
    async (id: string, o: { json?: boolean }, cmd: Command) => {
      const r = await clientFor(cmd).get<Operation>(`/1.0/operations/${encodeURIComponent(checkId(id))}`);
      if (o.json) printJson(r);
      else out(renderOperation(r));
    },
  );

  withJson(
    op
      .command('wait')
      .description('wait until an operation finishes (exit code follows its result)')
      .argument('<id>', 'operation id')
      .option('--timeout <seconds>', 'give up after this many seconds (exit code 6)', parseIntOption('--timeout', 0)),
  ).action(async (id: string, o: { json?: boolean; timeout?: number }, cmd: Command) => {
    const client = clientFor(cmd);
    const path = `/1.0/operations/${encodeURIComponent(checkId(id))}`;
    const current = await client.get<Operation>(path);
    const wait = o.timeout !== undefined
      ? client.waitOperation(id, undefined, o.timeout)
      : followOperation(client, current, { label: current.description, quiet: Boolean(o.json) });
    const final = await wait;
    if (o.json) printJson(final);
    else out(renderOperation(final));
  });
}
