/**
 * IPv6 for nat and isolated networks: each has one /64 (a unique local
 * prefix, fd00::/8, generated when the network is made, or one the user
 * gives). The host is `PREFIX::1` on the bridge; guests configure
 * themselves by SLAAC from the router advertisements of the network's
 * dnsmasq, so a guest's addresses follow from its MAC (modified EUI-64):
 * `fe80::EUI64` and `PREFIX::EUI64`. Pure functions.
 */
import crypto from 'node:crypto';
import { HangarError } from '../../common/errors.js';

/** An IPv6 address as eight 16-bit groups. */
export type Ipv6 = number[];

/** What `--ipv6` takes besides a prefix: a generated ULA /64, or no IPv6. */
export const IPV6_AUTO = 'auto';
export const IPV6_NONE = 'none';

export function parseIpv6(text: string): Ipv6 | null {
  if (!/^[0-9a-fA-F:]+$/.test(text) || text.length > 39) return null;
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const groups = (s: string): number[] | null => {
    if (s === '') return [];
    const parts = s.split(':');
    if (parts.some((p) => !/^[0-9a-fA-F]{1,4}$/.test(p))) return null;
    return parts.map((p) => parseInt(p, 16));
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return null;
  if (halves.length === 1) return head.length === 8 ? head : null;
  const missing = 8 - head.length - tail.length;
  if (missing < 1) return null;
  return [...head, ...new Array<number>(missing).fill(0), ...tail];
}

/** The canonical text form (RFC 5952): lower case, the longest run of two or more zero groups as `::`. */
export function formatIpv6(a: Ipv6): string {
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (a[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && a[j] === 0) j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = (g: number[]): string => g.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(a);
  return `${hex(a.slice(0, best))}::${hex(a.slice(best + bestLen))}`;
}

/** The interface identifier (last 64 bits) a MAC gives by modified EUI-64: U/L bit flipped, ff:fe in the middle. */
export function eui64(mac: string): number[] {
  const b = mac.split(':').map((x) => parseInt(x, 16));
  return [((b[0]! ^ 0x02) << 8) | b[1]!, (b[2]! << 8) | 0xff, (0xfe << 8) | b[3]!, (b[4]! << 8) | b[5]!];
}

/** A network's /64 as its first four groups. */
export interface Prefix64 {
  head: number[];
}

export function formatPrefix(p: Prefix64): string {
  return `${formatIpv6([...p.head, 0, 0, 0, 0])}/64`;
}

/** "ADDR/64" → Prefix64, or null (host bits must be zero, and only /64 works with SLAAC). */
export function parsePrefix(text: string): Prefix64 | null {
  const [addr, len, ...rest] = text.split('/');
  if (rest.length || len !== '64' || addr === undefined) return null;
  const a = parseIpv6(addr);
  if (!a || a.slice(4).some((g) => g !== 0)) return null;
  return { head: a.slice(0, 4) };
}

/** The host's address on the bridge: PREFIX::1. */
export function gateway6(p: Prefix64): string {
  return formatIpv6([...p.head, 0, 0, 0, 1]);
}

/** The SLAAC address a guest with this MAC takes in the prefix. */
export function slaacAddress(p: Prefix64, mac: string): string {
  return formatIpv6([...p.head, ...eui64(mac)]);
}

/** The link-local address a guest with this MAC takes (fe80::/64 with its EUI-64). */
export function linkLocalAddress(mac: string): string {
  return formatIpv6([0xfe80, 0, 0, 0, ...eui64(mac)]);
}

/** A new unique local /64 (RFC 4193): fd, 40 random bits, subnet 0. */
export function newUlaPrefix(): Prefix64 {
  const r = crypto.randomBytes(5);
  return { head: [0xfd00 | r[0]!, (r[1]! << 8) | r[2]!, (r[3]! << 8) | r[4]!, 0] };
}

export function samePrefix(a: Prefix64, b: Prefix64): boolean {
  return a.head.every((g, i) => g === b.head[i]);
}

/**
 * Checks a prefix a user asked for (`--ipv6 ADDR/64`): a /64 of unique
 * local (fc00::/7) or global unicast (2000::/3) space. Throws INVALID_ARGUMENT.
 */
export function checkPrefix(text: string): Prefix64 {
  const p = parsePrefix(text);
  if (!p) throw new HangarError('INVALID_ARGUMENT', `IPv6 subnet "${text}" is not a /64 network address, e.g. fd12:3456:789a::/64 (SLAAC needs a /64; host bits must be zero); or give "${IPV6_AUTO}" or "${IPV6_NONE}"`, { field: 'ipv6' });
  const first = p.head[0]!;
  const ula = (first & 0xfe00) === 0xfc00;
  const global = (first & 0xe000) === 0x2000;
  if (!ula && !global) throw new HangarError('INVALID_ARGUMENT', `IPv6 subnet ${text} is neither unique local (fc00::/7) nor global unicast (2000::/3)`, { field: 'ipv6' });
  return p;
}
