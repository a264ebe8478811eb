/**
 * `hangar network create|list|show|edit|delete` and `hangar nic list|add|remove`:
 * virtual networks and the NICs VMs have on them (docs/networking.md).
 */
import { Option, type Command } from 'commander';
import { HangarError } from '../../common/errors.js';
import { isMac } from '../../api/names.js';
import type { Network, NetworkCreateRequest, NetworkUpdateRequest, PortForward, PortForwardRequest, VmNic, VmNicRequest, VmNicState } from '../../host/api/schemas.js';
import { NETWORK_NAME_RULE, isNetworkName } from '../../host/network/schemas.js';
import { checkVmName, clientFor, formatFor, out, printJson, vmPath, withJson } from '../context.js';
import { formatTime, renderKeyValues, renderRows } from '../output.js';

export function checkNetworkName(name: string): string {
  if (!isNetworkName(name)) throw new HangarError('INVALID_ARGUMENT', `"${name}" is not a valid network name (${NETWORK_NAME_RULE})`);
  return name;
}

const netPath = (name: string): string => `/1.0/networks/${encodeURIComponent(name)}`;

export const NETWORK_HEADERS = ['NAME', 'KIND', 'SUBNET', 'BRIDGE', 'DHCP', 'USED BY'];

export function networkRow(n: Network): string[] {
  return [
    n.name,
    n.kind,
    n.subnet ?? '-',
    `${n.bridge}${n.status.bridge ? '' : ' (down)'}`,
    n.kind === 'bridged' ? '-' : n.status.dnsmasqPid !== null ? 'up' : 'down',
    n.usedBy.join(',') || '-',
  ];
}

export function renderNetwork(n: Network): string {
  return renderKeyValues({
    name: n.name,
    kind: n.kind,
    description: n.description || null,
    subnet: n.subnet,
    gateway: n.gateway,
    ipv6: n.ipv6 === null ? (n.kind === 'bridged' ? null : 'none (IPv4 only)') : `${n.ipv6}, gateway ${n.gateway6}${n.status.ipv6Unavailable ? ` (not in use: ${n.status.ipv6Unavailable})` : ''}`,
    bridge: n.bridge,
    created: formatTime(n.createdAt),
    'used by': n.usedBy.join(', ') || null,
    status: { bridge: n.status.bridge ? 'up' : 'missing', dnsmasq: n.kind === 'bridged' ? 'n/a' : n.status.dnsmasqPid !== null ? `pid ${n.status.dnsmasqPid}` : 'not running' },
  });
}

export const FORWARD_HEADERS = ['ID', 'VM', 'PROTO', 'HOST', 'GUEST'];

export function forwardRow(f: PortForward): string[] {
  return [String(f.id), f.vm, f.proto, `${f.address}:${f.hostPort}`, `${f.guestAddress ?? '?'}:${f.guestPort}`];
}

/** "8080:80" → ports; a bad one is INVALID_ARGUMENT before any request. */
export function parsePorts(s: string): { hostPort: number; guestPort: number } {
  const m = /^(\d{1,5}):(\d{1,5})$/.exec(s);
  const ok = (n: number): boolean => n >= 1 && n <= 65535;
  if (!m || !ok(Number(m[1])) || !ok(Number(m[2]))) throw new HangarError('INVALID_ARGUMENT', `ports must be HOSTPORT:GUESTPORT with ports 1-65535, got "${s}"`);
  return { hostPort: Number(m[1]), guestPort: Number(m[2]) };
}

export const NIC_HEADERS = ['NAME', 'NETWORK', 'MAC', 'TAP', 'IPV4', 'IPV6'];

export function nicRow(n: VmNicState): string[] {
  return [n.name, n.network, n.mac, n.tap || '-', n.ipv4 ?? '-', n.ipv6?.join(',') || '-'];
}

/** `--network` on `launch`: a name, or `none`; repeated for more NICs. NAME,rate=R (or ingress=R, egress=R) limits the NIC. */
export function collectNetwork(value: string, previous: string[] | undefined): string[] {
  if (value !== 'none') networkArgument(value);
  return [...(previous ?? []), value];
}

/** NAME[,ingress=RATE][,egress=RATE][,rate=RATE] (rate: both directions) as a NIC request. */
export function networkArgument(value: string): VmNicRequest {
  const [name, ...opts] = value.split(',');
  const nic: VmNicRequest = { network: checkNetworkName(name!) };
  for (const o of opts) {
    const m = /^(ingress|egress|rate)=(.+)$/.exec(o);
    if (!m) throw new HangarError('INVALID_ARGUMENT', `--network ${value}: "${o}" is not ingress=RATE, egress=RATE or rate=RATE`);
    if (m[1] === 'rate' || m[1] === 'ingress') nic.ingress = m[2]!;
    if (m[1] === 'rate' || m[1] === 'egress') nic.egress = m[2]!;
  }
  return nic;
}

export function registerNetworkCommands(program: Command): void {
  const network = program.command('network').description('virtual networks VMs join (nat, isolated, bridged)');

  withJson(
    network
      .command('create')
      .description('create a network: its bridge, DHCP/DNS server and firewall rules are set up at once')
      .argument('<name>', 'network name: lower-case letters, digits and dashes')
      .addOption(new Option('--kind <kind>', 'nat: outbound NAT; isolated: VMs and host only; bridged: join an existing host bridge').choices(['nat', 'isolated', 'bridged']).default('nat'))
      .option('--subnet <cidr>', 'IPv4 subnet, e.g. 10.77.5.0/24 (default: a free private /24)')
      .option('--ipv6 <prefix>', 'IPv6 subnet: ADDR/64, auto (a generated unique local /64; the default) or none')
      .option('--parent <bridge>', 'bridged: the existing host bridge NICs join')
      .option('--description <text>', 'one line shown by `hangar network show`'),
  ).action(async (name: string, o: { kind: NetworkCreateRequest['kind']; subnet?: string; ipv6?: string; parent?: string; description?: string; json?: boolean }, cmd: Command) => {
    checkNetworkName(name);
    const body: NetworkCreateRequest = { name, ...(o.kind ? { kind: o.kind } : {}) };
    if (o.subnet !== undefined) body.subnet = o.subnet;
    if (o.ipv6 !== undefined) body.ipv6 = o.ipv6;
    if (o.parent !== undefined) body.parent = o.parent;
    if (o.description !== undefined) body.description = o.description;
    const n = await clientFor(cmd).call<Network>('POST', '/1.0/networks', body);
    if (o.json) return printJson(n);
    const v6 = n.ipv6 ? (n.status.ipv6Unavailable ? `, IPv4 only: ${n.status.ipv6Unavailable}` : `, ${n.ipv6}`) : '';
    out(`Created network ${n.name} (${n.kind}${n.subnet ? `, ${n.subnet}, gateway ${n.gateway}${v6}` : `, on ${n.bridge}`})\n`);
  });

  withJson(network.command('list').alias('ls').description('list networks').option('--format <format>', 'table, json or csv', 'table')).action(
    async (_o: unknown, cmd: Command) => {
      const format = formatFor(cmd);
      const nets = await clientFor(cmd).get<Network[]>('/1.0/networks');
      if (format === 'json') return printJson(nets);
      out(renderRows(format, NETWORK_HEADERS, nets.map(networkRow)));
    },
  );

  withJson(network.command('show').description('show a network').argument('<name>', 'network name')).action(
    async (name: string, o: { json?: boolean }, cmd: Command) => {
      const n = await clientFor(cmd).get<Network>(netPath(checkNetworkName(name)));
      if (o.json) printJson(n);
      else out(renderNetwork(n));
    },
  );

  withJson(
    network
      .command('edit')
      .description("change a network's description, or its subnets while no NIC uses it")
      .argument('<name>', 'network name')
      .option('--description <text>', 'new description')
      .option('--subnet <cidr>', 'new IPv4 subnet')
      .option('--ipv6 <prefix>', 'new IPv6 subnet: ADDR/64, auto or none'),
  ).action(async (name: string, o: { description?: string; subnet?: string; ipv6?: string; json?: boolean }, cmd: Command) => {
    checkNetworkName(name);
    const body: NetworkUpdateRequest = {};
    if (o.description !== undefined) body.description = o.description;
    if (o.subnet !== undefined) body.subnet = o.subnet;
    if (o.ipv6 !== undefined) body.ipv6 = o.ipv6;
    if (Object.keys(body).length === 0) throw new HangarError('INVALID_ARGUMENT', 'nothing to change: give --description, --subnet or --ipv6');
    const n = await clientFor(cmd).call<Network>('PATCH', netPath(name), body);
    if (o.json) return printJson(n);
    out(`Changed network ${n.name}\n`);
  });

  withJson(network.command('delete').alias('rm').description('delete a network (refused while a VM has a NIC on it)').argument('<name>', 'network name')).action(
    async (name: string, o: { json?: boolean }, cmd: Command) => {
      await clientFor(cmd).call('DELETE', netPath(checkNetworkName(name)));
      if (o.json) return printJson({ name, deleted: true });
      out(`Deleted network ${name}\n`);
    },
  );

  const forward = program.command('forward').description("publish a VM's ports on host addresses (nat networks)");

  withJson(
    forward
      .command('add')
      .description('forward HOSTPORT on the host (every address, loopback included, unless --address) to GUESTPORT of the VM')
      .argument('<vm>', 'VM name')
      .argument('<ports>', 'HOSTPORT:GUESTPORT, e.g. 8080:80')
      .addOption(new Option('--proto <proto>', 'protocol').choices(['tcp', 'udp']).default('tcp'))
      .option('--address <ipv4>', 'host address to publish on, e.g. 127.0.0.1 (default: all)'),
  ).action(async (vm: string, ports: string, o: { proto: 'tcp' | 'udp'; address?: string; json?: boolean }, cmd: Command) => {
    checkVmName(vm);
    const body: PortForwardRequest = { ...parsePorts(ports), proto: o.proto };
    if (o.address !== undefined) body.address = o.address;
    const f = await clientFor(cmd).call<PortForward>('POST', vmPath(vm, '/forwards'), body);
    if (o.json) return printJson(f);
    out(`Forwarding ${f.proto} ${f.address}:${f.hostPort} to ${vm} (${f.guestAddress ?? '?'}):${f.guestPort}\n`);
  });

  withJson(forward.command('list').alias('ls').description('list port forwards (of one VM, or all)').argument('[vm]', 'VM name').option('--format <format>', 'table, json or csv', 'table')).action(
    async (vm: string | undefined, _o: unknown, cmd: Command) => {
      const format = formatFor(cmd);
      const list = await clientFor(cmd).get<PortForward[]>(vm !== undefined ? vmPath(checkVmName(vm), '/forwards') : '/1.0/forwards');
      if (format === 'json') return printJson(list);
      out(renderRows(format, FORWARD_HEADERS, list.map(forwardRow)));
    },
  );

  withJson(forward.command('remove').alias('rm').description('remove a port forward').argument('<vm>', 'VM name').argument('<id>', 'forward id (see `hangar forward list`)')).action(
    async (vm: string, id: string, o: { json?: boolean }, cmd: Command) => {
      if (!/^\d{1,9}$/.test(id)) throw new HangarError('INVALID_ARGUMENT', `forward id must be a number, got "${id}"`);
      await clientFor(cmd).call('DELETE', vmPath(checkVmName(vm), `/forwards/${id}`));
      if (o.json) return printJson({ vm, id: Number(id), removed: true });
      out(`Removed port forward ${id} of ${vm}\n`);
    },
  );

  const nic = program.command('nic').description("a VM's network interfaces");

  withJson(nic.command('list').alias('ls').description("list a VM's NICs with their addresses").argument('<vm>', 'VM name').option('--format <format>', 'table, json or csv', 'table')).action(
    async (vm: string, _o: unknown, cmd: Command) => {
      const format = formatFor(cmd);
      const nics = await clientFor(cmd).get<VmNicState[]>(vmPath(checkVmName(vm), '/nics'));
      if (format === 'json') return printJson(nics);
      out(renderRows(format, NIC_HEADERS, nics.map(nicRow)));
    },
  );

  withJson(
    nic
      .command('add')
      .description('add a NIC; a running QEMU VM gets it plugged in at once')
      .argument('<vm>', 'VM name')
      .argument('<network>', 'network the NIC joins')
      .option('--name <name>', 'NIC name (default: the next free ethN)')
      .option('--mac <mac>', 'MAC address (default: a stable, locally administered one)')
      .option('--ip <ipv4>', 'reserve this address for the NIC (nat and isolated networks)')
      .option('--ingress <rate>', 'limit what the guest receives, e.g. 10mbit (bit, kbit, mbit, gbit)')
      .option('--egress <rate>', 'limit what the guest sends, e.g. 10mbit'),
  ).action(async (vm: string, net: string, o: { name?: string; mac?: string; ip?: string; ingress?: string; egress?: string; json?: boolean }, cmd: Command) => {
    checkVmName(vm);
    const body: VmNicRequest = { network: checkNetworkName(net) };
    if (o.name !== undefined) body.name = o.name;
    if (o.mac !== undefined) {
      if (!isMac(o.mac)) throw new HangarError('INVALID_ARGUMENT', `--mac ${o.mac} is not a MAC address`);
      body.mac = o.mac;
    }
    if (o.ip !== undefined) body.ipv4 = o.ip;
    if (o.ingress !== undefined) body.ingress = o.ingress;
    if (o.egress !== undefined) body.egress = o.egress;
    const n = await clientFor(cmd).call<VmNic>('POST', vmPath(vm, '/nics'), body);
    if (o.json) return printJson(n);
    out(`Added NIC ${n.name} (${n.mac}) on ${n.network} to ${vm}\n`);
  });

  withJson(nic.command('remove').alias('rm').description('remove a NIC; a running QEMU VM has it unplugged first').argument('<vm>', 'VM name').argument('<nic>', 'NIC name, e.g. eth1')).action(
    async (vm: string, name: string, o: { json?: boolean }, cmd: Command) => {
      await clientFor(cmd).call('DELETE', vmPath(checkVmName(vm), `/nics/${encodeURIComponent(name)}`));
      if (o.json) return printJson({ vm, nic: name, removed: true });
      out(`Removed NIC ${name} from ${vm}\n`);
    },
  );
}
