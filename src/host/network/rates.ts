/**
 * Per-NIC rate limits: "10mbit", "500kbit", "1gbit" (decimal, as tc writes
 * them: 1 kbit = 1000 bit/s), applied as nftables policing on the NIC's TAP
 * (firewall.ts): `egress` is what the guest sends, `ingress` what it receives.
 */
import { HangarError } from '../../common/errors.js';

export const RATE_PATTERN = '^[0-9]{1,7}(\\.[0-9]{1,3})?(bit|kbit|mbit|gbit)$';
export const RATE_RULE = 'a number and a unit: bit, kbit, mbit or gbit per second (e.g. 10mbit)';
const RATE_RE = new RegExp(RATE_PATTERN);
const UNITS: Record<string, number> = { bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9 };
/** Below this a NIC could hardly carry DHCP; above it, no limit is needed. */
const MIN_BPS = 8_000;
const MAX_BPS = 100e9;

/** Bits per second of a rate like "10mbit"; INVALID_ARGUMENT naming `field` otherwise. */
export function parseRate(text: string, field: string): number {
  const m = RATE_RE.exec(text);
  if (!m) throw new HangarError('INVALID_ARGUMENT', `${field} "${text}" is not a rate: ${RATE_RULE}`, { field });
  const bps = Math.round(parseFloat(text) * UNITS[m[2]!]!);
  if (bps < MIN_BPS || bps > MAX_BPS) throw new HangarError('INVALID_ARGUMENT', `${field} "${text}" must be between 8kbit and 100gbit`, { field });
  return bps;
}

/** nftables policing of `bps`: bytes per second, with a burst of a tenth of a second (at least 64 KiB, so TCP keeps flowing). */
export function nftLimit(bps: number): string {
  const bytes = Math.max(1, Math.round(bps / 8));
  const burst = Math.max(65_536, Math.round(bytes / 10));
  return `limit rate over ${bytes} bytes/second burst ${burst} bytes`;
}
