/**
 * Hangar's firewall: one nftables table, `inet hangar`, rendered whole from
 * the recorded networks and swapped in atomically (`nft -f` of
 * "create-if-missing, delete, define" is one transaction: the old rules
 * hold until the new ones are in). Hangar never lists, flushes or changes
 * any other table; the host's own rules keep working beside ours.
 *
 * What the rules do (docs/networking.md, "Firewalling"):
 * - nat networks: traffic from the subnet to anywhere but Hangar's bridges
 *   is forwarded and masqueraded; only answers (and port forwards) come back in;
 * - isolated networks: nothing is forwarded in or out; VMs reach the host
 *   only for DHCP, DNS and ping of their gateway;
 * - different networks never reach each other: not routed through the
 *   host, nor through the host's address on the other network.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HangarError } from '../../common/errors.js';
import { formatCidr, formatIpv4, gatewayOf, type Subnet } from './addressing.js';
import { nftLimit } from './rates.js';
import { formatPrefix, gateway6, type Prefix64 } from './addressing6.js';

export const NFT_TABLE = 'hangar';

export interface FirewallNetwork {
  kind: 'nat' | 'isolated';
  bridge: string;
  subnet: Subnet;
  /** The network's IPv6 /64, when IPv6 is on for it. */
  ipv6?: Prefix64;
}

/** A published guest port: connections to address:hostPort (0.0.0.0: any local address) go to guest:guestPort. */
export interface FirewallForward {
  proto: 'tcp' | 'udp';
  address: string;
  hostPort: number;
  guestAddress: string;
  guestPort: number;
}

/** A VM's TAP: frames it sends must carry its own MAC and an address it may use; it may not serve DHCP. */
export interface FirewallPort {
  tap: string;
  mac: string;
  /** Source addresses it may use: its reservation, else its network's subnet; absent (bridged networks): not checked. */
  ipv4?: string;
  /**
   * IPv6 source addresses it may use (`::` for duplicate address detection, its
   * link-local and SLAAC addresses); absent (bridged networks): not checked.
   */
  ipv6?: string[];
  /** Rate limits in bits per second: what the guest receives (ingress) and sends (egress). */
  ingressBps?: number;
  egressBps?: number;
}

const q = (s: string): string => `"${s}"`;
const set = (items: string[]): string => (items.length === 1 ? items[0]! : `{ ${items.join(', ')} }`);

/** The `inet hangar` table for these networks and forwards (pure). Null when there is nothing to filter. */
export function renderFirewall(nets: FirewallNetwork[], forwards: FirewallForward[] = []): string | null {
  if (nets.length === 0) return null;
  const bridges = nets.map((n) => q(n.bridge));
  const input: string[] = [];
  const forward: string[] = [];
  const postrouting: string[] = [];
  for (const n of nets) {
    const br = q(n.bridge);
    // Within one network traffic is bridged, not routed; where br_netfilter hands bridged
    // frames to the IP hooks (a Docker host), it shows up here with the bridge on both sides.
    forward.push(`iifname ${br} oifname ${br} accept`);
    const gw = formatIpv4(gatewayOf(n.subnet));
    const others = nets.filter((o) => o !== n).map((o) => formatIpv4(gatewayOf(o.subnet)));
    const others6 = nets.filter((o) => o !== n && o.ipv6).map((o) => gateway6(o.ipv6!));
    // Loopback addresses are routable on the bridge (route_localnet, for forwards published on
    // 127.0.0.1): a VM must not use that to reach the host's own loopback services.
    // Answers to a forward used from loopback come back here with loopback addresses: only those pass.
    input.push(`iifname ${br} ip daddr 127.0.0.0/8 ct direction original drop`, `iifname ${br} ip saddr 127.0.0.0/8 ct direction original drop`);
    // The host's address on another network is not a way into it.
    if (others.length) input.push(`iifname ${br} ip daddr ${set(others)} drop`);
    if (others6.length) input.push(`iifname ${br} ip6 daddr ${set(others6)} drop`);
    if (n.kind === 'isolated') {
      input.push(`iifname ${br} udp dport { 53, 67 } accept`);
      input.push(`iifname ${br} tcp dport 53 ip daddr ${gw} accept`);
      input.push(`iifname ${br} icmp type echo-request ip daddr ${gw} accept`);
      if (n.ipv6) {
        // Neighbour discovery, router solicitations and DHCPv6 (DNS servers) keep IPv6 working on the link.
        input.push(`iifname ${br} icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld2-listener-report } accept`);
        input.push(`iifname ${br} udp dport 547 accept`);
        input.push(`iifname ${br} tcp dport 53 ip6 daddr ${gateway6(n.ipv6)} accept`);
        input.push(`iifname ${br} icmpv6 type echo-request ip6 daddr ${gateway6(n.ipv6)} accept`);
      }
      input.push(`iifname ${br} drop`);
      forward.push(`iifname ${br} drop`, `oifname ${br} drop`);
    }
  }
  // Between two of Hangar's networks nothing is routed.
  forward.push(`iifname ${set(bridges)} oifname ${set(bridges)} drop`);
  for (const n of nets.filter((x) => x.kind === 'nat')) {
    const br = q(n.bridge);
    forward.push(`iifname ${br} ip saddr ${formatCidr(n.subnet)} accept`);
    if (n.ipv6) forward.push(`iifname ${br} ip6 saddr ${formatPrefix(n.ipv6)} accept`);
    forward.push(`iifname ${br} drop`);
    forward.push(`oifname ${br} ct state established,related accept`);
    forward.push(`oifname ${br} ct status dnat accept`);
    forward.push(`oifname ${br} drop`);
    postrouting.push(`ip saddr ${formatCidr(n.subnet)} ip daddr != ${formatCidr(n.subnet)} oifname != ${set(bridges)} masquerade`);
    // A forward used from the host's loopback leaves with 127.0.0.1 as source: the guest could not answer that.
    postrouting.push(`oifname ${br} ip saddr 127.0.0.0/8 masquerade`);
    // IPv6 too leaves masqueraded: a unique local prefix is not routed on the internet.
    if (n.ipv6) postrouting.push(`ip6 saddr ${formatPrefix(n.ipv6)} ip6 daddr != ${formatPrefix(n.ipv6)} oifname != ${set(bridges)} masquerade`);
  }
  // Published ports: from outside (not from Hangar's own bridges: networks stay apart) and from the host itself.
  const dnat: string[] = [];
  for (const f of forwards) {
    const dst = f.address === '0.0.0.0' ? 'fib daddr type local' : `ip daddr ${f.address}`;
    dnat.push(`${dst} ${f.proto} dport ${f.hostPort} dnat ip to ${f.guestAddress}:${f.guestPort}`);
  }
  const chain = (name: string, hook: string, rules: string[]): string =>
    `  chain ${name} {\n    type ${hook}; policy accept;\n${rules.map((r) => `    ${r}\n`).join('')}  }\n`;
  return `table inet ${NFT_TABLE} {\n`
    + chain('input', 'filter hook input priority filter', input)
    + chain('forward', 'filter hook forward priority filter', forward)
    + chain('prerouting', 'nat hook prerouting priority dstnat', dnat.map((r) => `iifname != ${set(bridges)} ${r}`))
    + chain('output', 'nat hook output priority -100', dnat)
    + chain('postrouting', 'nat hook postrouting priority srcnat', postrouting)
    + '}\n';
}

/** Chain-name prefixes and map names of the bridge table (its per-TAP chains are PREFIX + TAP name). */
export const FROM_TAP = 'from-';
export const TO_TAP = 'to-';
export const FROM_TAPS = 'from_taps';
export const TO_TAPS = 'to_taps';

/**
 * The `bridge hangar` table (pure): anti-spoofing per TAP, on frames as they
 * enter the bridge (whether they go to another VM or to the host), and the
 * NIC's rate limits (policing as frames enter from and leave to its TAP). Null
 * when no VM runs with a NIC.
 *
 * Layout: each TAP's rules live in chains of their own (`from-TAP` for what it
 * sends, `to-TAP` for what it receives), and each hook has one rule, a verdict
 * map lookup on the bridge port (`iifname vmap @from_taps`): a frame costs one
 * hash lookup plus its own TAP's rules, however many VMs share the bridge. (With
 * every TAP's rules in the hook chain, each starting with an `iifname` compare,
 * a frame was compared with the rules of every TAP before its own, and frames
 * from no TAP with all of them.) A frame from a port the map does not name (the
 * host's side, an uplink) matches nothing and is accepted, as before. The table
 * is replaced whole in one transaction (replaceScript), so a TAP's map element
 * and its chains come and go together.
 */
export function renderPortFilter(ports: FirewallPort[]): string | null {
  if (ports.length === 0) return null;
  // Rules per TAP, in the order TAPs first appear (a TAP named twice gets both entries' rules, as one chain).
  const from = new Map<string, string[]>();
  const to = new Map<string, string[]>();
  const rulesOf = (m: Map<string, string[]>, tap: string): string[] => {
    let r = m.get(tap);
    if (!r) m.set(tap, (r = []));
    return r;
  };
  for (const p of ports) {
    checkChainable(p.tap);
    const rules = rulesOf(from, p.tap);
    // Rate limits: frames over the rate are dropped (policing), as they enter from or leave to the TAP.
    if (p.egressBps !== undefined) rules.push(`${nftLimit(p.egressBps)} counter drop`);
    if (p.ingressBps !== undefined) rulesOf(to, p.tap).push(`${nftLimit(p.ingressBps)} counter drop`);
    // Every drop counts what it dropped (`nft list table bridge hangar`): evidence of a VM that misbehaves.
    rules.push(`ether saddr != ${p.mac} counter drop`);
    rules.push(`ether type arp arp saddr ether != ${p.mac} counter drop`);
    if (p.ipv4) {
      // 0.0.0.0: a DHCP client before it has an address.
      rules.push(`ether type ip ip saddr != { 0.0.0.0, ${p.ipv4} } counter drop`);
      rules.push(`ether type arp arp saddr ip != { 0.0.0.0, ${p.ipv4} } counter drop`);
    }
    // ::: duplicate address detection, before an address is the guest's.
    if (p.ipv6) rules.push(`ether type ip6 ip6 saddr != { ::, ${p.ipv6.join(', ')} } counter drop`);
    // No DHCP or DHCPv6 server, no router advertisements from a VM.
    rules.push('ether type ip udp sport 67 counter drop');
    rules.push('ether type ip6 udp sport 547 counter drop');
    rules.push('ether type ip6 icmpv6 type nd-router-advert counter drop');
  }
  const chains = (prefix: string, m: Map<string, string[]>): string =>
    [...m].map(([tap, rules]) => `  chain ${prefix}${tap} {\n${rules.map((r) => `    ${r}\n`).join('')}  }\n`).join('');
  // The map comes after the chains it jumps to (one transaction, applied in order), the hook chain after the map.
  const map = (name: string, prefix: string, m: Map<string, string[]>): string =>
    `  map ${name} {\n    type ifname : verdict\n    elements = { ${[...m.keys()].map((tap) => `${q(tap)} : jump ${prefix}${tap}`).join(',\n                 ')} }\n  }\n`;
  const hook = (name: string, match: string, mapName: string): string =>
    `  chain ${name} {\n    type filter hook ${name} priority filter; policy accept;\n    ${match} vmap @${mapName}\n  }\n`;
  let out = chains(FROM_TAP, from) + map(FROM_TAPS, FROM_TAP, from) + hook('prerouting', 'iifname', FROM_TAPS);
  if (to.size > 0) out += chains(TO_TAP, to) + map(TO_TAPS, TO_TAP, to) + hook('postrouting', 'oifname', TO_TAPS);
  return `table bridge ${NFT_TABLE} {\n${out}}\n`;
}

/** A TAP name becomes part of a chain name: an interface name nft takes unquoted (Hangar's are `hgt-` + hex). */
function checkChainable(tap: string): void {
  if (!/^[A-Za-z][A-Za-z0-9_-]{0,14}$/.test(tap)) throw new HangarError('INVALID_ARGUMENT', `a TAP name the firewall cannot use: "${tap}"`);
}

/** The nft script that replaces our tables in one transaction (removing those that are null). */
export function replaceScript(table: string | null, ports: string | null = null): string {
  const head = `table inet ${NFT_TABLE} {}\ndelete table inet ${NFT_TABLE}\ntable bridge ${NFT_TABLE} {}\ndelete table bridge ${NFT_TABLE}\n`;
  return head + (table ?? '') + (ports ?? '');
}

function nft(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('nft', args, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new HangarError('UNAVAILABLE', `nft ${args.join(' ')}: ${(stderr || err.message).trim()}`));
      else resolve(stdout);
    });
  });
}

/** Applies the table for these networks and forwards (removes it when there are no networks). */
export async function applyFirewall(nets: FirewallNetwork[], forwards: FirewallForward[] = [], ports: FirewallPort[] = []): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-nft-'));
  try {
    const file = path.join(dir, 'hangar.nft');
    fs.writeFileSync(file, replaceScript(renderFirewall(nets, forwards), renderPortFilter(ports)), { mode: 0o600 });
    await nft(['-f', file]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Whether one of our tables exists in this namespace. */
export async function firewallPresent(): Promise<boolean> {
  const out = await nft(['-j', 'list', 'tables']);
  const parsed = JSON.parse(out) as { nftables: Array<{ table?: { family: string; name: string } }> };
  return parsed.nftables.some((e) => (e.table?.family === 'inet' || e.table?.family === 'bridge') && e.table.name === NFT_TABLE);
}
