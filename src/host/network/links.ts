/**
 * Host links (bridges, TAPs) in the daemon's network namespace, through
 * iproute2's `ip` with JSON output. Calls are synchronous: each takes a few
 * milliseconds, and a VM's stop must have removed its TAPs before the same
 * VM can start again (restart).
 *
 * Ownership: every link Hangar makes carries the alias `hangar:<owner>`
 * (owner: a hash of the data directory), and Hangar changes or removes only
 * links that carry its own alias, so it never touches what it does not own.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { HangarError } from '../../common/errors.js';
import { parseCidr, type Subnet } from './addressing.js';

export interface LinkInfo {
  name: string;
  kind: string | null;
  up: boolean;
  master: string | null;
  alias: string | null;
  mtu: number;
}

interface IpLink {
  ifname: string;
  flags?: string[];
  master?: string;
  ifalias?: string;
  mtu?: number;
  linkinfo?: { info_kind?: string };
}

/** The alias that marks links of the daemon that owns `dataDir`. */
export function ownerAlias(dataDir: string): string {
  return `hangar:${crypto.createHash('sha256').update(dataDir).digest('hex').slice(0, 12)}`;
}

/** A locally administered unicast MAC derived from the bridge's name. */
export function bridgeMac(name: string): string {
  const h = crypto.createHash('sha256').update(`bridge/${name}`).digest();
  return [0x0a, 0x68, 0x62, h[0]!, h[1]!, h[2]!].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

function ip(args: string[]): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new HangarError('UNAVAILABLE', `ip ${args.join(' ')}: ${(err.stderr || err.message).trim()}`);
  }
}

function toInfo(l: IpLink): LinkInfo {
  return {
    name: l.ifname,
    kind: l.linkinfo?.info_kind ?? null,
    up: (l.flags ?? []).includes('UP'),
    master: l.master ?? null,
    alias: l.ifalias ?? null,
    mtu: l.mtu ?? 1500,
  };
}

export function listLinks(): LinkInfo[] {
  return (JSON.parse(ip(['-j', '-d', 'link', 'show'])) as IpLink[]).map(toInfo);
}

export function getLink(name: string): LinkInfo | null {
  return listLinks().find((l) => l.name === name) ?? null;
}

/** Creates a bridge marked as ours, with the address given, and brings it up. Idempotent for our own; true when it was created. */
export function ensureBridge(name: string, alias: string, address: string | null): boolean {
  let link = getLink(name);
  if (link && link.alias !== alias) throw new HangarError('ALREADY_EXISTS', `host link ${name} exists and is not Hangar's`, { link: name });
  const created = !link;
  if (!link) {
    // A fixed MAC: otherwise a bridge takes the lowest of its ports' and changes it as TAPs come and go,
    // and guests' ARP caches would point at an address that no longer answers.
    ip(['link', 'add', 'name', name, 'address', bridgeMac(name), 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    ip(['link', 'set', 'dev', name, 'alias', alias]);
    link = getLink(name);
  }
  if (address) {
    const have = addressesOf(name);
    for (const a of have) if (a !== address) ip(['addr', 'del', a, 'dev', name]);
    if (!have.includes(address)) ip(['addr', 'add', address, 'dev', name]);
  }
  if (!link?.up) ip(['link', 'set', 'dev', name, 'up']);
  return created;
}

/** IPv4 addresses of a link as "a.b.c.d/p". */
export function addressesOf(name: string): string[] {
  const out = JSON.parse(ip(['-j', '-4', 'addr', 'show', 'dev', name])) as Array<{ addr_info?: Array<{ local: string; prefixlen: number }> }>;
  return out.flatMap((l) => (l.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`));
}

/**
 * A persistent TAP marked as ours, enslaved to `master` and up. The engine
 * opens it by name when the VM starts (the daemon is root; the VM process
 * is not, and inherits the descriptor). A TAP of ours that exists already
 * is reused (a VM that runs keeps its TAP across a daemon restart).
 */
export function ensureTap(name: string, alias: string, master: string): void {
  let link = getLink(name);
  if (link && link.alias !== alias) throw new HangarError('ALREADY_EXISTS', `host link ${name} exists and is not Hangar's`, { link: name });
  if (!link) {
    ip(['tuntap', 'add', 'dev', name, 'mode', 'tap', 'vnet_hdr']);
    try {
      ip(['link', 'set', 'dev', name, 'alias', alias]);
    } catch (e) {
      deleteLinkQuietly(name);
      throw e;
    }
    link = getLink(name);
  }
  const bridge = getLink(master);
  if (bridge && link && link.mtu !== bridge.mtu) ip(['link', 'set', 'dev', name, 'mtu', String(bridge.mtu)]);
  if (link?.master !== master) ip(['link', 'set', 'dev', name, 'master', master]);
  if (!link?.up) ip(['link', 'set', 'dev', name, 'up']);
}

/** Re-attaches an existing TAP of ours to its bridge (after the bridge was recreated); false when it does not exist. */
export function reattachTap(name: string, alias: string, master: string): boolean {
  const link = getLink(name);
  if (!link || link.alias !== alias) return false;
  if (link.master !== master) ip(['link', 'set', 'dev', name, 'master', master]);
  if (!link.up) ip(['link', 'set', 'dev', name, 'up']);
  return true;
}

/** Removes a link if it exists and carries our alias; true when something was removed. */
export function deleteOwnLink(name: string, alias: string): boolean {
  const link = getLink(name);
  if (!link || link.alias !== alias) return false;
  ip(['link', 'del', 'dev', name]);
  return true;
}

function deleteLinkQuietly(name: string): void {
  try { ip(['link', 'del', 'dev', name]); } catch { /* already gone */ }
}

/** Every IPv4 subnet the namespace uses: addresses of its links and routes of all tables. */
export function usedSubnets(): Subnet[] {
  const found: Subnet[] = [];
  const add = (addr: string, prefix: number): void => {
    const ipn = parseCidr(`${addr}/32`);
    if (!ipn) return;
    const m = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
    found.push({ base: (ipn.base & m) >>> 0, prefix });
  };
  const addrs = JSON.parse(ip(['-j', '-4', 'addr', 'show'])) as Array<{ addr_info?: Array<{ local: string; prefixlen: number }> }>;
  for (const l of addrs) for (const a of l.addr_info ?? []) add(a.local, a.prefixlen);
  const routes = JSON.parse(ip(['-j', '-4', 'route', 'show', 'table', 'all'])) as Array<{ dst?: string; type?: string }>;
  for (const r of routes) {
    if (!r.dst || r.dst === 'default') continue;
    const [a, p] = r.dst.split('/');
    add(a!, p === undefined ? 32 : Number(p));
  }
  return found;
}

/**
 * Whether IPv6 works in this namespace: the kernel has it (/proc/sys/net/ipv6 exists, not booted
 * with ipv6.disable=1) and `net.ipv6.conf.all.disable_ipv6` is 0. Null when it does; else why not.
 */
export function ipv6Unavailable(): string | null {
  try {
    const v = fs.readFileSync('/proc/sys/net/ipv6/conf/all/disable_ipv6', 'utf8').trim();
    return v === '0' ? null : 'IPv6 is disabled on this host (sysctl net.ipv6.conf.all.disable_ipv6=1)';
  } catch {
    return 'this kernel has no IPv6 (booted with ipv6.disable=1, or built without it)';
  }
}

/**
 * Gives our bridge its IPv6 gateway address (`PREFIX::1/64`, no duplicate address detection: the
 * prefix is the network's own) or, with null, removes every global IPv6 address of ours from it.
 * The bridge's own sysctl must allow IPv6 (it inherits `default.disable_ipv6`).
 */
export function setBridgeIpv6(name: string, address: string | null): void {
  const sys = `/proc/sys/net/ipv6/conf/${name}/disable_ipv6`;
  const have = (JSON.parse(ip(['-j', '-6', 'addr', 'show', 'dev', name, 'scope', 'global'])) as Array<{ addr_info?: Array<{ local: string; prefixlen: number }> }>)
    .flatMap((l) => (l.addr_info ?? []).filter((a) => a.local !== undefined).map((a) => `${a.local}/${a.prefixlen}`));
  // (`ip -j` lists addresses a filter left out as empty objects: only those with an address count.)
  for (const a of have) if (a !== address) ip(['addr', 'del', a, 'dev', name]);
  if (address === null) return;
  try {
    if (fs.readFileSync(sys, 'utf8').trim() !== '0') fs.writeFileSync(sys, '0\n');
  } catch (e) {
    throw new HangarError('UNAVAILABLE', `cannot turn IPv6 on for ${name}: ${(e as Error).message}`);
  }
  if (!have.includes(address)) ip(['addr', 'add', address, 'dev', name, 'nodad']);
}

/**
 * NAT networks with IPv6 route it between the bridge and the uplink: IPv6 forwarding on, in this
 * namespace. A Linux host that forwards ignores router advertisements on interfaces with
 * accept_ra=1, so an interface whose default route came from one (the host's own SLAAC uplink)
 * gets accept_ra=2 first and keeps its route. Returns the interfaces changed so.
 */
export function enableIpv6Forwarding(): string[] {
  const f = '/proc/sys/net/ipv6/conf/all/forwarding';
  const kept: string[] = [];
  try {
    if (fs.readFileSync(f, 'utf8').trim() === '1') return kept;
    const routes = JSON.parse(ip(['-j', '-6', 'route', 'show', 'default', 'proto', 'ra'])) as Array<{ dev?: string; nexthops?: Array<{ dev?: string }> }>;
    const devs = new Set(routes.flatMap((r) => [r.dev, ...(r.nexthops ?? []).map((n) => n.dev)]).filter((d): d is string => typeof d === 'string'));
    for (const dev of devs) {
      const ra = `/proc/sys/net/ipv6/conf/${dev}/accept_ra`;
      if (fs.readFileSync(ra, 'utf8').trim() === '1') {
        fs.writeFileSync(ra, '2\n');
        kept.push(dev);
      }
    }
    fs.writeFileSync(f, '1\n');
  } catch (e) {
    throw new HangarError('UNAVAILABLE', `cannot turn on IPv6 forwarding: ${(e as Error).message}`);
  }
  return kept;
}

/** The global IPv6 addresses the host has seen on a bridge (its neighbour table), by MAC. */
export function ipv6Neighbours(bridge: string): Map<string, string[]> {
  const out = JSON.parse(ip(['-j', '-6', 'neigh', 'show', 'dev', bridge])) as Array<{ dst: string; lladdr?: string; state?: string[] }>;
  const byMac = new Map<string, string[]>();
  for (const n of out) {
    if (!n.lladdr || n.dst.startsWith('fe80:') || (n.state ?? []).includes('FAILED')) continue;
    const m = n.lladdr.toLowerCase();
    byMac.set(m, [...new Set([...(byMac.get(m) ?? []), n.dst])].sort());
  }
  return byMac;
}

/** Port forwards published on 127.0.0.1 are routed out of this bridge: loopback addresses may be (the firewall stops VMs using it). */
export function enableRouteLocalnet(bridge: string): void {
  const f = `/proc/sys/net/ipv4/conf/${bridge}/route_localnet`;
  try {
    if (fs.readFileSync(f, 'utf8').trim() !== '1') fs.writeFileSync(f, '1\n');
  } catch (e) {
    throw new HangarError('UNAVAILABLE', `cannot set route_localnet on ${bridge}: ${(e as Error).message}`);
  }
}

/** NAT networks route between the bridge and the uplink: IPv4 forwarding on, in this namespace. */
export function enableIpv4Forwarding(): void {
  const f = '/proc/sys/net/ipv4/ip_forward';
  try {
    if (fs.readFileSync(f, 'utf8').trim() !== '1') fs.writeFileSync(f, '1\n');
  } catch (e) {
    throw new HangarError('UNAVAILABLE', `cannot turn on IPv4 forwarding: ${(e as Error).message}`);
  }
}
