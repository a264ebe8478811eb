/**
 * Hangar's per-TAP filter (`bridge hangar`, renderPortFilter) on real frames,
 * in network namespaces this test makes: a bridge with a gateway address, and
 * "VMs" that are veths into client namespaces of their own, their bridge ends
 * named like TAPs. The table is the one the daemon writes, with 40 ports in
 * its map (most of them TAPs that do not exist), the three real ones first,
 * in the middle and last:
 *
 * - each real port's own traffic passes; a forged source address or MAC from
 *   it is dropped, and counted in that port's chain and no other (the map
 *   dispatches each frame to its own port's rules);
 * - a bridge port the map does not name (an uplink, the host's side) is not
 *   filtered;
 * - a table of the old layout (per-TAP rules in the hook chain, as an older
 *   daemon left it) is replaced whole by the same `nft -f` transaction.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { renderPortFilter, replaceScript, type FirewallPort } from '../../src/host/network/firewall.js';
import { chainRules, counterOf, fromTapRules } from '../helpers/nft.js';

const isRoot = process.getuid?.() === 0;
const haveTools = ['/usr/sbin/nft', '/usr/bin/busybox'].every((f) => fs.existsSync(f));
const skip = !isRoot ? 'needs root (namespaces, bridges)' : !haveTools ? 'needs nft and busybox' : false;

const tag = `${process.pid % 100000}`;
const NS = `hgt-pf${tag}`;
const BR = `hgb-pf${tag}`;
const GW = '10.77.9.1';
const BR_MAC = '0a:68:67:09:ff:01';
const namespaces: string[] = [];

interface Client { ns: string; port: string; mac: string; ip: string }
/** Three filtered "VMs" (first, middle, last in the map) and one port the map does not name. */
const clients: Client[] = [0, 1, 2, 3].map((i) => ({
  ns: `hgt-pc${tag}${i}`, port: `hgt-pf${tag}p${i}`, mac: `0a:68:67:09:00:0${i + 1}`, ip: `10.77.9.${10 + i}`,
}));
const [first, middle, last, unfiltered] = clients as [Client, Client, Client, Client];

function run(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], ...(input !== undefined ? { input } : {}) });
}
const inNs = (ns: string, ...args: string[]): string => run('ip', ['netns', 'exec', ns, ...args]);
const nftLoad = (script: string): string => run('ip', ['netns', 'exec', NS, 'nft', '-f', '-'], script);
const table = (): string => inNs(NS, 'nft', 'list', 'table', 'bridge', 'hangar');
const pings = (c: Client, from?: string): boolean =>
  spawnSync('ip', ['netns', 'exec', c.ns, 'busybox', 'ping', '-c', '1', '-W', '2', ...(from ? ['-I', from] : []), GW], { timeout: 30_000 }).status === 0;

/** The ports as the daemon would list them: 37 TAPs of VMs elsewhere around our three. */
function ports(): FirewallPort[] {
  const others = Array.from({ length: 37 }, (_, i): FirewallPort => ({ tap: `hgt-${i.toString(16).padStart(10, '0')}`, mac: `0a:68:67:08:00:${(i + 1).toString(16).padStart(2, '0')}`, ipv4: `10.77.8.${i + 2}` }));
  const own = (c: Client): FirewallPort => ({ tap: c.port, mac: c.mac, ipv4: c.ip });
  return [own(first), ...others.slice(0, 18), own(middle), ...others.slice(18), own(last)];
}

before(() => {
  if (skip) return;
  run('ip', ['netns', 'add', NS]);
  namespaces.push(NS);
  inNs(NS, 'ip', 'link', 'set', 'lo', 'up');
  // A fixed address: a bridge without one takes its lowest port's, which changes as ports join.
  inNs(NS, 'ip', 'link', 'add', BR, 'address', BR_MAC, 'type', 'bridge');
  inNs(NS, 'ip', 'addr', 'add', `${GW}/24`, 'dev', BR);
  inNs(NS, 'ip', 'link', 'set', BR, 'up');
  for (const c of clients) {
    run('ip', ['netns', 'add', c.ns]);
    namespaces.push(c.ns);
    run('ip', ['link', 'add', c.port, 'netns', NS, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', c.ns]);
    inNs(NS, 'ip', 'link', 'set', c.port, 'master', BR, 'up');
    // No IPv6 chatter (router solicitations, DAD) to muddy the counters; the gateway's MAC known, so no ARP either:
    // what is counted is exactly the pings below.
    inNs(c.ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
    inNs(c.ns, 'ip', 'link', 'set', 'eth0', 'address', c.mac);
    inNs(c.ns, 'ip', 'link', 'set', 'eth0', 'up');
    inNs(c.ns, 'ip', 'addr', 'add', `${c.ip}/24`, 'dev', 'eth0');
    inNs(c.ns, 'ip', 'neigh', 'replace', GW, 'lladdr', BR_MAC, 'dev', 'eth0', 'nud', 'permanent');
  }
});

after(() => {
  for (const ns of namespaces.reverse()) spawnSync('ip', ['netns', 'del', ns]);
});

test('per-TAP filter in the verdict-map layout: own traffic passes, forged IPv4 source and MAC dropped and counted at their own port; old layout replaced', { skip, timeout: 120_000 }, () => {
  // An older daemon's table: per-TAP rules in the hook chain; this one drops everything the first port sends.
  nftLoad(`table bridge hangar {\n  chain prerouting {\n    type filter hook prerouting priority filter; policy accept;\n    iifname "${first.port}" counter drop\n  }\n}\n`);
  assert.ok(!pings(first), 'the old table is in force');
  nftLoad(replaceScript(null, renderPortFilter(ports())));
  let t = table();
  assert.deepEqual(chainRules(t, 'prerouting'), ['type filter hook prerouting priority filter; policy accept;', 'iifname vmap @from_taps'], t);
  assert.doesNotMatch(t, /iifname "/, 'nothing of the old layout is left');

  for (const c of clients) assert.ok(pings(c), `${c.port}'s own traffic passes`);
  const spoofs = [first, middle, last];
  for (const c of spoofs) {
    const forged = `10.77.9.${200 + clients.indexOf(c)}`;
    inNs(c.ns, 'ip', 'addr', 'add', `${forged}/24`, 'dev', 'eth0');
    assert.ok(!pings(c, forged), `${c.port}: a forged source address is dropped`);
    inNs(c.ns, 'ip', 'addr', 'del', `${forged}/24`, 'dev', 'eth0');
    inNs(c.ns, 'ip', 'link', 'set', 'eth0', 'address', '0a:68:67:de:ad:01');
    assert.ok(!pings(c), `${c.port}: a forged MAC is dropped`);
    inNs(c.ns, 'ip', 'link', 'set', 'eth0', 'address', c.mac);
    assert.ok(pings(c), `${c.port}: its own traffic passes again`);
  }
  // A port the map does not name is not filtered: any address passes.
  inNs(unfiltered.ns, 'ip', 'addr', 'add', '10.77.9.250/24', 'dev', 'eth0');
  assert.ok(pings(unfiltered, '10.77.9.250'), 'a bridge port that is no TAP of a VM is not filtered');

  t = table();
  for (const c of spoofs) {
    const rules = fromTapRules(t, c.port)!;
    assert.equal(counterOf(rules, 'ip saddr !='), 1, `${c.port}: the forged-address ping, counted in its own chain:\n${rules.join('\n')}`);
    // (At least: the kernel may send a frame of its own with the new MAC besides the ping.)
    assert.ok(counterOf(rules, 'ether saddr !=') >= 1, `${c.port}: the forged-MAC ping, counted in its own chain:\n${rules.join('\n')}`);
  }
  // The other ports' chains saw none of it (every drop rule of theirs still at 0).
  for (const p of ports().filter((x) => !spoofs.some((c) => c.port === x.tap))) {
    const counts = fromTapRules(t, p.tap)!.map((r) => Number(/counter packets (\d+)/.exec(r)?.[1] ?? 0));
    assert.ok(counts.every((n) => n === 0), `${p.tap} counted nothing`);
  }
});
