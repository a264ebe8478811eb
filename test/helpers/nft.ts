/**
 * Reading Hangar's nft tables in tests: the rules of one chain, from the text
 * `renderPortFilter` writes or from `nft list table` (tabs or spaces alike).
 */
import { FROM_TAP, TO_TAP } from '../../src/host/network/firewall.js';

/** The rule lines of `chain NAME { ... }` (trimmed, the `type ... hook` line included); null when there is no such chain. */
export function chainRules(table: string, name: string): string[] | null {
  const lines = table.split('\n');
  const start = lines.findIndex((l) => l.trim() === `chain ${name} {`);
  if (start < 0) return null;
  const rules: string[] = [];
  for (const l of lines.slice(start + 1)) {
    if (l.trim() === '}') return rules;
    if (l.trim() !== '') rules.push(l.trim());
  }
  return null;
}

/** The rules that filter what this TAP sends into the bridge (anti-spoofing, egress limit). */
export const fromTapRules = (table: string, tap: string): string[] | null => chainRules(table, `${FROM_TAP}${tap}`);
/** The rules on what the bridge sends to this TAP (ingress limit). */
export const toTapRules = (table: string, tap: string): string[] | null => chainRules(table, `${TO_TAP}${tap}`);

/** The packet count of the one rule of `rules` that contains `match` (from `nft list`, which prints counters). */
export function counterOf(rules: string[], match: string): number {
  const hits = rules.filter((r) => r.includes(match));
  if (hits.length !== 1) throw new Error(`${hits.length} rules with "${match}" in:\n${rules.join('\n')}`);
  const m = /counter packets (\d+)/.exec(hits[0]!);
  if (!m) throw new Error(`no counter in: ${hits[0]}`);
  return Number(m[1]);
}
