/**
 * One dnsmasq per nat or isolated network: DHCP and DNS on that network's
 * bridge only. Its files live in <dataDir>/networks/<name>/:
 *
 *   dnsmasq.conf   the whole configuration, static reservations included
 *   dnsmasq.pid    written by dnsmasq
 *   leases         dnsmasq's lease database (read for `hangar list`)
 *   dnsmasq.log    its own log (start-up, errors; routine DHCP is quiet)
 *
 * dnsmasq reads the configuration as root before it drops to `nobody`, so
 * reservations are written into it (a dhcp-hostsfile would be re-read as
 * `nobody`, who cannot enter the private data directory) and a change of
 * reservations restarts it. The process is dnsmasq's own daemon, not a
 * child of hangard: it outlives a daemon crash, so VMs keep DHCP and DNS.
 * It is recognised by its pid file and its command line naming this conf file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { HangarError } from '../../common/errors.js';
import { dhcpRange, formatIpv4, gatewayOf, subnetSize, type Subnet } from './addressing.js';
import { formatIpv6, gateway6, type Prefix64 } from './addressing6.js';

export const DNS_DOMAIN = 'hangar';
const LEASE_TIME = '1h';

export interface DhcpReservation {
  mac: string;
  /** Host name the lease and DNS give it (the VM's name). */
  name?: string;
  ipv4?: string;
}

export interface DnsmasqConfigInput {
  dir: string;
  bridge: string;
  subnet: Subnet;
  /** nat networks hand out a default route; isolated ones do not. */
  routed: boolean;
  reservations: DhcpReservation[];
  /** The network's IPv6 /64 when IPv6 is on (the host has it and the network has a prefix). */
  ipv6?: Prefix64;
}

export interface DnsmasqFiles {
  conf: string;
  pid: string;
  leases: string;
  log: string;
}

export function dnsmasqFiles(dir: string): DnsmasqFiles {
  return {
    conf: path.join(dir, 'dnsmasq.conf'),
    pid: path.join(dir, 'dnsmasq.pid'),
    leases: path.join(dir, 'leases'),
    log: path.join(dir, 'dnsmasq.log'),
  };
}

function netmask(prefix: number): string {
  return formatIpv4(prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);
}

/** The configuration text (pure, so it can be unit-tested). */
export function renderDnsmasqConfig(c: DnsmasqConfigInput): string {
  const f = dnsmasqFiles(c.dir);
  const gw = formatIpv4(gatewayOf(c.subnet));
  const range = dhcpRange(c.subnet);
  const lines = [
    '# Written by hangard; changes are overwritten.',
    `interface=${c.bridge}`,
    // Only this bridge: several networks' dnsmasqs share the host, none answers on another's link.
    'bind-dynamic',
    'except-interface=lo',
    `listen-address=${gw}`,
    `pid-file=${f.pid}`,
    `dhcp-leasefile=${f.leases}`,
    `log-facility=${f.log}`,
    'quiet-dhcp',
    // The host's /etc/hosts is not the VMs' business.
    'no-hosts',
    `domain=${DNS_DOMAIN}`,
    `local=/${DNS_DOMAIN}/`,
    'expand-hosts',
    'domain-needed',
    'bogus-priv',
    'strict-order',
    `dhcp-range=${formatIpv4(range.first)},${formatIpv4(range.last)},${netmask(c.subnet.prefix)},${LEASE_TIME}`,
    'dhcp-authoritative',
    // No ping of an address before offering it: that wait (up to 3 s) is what a guest's first DHCP would take.
    'no-ping',
    `dhcp-lease-max=${subnetSize(c.subnet)}`,
    `dhcp-option=option:dns-server,${gw}`,
  ];
  // An isolated network has no way out: no router option, no upstream DNS.
  if (c.routed) lines.push(`dhcp-option=option:router,${gw}`);
  else lines.push('dhcp-option=option:router', 'no-resolv');
  if (c.ipv6) {
    // Router advertisements for SLAAC (guests derive their addresses from their MACs, which the
    // anti-spoofing rules count on), DNS by stateless DHCPv6; ra-names gives dual-stack guests AAAA
    // names: dnsmasq pings the SLAAC address a DHCPv4 client's MAC gives and names it when it answers.
    const gw6 = gateway6(c.ipv6);
    lines.push(
      `listen-address=${gw6}`,
      'enable-ra',
      `dhcp-range=${formatIpv6([...c.ipv6.head, 0, 0, 0, 0])},ra-stateless,ra-names,64,${LEASE_TIME}`,
      `dhcp-option=option6:dns-server,[${gw6}]`,
    );
    // An isolated network's host is no router: advertisements with a router lifetime of 0 (prefix, no default route).
    if (!c.routed) lines.push(`ra-param=${c.bridge},60,0`);
  }
  for (const r of c.reservations) {
    const parts = [r.mac.toLowerCase(), ...(r.ipv4 ? [r.ipv4] : []), ...(r.name ? [r.name] : [])];
    lines.push(`dhcp-host=${parts.join(',')}`);
  }
  return lines.join('\n') + '\n';
}

/** The pid of the dnsmasq serving this conf file, or null (pid file checked against /proc/<pid>/cmdline). */
export function findDnsmasq(files: DnsmasqFiles): number | null {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(files.pid, 'utf8').trim());
  } catch {
    return null;
  }
  if (!Number.isInteger(pid) || pid <= 1) return null;
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv[0]?.endsWith('dnsmasq') && argv.includes(`--conf-file=${files.conf}`) ? pid : null;
  } catch {
    return null;
  }
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 10_000 }, (err, _stdout, stderr) => {
      if (err) reject(new HangarError('UNAVAILABLE', `${cmd} failed: ${(stderr || err.message).trim()}`));
      else resolve();
    });
  });
}

/** The dnsmasq binary (Debian's dnsmasq-base). */
export function dnsmasqBinary(): string {
  for (const p of ['/usr/sbin/dnsmasq', '/usr/bin/dnsmasq', '/sbin/dnsmasq']) if (fs.existsSync(p)) return p;
  throw new HangarError('UNAVAILABLE', 'dnsmasq is not installed (Debian package dnsmasq-base): networks with DHCP need it');
}

/**
 * Starts dnsmasq on a written conf file; resolves once it has daemonized (its pid file exists).
 * A bind refused with "Address already in use" is retried for a moment: a dnsmasq that
 * served the same address may still be tearing down its sockets.
 */
export async function startDnsmasq(files: DnsmasqFiles): Promise<number> {
  for (const f of [files.pid]) fs.rmSync(f, { force: true });
  // The lease file must exist; dnsmasq (root at this point) opens and keeps it.
  fs.closeSync(fs.openSync(files.leases, 'a', 0o644));
  // dnsmasq forks into the background itself and its first process exits once it is set up,
  // with a non-zero status and the reason on stderr when it cannot start.
  for (let attempt = 0; ; attempt++) {
    try {
      await run(dnsmasqBinary(), [`--conf-file=${files.conf}`]);
      break;
    } catch (e) {
      if (attempt >= 20 || !(e instanceof HangarError) || !e.message.includes('Address already in use')) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  for (let i = 0; i < 100; i++) {
    const pid = findDnsmasq(files);
    if (pid !== null) return pid;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new HangarError('UNAVAILABLE', `dnsmasq started but wrote no pid file (${files.pid})`);
}

/** The start time (clock ticks since boot) and state letter of a process, or null once it no longer exists. */
function procStat(pid: number): { start: string; state: string } | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: rest[0]!, start: rest[19]! };
  } catch {
    return null;
  }
}

/**
 * Whether the process that had this start time still holds its resources. The kernel drops
 * a process's memory (so /proc/<pid>/cmdline reads empty) before it closes its files, so an
 * empty command line does not mean its sockets are gone; a zombie (or no process) does.
 */
export function processHoldsResources(pid: number, start: string): boolean {
  const s = procStat(pid);
  return s !== null && s.start === start && s.state !== 'Z' && s.state !== 'X';
}

/** Stops our dnsmasq for these files, if one runs; waits until the process is gone (its sockets with it). */
export async function stopDnsmasq(files: DnsmasqFiles): Promise<boolean> {
  const pid = findDnsmasq(files);
  if (pid === null) return false;
  const start = procStat(pid)?.start;
  if (start === undefined) return false;
  const alive = (): boolean => processHoldsResources(pid, start);
  try { process.kill(pid, 'SIGTERM'); } catch { return false; }
  for (let i = 0; i < 250 && alive(); i++) await new Promise((r) => setTimeout(r, 20));
  if (alive()) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    for (let i = 0; i < 100 && alive(); i++) await new Promise((r) => setTimeout(r, 20));
  }
  // dnsmasq removes its pid file before it exits; one left by a killed dnsmasq goes too.
  fs.rmSync(files.pid, { force: true });
  return true;
}

export interface Lease {
  expires: number;
  mac: string;
  ipv4: string;
  hostname: string | null;
}

/** dnsmasq's lease file: one "expiry mac ip hostname clientid" line per lease. */
export function parseLeases(text: string): Lease[] {
  const out: Lease[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4 || !/^\d+$/.test(f[0]!) || f[2]!.includes(':')) continue;
    out.push({ expires: Number(f[0]), mac: f[1]!.toLowerCase(), ipv4: f[2]!, hostname: f[3] === '*' ? null : f[3]! });
  }
  return out;
}

export function readLeases(files: DnsmasqFiles): Lease[] {
  try {
    return parseLeases(fs.readFileSync(files.leases, 'utf8'));
  } catch {
    return [];
  }
}
