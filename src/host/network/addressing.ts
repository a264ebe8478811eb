/**
 * IPv4 arithmetic, subnet choice, MAC addresses and host link names for
 * networks. Pure functions: what the host already uses is passed in.
 */
import crypto from 'node:crypto';
import { HangarError } from '../../common/errors.js';

export interface Subnet {
  /** Network address as a 32-bit unsigned number. */
  base: number;
  prefix: number;
}

export function parseIpv4(s: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return null;
  return ((parts[0]! << 24) >>> 0) + (parts[1]! << 16) + (parts[2]! << 8) + parts[3]!;
}

export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

function mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** "a.b.c.d/p" → Subnet, or null when it is not one (host bits set count as not one). */
export function parseCidr(s: string): Subnet | null {
  const [addr, len, ...rest] = s.split('/');
  if (rest.length || addr === undefined || len === undefined || !/^\d{1,2}$/.test(len)) return null;
  const ip = parseIpv4(addr);
  const prefix = Number(len);
  if (ip === null || prefix > 32) return null;
  if ((ip & mask(prefix)) >>> 0 !== ip) return null;
  return { base: ip, prefix };
}

export function formatCidr(s: Subnet): string {
  return `${formatIpv4(s.base)}/${s.prefix}`;
}

export function subnetSize(s: Subnet): number {
  return 2 ** (32 - s.prefix);
}

export function contains(s: Subnet, ip: number): boolean {
  return ((ip & mask(s.prefix)) >>> 0) === s.base;
}

export function overlaps(a: Subnet, b: Subnet): boolean {
  const p = Math.min(a.prefix, b.prefix);
  return ((a.base & mask(p)) >>> 0) === ((b.base & mask(p)) >>> 0);
}

/** The gateway (the host's address on the bridge) is the first host address. */
export function gatewayOf(s: Subnet): number {
  return s.base + 1;
}

/** The DHCP pool: every host address after the gateway, the broadcast address excluded. */
export function dhcpRange(s: Subnet): { first: number; last: number } {
  return { first: s.base + 2, last: s.base + subnetSize(s) - 2 };
}

/** Prefixes a user may give: big enough to be useful, small enough to be a LAN. */
export const MIN_PREFIX = 16;
export const MAX_PREFIX = 28;

/** Checks a subnet a user asked for; throws INVALID_ARGUMENT naming the problem. */
export function checkSubnet(text: string): Subnet {
  const s = parseCidr(text);
  if (!s) throw new HangarError('INVALID_ARGUMENT', `subnet "${text}" is not an IPv4 network address with a prefix, e.g. 10.77.0.0/24 (host bits must be zero)`, { field: 'subnet' });
  if (s.prefix < MIN_PREFIX || s.prefix > MAX_PREFIX) {
    throw new HangarError('INVALID_ARGUMENT', `subnet ${text}: the prefix must be between /${MIN_PREFIX} and /${MAX_PREFIX}`, { field: 'subnet' });
  }
  const first = s.base >>> 24;
  const private10 = first === 10;
  const private172 = first === 172 && ((s.base >>> 16) & 0xf0) === 16;
  const private192 = first === 192 && ((s.base >>> 16) & 255) === 168;
  if (!private10 && !private172 && !private192) {
    throw new HangarError('INVALID_ARGUMENT', `subnet ${text} is not in a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)`, { field: 'subnet' });
  }
  return s;
}

/**
 * Candidates for a new network, in order: 10.77.0.0/24 … 10.99.255.0/24,
 * then 172.16-31.x.0/24, then 192.168.x.0/24. 10.77 first because few
 * LANs and VPNs use it.
 */
export function* candidateSubnets(): Generator<Subnet> {
  for (let b = 77; b <= 99; b++) for (let c = 0; c < 256; c++) yield { base: parseIpv4(`10.${b}.${c}.0`)!, prefix: 24 };
  for (let b = 16; b <= 31; b++) for (let c = 0; c < 256; c++) yield { base: parseIpv4(`172.${b}.${c}.0`)!, prefix: 24 };
  for (let c = 0; c < 256; c++) yield { base: parseIpv4(`192.168.${c}.0`)!, prefix: 24 };
}

/**
 * The first candidate /24 that overlaps none of `taken` (addresses and
 * routes of the daemon's namespace, other Hangar networks). A default route
 * (0.0.0.0/0) is not counted: everything overlaps it.
 */
export function pickFreeSubnet(taken: Subnet[]): Subnet {
  const relevant = taken.filter((t) => t.prefix > 0);
  for (const c of candidateSubnets()) {
    if (!relevant.some((t) => overlaps(t, c))) return c;
  }
  throw new HangarError('RESOURCE_EXHAUSTED', 'no free private /24 subnet is left for a new network; give one with --subnet');
}

/** A locally administered unicast MAC: 0a:68:67 ("hg") then three bytes derived from `seed`, bumped by `attempt`. */
export function macFor(seed: string, attempt = 0): string {
  const h = crypto.createHash('sha256').update(`${seed}#${attempt}`).digest();
  const bytes = [0x0a, 0x68, 0x67, h[0]!, h[1]!, h[2]!];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** Locally administered (bit 1 of the first octet) and unicast (bit 0 clear). */
export function isLocalUnicastMac(mac: string): boolean {
  const first = parseInt(mac.slice(0, 2), 16);
  return (first & 1) === 0 && (first & 2) === 2;
}

/** Prefixes of the host links Hangar makes: its bridges and its TAPs (names ≤ 15 bytes). */
export const BRIDGE_PREFIX = 'hgb-';
export const TAP_PREFIX = 'hgt-';

/** A new bridge name: hgb- and 8 random hex digits (stored with the network, so it never changes). */
export function newBridgeName(): string {
  return `${BRIDGE_PREFIX}${crypto.randomBytes(4).toString('hex')}`;
}

/** A NIC's TAP name: hgt- and 10 hex digits of a hash of the VM's id and the NIC's name (stable across runs). */
export function tapNameFor(vmId: string, nic: string): string {
  return `${TAP_PREFIX}${crypto.createHash('sha256').update(`${vmId}/${nic}`).digest('hex').slice(0, 10)}`;
}
