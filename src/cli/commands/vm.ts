/**
 * VM verbs: launch, list, show, start/stop/restart/pause/resume, delete.
 */
import { Option, type Command } from 'commander';
import { formatSize, parseSize } from '../../common/sizes.js';
import { HangarError } from '../../common/errors.js';
import fs from 'node:fs';
import path from 'node:path';
import { ENGINE_NAMES, type BootMode, type EngineName } from '../../api/engine.js';

const BOOT_MODES: readonly BootMode[] = ['kernel', 'bios', 'uefi'];
import type { Operation, Vm, VmCreateRequest, VmStateRequest } from '../../host/api/schemas.js';
import type { ApiClient } from '../client.js';
import {
  checkVmName, clientFor, followOperation, formatFor, note, out, parseIntOption, printJson, vmPath, withJson,
} from '../context.js';
import { cloudInitFields, type CloudInitOptions } from '../cloud-init-files.js';
import { launchDisks } from './disk.js';
import { collectNetwork, networkArgument } from './network.js';
import { formatDuration, formatSizeApprox, formatTime, renderKeyValues, renderRows } from '../output.js';

export const LIST_HEADERS = ['NAME', 'STATE', 'ENGINE', 'ACCEL', 'CPUS', 'MEMORY', 'UPTIME', 'IPV4'];

export function vmRow(vm: Vm): string[] {
  return [
    vm.name,
    vm.state,
    vm.spec.engine,
    vm.runtime.accel ?? '-',
    String(vm.spec.cpus),
    formatSize(vm.spec.memoryBytes),
    vm.state === 'running' || vm.state === 'paused' ? formatDuration(vm.runtime.uptimeSeconds) : '-',
    // The first address DHCP leased to one of its NICs (`hangar show` has them all).
    (vm.state === 'running' || vm.state === 'paused' ? vm.runtime.nics?.find((n) => n.ipv4)?.ipv4 : undefined) ?? '-',
  ];
}

/** `hangar show`'s cloud-init line: how many keys, whose user-data, whether a network config. */
function cloudInitSummary(c: NonNullable<Vm['spec']['cloudInit']>): string {
  const keys = c.sshKeys.map((k) => k.split(' ').slice(2).join(' ') || k.split(' ')[0]!);
  return [
    `${c.sshKeys.length} SSH key${c.sshKeys.length === 1 ? '' : 's'}${keys.length ? ` (${keys.join(', ')})` : ''}`,
    c.userData !== undefined ? `own user-data (${c.userData.split('\n', 1)[0]})` : 'default user-data',
    ...(c.networkConfig !== undefined ? ['network-config'] : []),
  ].join('; ');
}

/** The readable block of `hangar show`. */
export function renderVm(vm: Vm): string {
  const r = vm.runtime;
  const runtime: Record<string, unknown> = {
    pid: r.pid,
    accel: r.accel,
    started: formatTime(r.startedAt),
    uptime: formatDuration(r.uptimeSeconds),
  };
  if (r.rssBytes !== undefined) runtime.rss = formatSizeApprox(r.rssBytes);
  if (r.cpuSeconds !== undefined) runtime['cpu time'] = `${r.cpuSeconds.toFixed(2)}s`;
  runtime['last exit'] = r.lastExit ? `${r.lastExit.reason}${r.lastExit.detail ? ` (${r.lastExit.detail})` : ''} at ${formatTime(r.lastExit.at)}` : null;
  return renderKeyValues({
    name: vm.name,
    id: vm.id,
    state: vm.state,
    created: formatTime(vm.createdAt),
    spec: {
      image: vm.spec.image,
      engine: vm.spec.engine,
      cpus: vm.spec.cpus,
      memory: formatSize(vm.spec.memoryBytes),
      cmdline: vm.spec.cmdline,
      ...(vm.spec.cloudInit ? { 'cloud-init': cloudInitSummary(vm.spec.cloudInit) } : {}),
      disks: (vm.spec.disks ?? []).length ? vm.spec.disks.map((d) => `${d.name}: ${d.volume}${d.readOnly ? ' (ro)' : ''}`).join(', ') : null,
      ...(vm.spec.boot !== undefined ? { boot: vm.spec.boot } : {}),
      ...(vm.spec.iso !== undefined ? { iso: vm.spec.iso } : {}),
    },
    ...(vm.display ? { display: `vnc (hangar vnc ${vm.name})` } : {}),
    runtime,
    ...(r.nics?.length ? { nics: Object.fromEntries(r.nics.map((n) => [n.name, `${n.network} ${n.mac} ${n.tap} ${n.ipv4 ?? '(no lease)'}${n.ipv6?.length ? ` ${n.ipv6.join(' ')}` : ''}`])) } : {}),
  });
}

interface LaunchOpts extends CloudInitOptions {
  cpus?: number;
  memory?: string;
  engine?: EngineName;
  cmdline?: string;
  boot?: BootMode;
  iso?: string;
  disk?: string[];
  network?: string[];
  start: boolean;
  wait: boolean;
  json?: boolean;
}

/**
 * --iso: an absolute path on the daemon's host stays as it is; "pool/volume"
 * (one slash, no leading dot, not a file here) names a storage volume; any
 * other relative path is made absolute from here (meaningful with a local daemon).
 */
export function isoArgument(v: string): string {
  if (v.startsWith('/')) return v;
  if (/^[A-Za-z0-9][^/]*\/[A-Za-z0-9][^/]*$/.test(v) && !fs.existsSync(v)) return v;
  return path.resolve(v);
}

/** Builds the POST /1.0/vms body from the command line, validating what can be checked locally. */
export function launchRequest(image: string, name: string, o: Pick<LaunchOpts, 'cpus' | 'memory' | 'engine' | 'cmdline' | 'start' | 'boot' | 'iso' | 'disk' | 'network'>): VmCreateRequest {
  checkVmName(name);
  if (!image.trim()) throw new HangarError('INVALID_ARGUMENT', 'IMAGE must not be empty');
  const body: VmCreateRequest = { name, image };
  if (o.cpus !== undefined) body.cpus = o.cpus;
  if (o.memory !== undefined) {
    const bytes = parseSize(o.memory, '--memory');
    if (bytes === 0) throw new HangarError('INVALID_ARGUMENT', '--memory must be more than 0');
    body.memory = bytes;
  }
  if (o.engine !== undefined) body.engine = o.engine;
  if (o.cmdline !== undefined) body.cmdline = o.cmdline;
  if (o.boot !== undefined) body.boot = o.boot;
  if (o.iso !== undefined) body.iso = isoArgument(o.iso);
  if (o.network !== undefined) {
    // One --network: the daemon names the NIC; several: one NIC each, in order; `none` alone: no NIC.
    const nics = o.network.filter((n) => n !== 'none').map(networkArgument);
    if (o.network.length > 1 && o.network.includes('none')) throw new HangarError('INVALID_ARGUMENT', '--network none cannot go with other networks');
    if (o.network.length === 1 && (o.network[0] === 'none' || !o.network[0]!.includes(','))) body.network = o.network[0]!;
    else body.nics = nics;
  }
  if (o.start === false) body.start = false;
  if (o.disk?.length) Object.assign(body, launchDisks(o.disk));
  return body;
}

/** After an async request: print the operation id (--no-wait) or follow it to the end. */
async function finishAsync(client: ApiClient, op: Operation, wait: boolean, json: boolean, label: string, done: string): Promise<Operation | null> {
  if (!wait) {
    if (json) printJson(op);
    else out(`${op.id}\n`);
    return null;
  }
  return followOperation(client, op, { label, done: json ? undefined : done, quiet: json });
}

async function printVmJson(client: ApiClient, name: string): Promise<void> {
  printJson(await client.get<Vm>(vmPath(name)));
}

const ACTION_WORDS: Record<VmStateRequest['action'], [string, string]> = {
  start: ['Starting', 'Started'],
  stop: ['Stopping', 'Stopped'],
  restart: ['Restarting', 'Restarted'],
  pause: ['Pausing', 'Paused'],
  resume: ['Resuming', 'Resumed'],
};

export async function changeState(client: ApiClient, name: string, req: VmStateRequest, o: { json?: boolean; wait: boolean }): Promise<void> {
  checkVmName(name);
  const [doing, did] = ACTION_WORDS[req.action];
  const op = await client.call<Operation>('PUT', vmPath(name, '/state'), req);
  const final = await finishAsync(client, op, o.wait, Boolean(o.json), `${doing} ${name}`, `${did} ${name}`);
  if (final && o.json) await printVmJson(client, name);
}

export function registerVmCommands(program: Command): void {
  withJson(
    program
      .command('launch')
      .description('create a VM from an image and start it')
      .argument('<image>', 'image to boot, e.g. tiny (see `hangar image list`)')
      .argument('<name>', 'VM name: lower-case letters, digits and dashes')
      .option('--cpus <n>', 'number of vCPUs (default 1)', parseIntOption('--cpus', 1, 1024))
      .option('--memory <size>', 'guest memory, e.g. 256M or 2G (default chosen by the daemon)')
      .addOption(new Option('--engine <engine>', 'engine that runs the VM').choices([...ENGINE_NAMES]))
      .option('--cmdline <args>', 'extra kernel command-line arguments')
      .option('--ssh-key <file>', 'cloud images: SSH public key file for the default user (repeatable; default ~/.ssh/id_*.pub)', (v: string, all: string[] = []) => [...all, v])
      .option('--user-data <file>', 'cloud images: cloud-init user-data (#cloud-config, #! script or MIME multipart); replaces the default')
      .option('--network-config <file>', 'cloud images: cloud-init network-config (version 1 or 2)')
      .addOption(new Option('--boot <mode>', 'kernel (the image\'s kernel, headless), bios or uefi (firmware boots the ISO or the disk; with a display, see `hangar vnc`)').choices([...BOOT_MODES]))
      .option('--iso <file>', "installer ISO to attach as a CD-ROM and boot first: a file in the daemon's import folder, or a raw volume POOL/VOLUME (implies --boot bios unless given)")
      .option('--disk <disk>', 'SIZE: root disk size; NAME=SIZE: a new volume; NAME=POOL/VOLUME: an existing one (repeatable; see `hangar disk`)', (v: string, prev: string[] = []) => [...prev, v])
      .option('--network <name>', 'network of a NIC (repeat for more NICs; `default` is created on first use; NAME,rate=10mbit limits it, or ingress=/egress=), or none; unset: cloud images join the daemon\'s default network, others get no NIC', collectNetwork)
      .option('--no-start', 'create the VM but leave it stopped')
      .option('--no-wait', 'print the operation id and return at once'),
  ).action(async (image: string, name: string, o: LaunchOpts, cmd: Command) => {
    const body = { ...launchRequest(image, name, o), ...cloudInitFields(o) };
    const client = clientFor(cmd);
    const op = await client.call<Operation>('POST', '/1.0/vms', body);
    const verb = o.start ? 'Launching' : 'Creating';
    const final = await finishAsync(client, op, o.wait, Boolean(o.json), `${verb} ${name} from ${image}`, o.start ? `Launched ${name}` : `Created ${name} (stopped)`);
    if (!final) return;
    if (o.json) await printVmJson(client, name);
    else if (o.start) note(`Reach it with: hangar console ${name}${body.boot === 'bios' || body.boot === 'uefi' || body.iso !== undefined ? ` (serial) or hangar vnc ${name} (display)` : ''}`);
  });

  withJson(
    program
      .command('list')
      .alias('ls')
      .description('list VMs')
      .option('--format <format>', 'table, json or csv', 'table'),
  ).action(async (_o: unknown, cmd: Command) => {
    const format = formatFor(cmd);
    const vms = await clientFor(cmd).get<Vm[]>('/1.0/vms');
    if (format === 'json') return printJson(vms);
    out(renderRows(format, LIST_HEADERS, vms.map(vmRow)));
  });

  withJson(program.command('show').description("show a VM's spec and runtime state").argument('<name>', 'VM name')).action(
    async (name: string, o: { json?: boolean }, cmd: Command) => {
      checkVmName(name);
      const vm = await clientFor(cmd).get<Vm>(vmPath(name));
      if (o.json) printJson(vm);
      else out(renderVm(vm));
    },
  );

  const simple: Array<[VmStateRequest['action'], string]> = [
    ['start', 'start a stopped VM'],
    ['pause', 'pause a running VM (its vCPUs stop; memory stays)'],
    ['resume', 'resume a paused VM'],
  ];
  for (const [action, desc] of simple) {
    withJson(program.command(action).description(desc).argument('<name>', 'VM name').option('--no-wait', 'print the operation id and return at once')).action(
      async (name: string, o: { json?: boolean; wait: boolean }, cmd: Command) => {
        await changeState(clientFor(cmd), name, { action }, o);
      },
    );
  }

  for (const action of ['stop', 'restart'] as const) {
    withJson(
      program
        .command(action)
        .description(action === 'stop' ? 'stop a VM: graceful shutdown, forced after the timeout' : 'restart a VM: stop (graceful, then forced) and start again')
        .argument('<name>', 'VM name')
        .option('-f, --force', 'skip the graceful shutdown and stop at once')
        .option('--timeout <seconds>', 'seconds to wait for the guest to shut down before forcing (default 30)', parseIntOption('--timeout', 0, 3600))
        .option('--no-wait', 'print the operation id and return at once'),
    ).action(async (name: string, o: { json?: boolean; wait: boolean; force?: boolean; timeout?: number }, cmd: Command) => {
      const req: VmStateRequest = { action };
      if (o.force) req.force = true;
      if (o.timeout !== undefined) req.timeout = o.timeout;
      await changeState(clientFor(cmd), name, req, o);
    });
  }

  withJson(
    program
      .command('delete')
      .alias('rm')
      .description('delete a VM and its files (a running VM needs --force)')
      .argument('<name>', 'VM name')
      .option('-f, --force', 'stop the VM first if it is running')
      .option('--no-wait', 'print the operation id and return at once'),
  ).action(async (name: string, o: { json?: boolean; wait: boolean; force?: boolean }, cmd: Command) => {
    checkVmName(name);
    const client = clientFor(cmd);
    const op = await client.call<Operation>('DELETE', vmPath(name, o.force ? '?force=true' : ''));
    const final = await finishAsync(client, op, o.wait, Boolean(o.json), `Deleting ${name}`, `Deleted ${name}`);
    if (final && o.json) printJson({ name, deleted: true, operation: final.id });
  });
}
