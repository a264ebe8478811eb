/**
 * The pure parts of networking: subnet choice against what the host uses,
 * MACs and link names, dnsmasq's configuration, the nftables table, leases.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isHangarError } from '../../src/common/errors.js';
import {
  checkSubnet, dhcpRange, formatCidr, formatIpv4, isLocalUnicastMac, macFor, overlaps, parseCidr, pickFreeSubnet, tapNameFor,
} from '../../src/host/network/addressing.js';
import { parseLeases, processHoldsResources, renderDnsmasqConfig } from '../../src/host/network/dnsmasq.js';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { renderFirewall, renderPortFilter, replaceScript } from '../../src/host/network/firewall.js';
import { chainRules, fromTapRules } from '../helpers/nft.js';
import { checkPrefix, eui64, formatIpv6, formatPrefix, gateway6, linkLocalAddress, newUlaPrefix, parseIpv6, parsePrefix, slaacAddress } from '../../src/host/network/addressing6.js';
import { isTapName } from '../../src/api/names.js';

const cidr = (s: string) => parseCidr(s)!;

test('a new network gets the first private /24 nothing on the host overlaps', () => {
  assert.equal(formatCidr(pickFreeSubnet([])), '10.77.0.0/24');
  // The default route overlaps everything and does not count; a /16 covering 10.77 does.
  assert.equal(formatCidr(pickFreeSubnet([cidr('0.0.0.0/0'), cidr('10.77.0.0/24'), cidr('10.77.1.0/24')])), '10.77.2.0/24');
  assert.equal(formatCidr(pickFreeSubnet([cidr('10.77.0.0/16')])), '10.78.0.0/24');
  assert.equal(formatCidr(pickFreeSubnet([cidr('10.0.0.0/8')])), '172.16.0.0/24');
  // A host route inside a candidate makes it taken.
  assert.equal(formatCidr(pickFreeSubnet([cidr('10.77.0.9/32')])), '10.77.1.0/24');
});

test('subnets a user gives are checked', () => {
  assert.equal(formatCidr(checkSubnet('192.168.50.0/24')), '192.168.50.0/24');
  for (const bad of ['10.1.2.3/24', '8.8.8.0/24', '10.0.0.0/8', '10.0.0.0/30', 'x', '10.0.0.0']) {
    assert.throws(() => checkSubnet(bad), (e: unknown) => isHangarError(e) && e.code === 'INVALID_ARGUMENT', bad);
  }
  assert.ok(overlaps(cidr('10.0.0.0/16'), cidr('10.0.5.0/24')));
  assert.ok(!overlaps(cidr('10.0.0.0/24'), cidr('10.0.1.0/24')));
  const r = dhcpRange(cidr('10.77.3.0/24'));
  assert.equal(`${formatIpv4(r.first)}-${formatIpv4(r.last)}`, '10.77.3.2-10.77.3.254');
});

test('MACs are locally administered unicast; TAP names fit IFNAMSIZ and are stable', () => {
  const a = macFor('vm/eth0');
  assert.match(a, /^0a:68:67(:[0-9a-f]{2}){3}$/);
  assert.ok(isLocalUnicastMac(a));
  assert.notEqual(macFor('vm/eth0', 1), a);
  assert.ok(isLocalUnicastMac('52:54:00:00:00:01'));
  assert.ok(!isLocalUnicastMac('00:11:22:33:44:55'));
  assert.ok(!isLocalUnicastMac('03:00:00:00:00:01'));
  const t = tapNameFor('id-1', 'eth0');
  assert.equal(t, tapNameFor('id-1', 'eth0'));
  assert.notEqual(t, tapNameFor('id-1', 'eth1'));
  assert.ok(t.length <= 15 && isTapName(t));
});

test('dnsmasq: bound to its bridge, domain hangar, reservations inline, no route on isolated networks', () => {
  const conf = renderDnsmasqConfig({
    dir: '/d/networks/n1', bridge: 'hgb-1', subnet: cidr('10.77.4.0/24'), routed: true,
    reservations: [{ mac: '0A:68:67:00:00:01', name: 'web1', ipv4: '10.77.4.10' }, { mac: '0a:68:67:00:00:02', name: 'db' }],
  });
  const lines = conf.split('\n');
  for (const l of ['interface=hgb-1', 'bind-dynamic', 'listen-address=10.77.4.1', 'domain=hangar', 'local=/hangar/',
    'dhcp-range=10.77.4.2,10.77.4.254,255.255.255.0,1h', 'dhcp-option=option:router,10.77.4.1',
    'dhcp-host=0a:68:67:00:00:01,10.77.4.10,web1', 'dhcp-host=0a:68:67:00:00:02,db', 'dhcp-leasefile=/d/networks/n1/leases']) {
    assert.ok(lines.includes(l), l);
  }
  const iso = renderDnsmasqConfig({ dir: '/d', bridge: 'hgb-2', subnet: cidr('10.77.5.0/24'), routed: false, reservations: [] }).split('\n');
  assert.ok(iso.includes('dhcp-option=option:router') && iso.includes('no-resolv'));
});

test('firewall: one table, replaced atomically; networks kept apart; NAT only for nat networks', () => {
  assert.equal(renderFirewall([]), null);
  assert.equal(replaceScript(null), 'table inet hangar {}\ndelete table inet hangar\ntable bridge hangar {}\ndelete table bridge hangar\n');
  const t = renderFirewall([
    { kind: 'nat', bridge: 'hgb-a', subnet: cidr('10.77.0.0/24') },
    { kind: 'isolated', bridge: 'hgb-b', subnet: cidr('10.77.1.0/24') },
  ])!;
  assert.match(t, /^table inet hangar \{/);
  assert.ok(t.includes('iifname { "hgb-a", "hgb-b" } oifname { "hgb-a", "hgb-b" } drop'));
  assert.ok(t.includes('iifname "hgb-a" ip daddr 10.77.1.1 drop'));
  assert.ok(t.includes('iifname "hgb-b" ip daddr 10.77.0.1 drop'));
  assert.ok(t.includes('ip saddr 10.77.0.0/24 ip daddr != 10.77.0.0/24 oifname != { "hgb-a", "hgb-b" } masquerade'));
  assert.ok(!t.includes('10.77.1.0/24 ip daddr != 10.77.1.0/24'));
  assert.ok(t.includes('iifname "hgb-b" drop') && t.includes('oifname "hgb-b" drop'));
  // Same-bridge traffic (br_netfilter) is accepted before any drop.
  const forward = t.slice(t.indexOf('chain forward'), t.indexOf('chain postrouting'));
  assert.ok(forward.indexOf('iifname "hgb-b" oifname "hgb-b" accept') < forward.indexOf('iifname "hgb-b" drop'));
});

test('leases: IPv4 lines of dnsmasq\'s lease file', () => {
  const l = parseLeases('1795994472 0A:68:67:27:13:6b 10.77.1.63 vm1 01:0a:68:67:27:13:6b\n1795994473 02:00:00:00:00:01 10.77.1.64 * *\nduid 00:01\n');
  assert.deepEqual(l, [
    { expires: 1795994472, mac: '0a:68:67:27:13:6b', ipv4: '10.77.1.63', hostname: 'vm1' },
    { expires: 1795994473, mac: '02:00:00:00:00:01', ipv4: '10.77.1.64', hostname: null },
  ]);
});

test('firewall: port forwards DNAT from outside and from the host, loopback answers only', () => {
  const t = renderFirewall(
    [{ kind: 'nat', bridge: 'hgb-a', subnet: cidr('10.77.0.0/24') }],
    [{ proto: 'tcp', address: '127.0.0.1', hostPort: 8080, guestAddress: '10.77.0.5', guestPort: 80 },
      { proto: 'udp', address: '0.0.0.0', hostPort: 5353, guestAddress: '10.77.0.6', guestPort: 53 }],
  )!;
  const chainOf = (name: string) => t.slice(t.indexOf(`chain ${name}`), t.indexOf('}', t.indexOf(`chain ${name}`)));
  assert.ok(chainOf('prerouting').includes('iifname != "hgb-a" ip daddr 127.0.0.1 tcp dport 8080 dnat ip to 10.77.0.5:80'));
  assert.ok(chainOf('output').includes('ip daddr 127.0.0.1 tcp dport 8080 dnat ip to 10.77.0.5:80'));
  assert.ok(chainOf('output').includes('fib daddr type local udp dport 5353 dnat ip to 10.77.0.6:53'));
  assert.ok(chainOf('postrouting').includes('oifname "hgb-a" ip saddr 127.0.0.0/8 masquerade'));
  assert.ok(chainOf('input').includes('iifname "hgb-a" ip daddr 127.0.0.0/8 ct direction original drop'));
  assert.ok(chainOf('forward').includes('oifname "hgb-a" ct status dnat accept'));
});

test('anti-spoofing: per TAP, its own MAC and addresses only, no DHCP server, no router advertisements', () => {
  assert.equal(renderPortFilter([]), null);
  const t = renderPortFilter([{ tap: 'hgt-1', mac: '0a:68:67:00:00:01', ipv4: '10.77.0.5' }, { tap: 'hgt-2', mac: '0a:68:67:00:00:02' }])!;
  assert.match(t, /^table bridge hangar \{\n/);
  const one = fromTapRules(t, 'hgt-1')!;
  assert.deepEqual(one, ['ether saddr != 0a:68:67:00:00:01 counter drop', 'ether type arp arp saddr ether != 0a:68:67:00:00:01 counter drop',
    'ether type ip ip saddr != { 0.0.0.0, 10.77.0.5 } counter drop', 'ether type arp arp saddr ip != { 0.0.0.0, 10.77.0.5 } counter drop',
    'ether type ip udp sport 67 counter drop', 'ether type ip6 udp sport 547 counter drop', 'ether type ip6 icmpv6 type nd-router-advert counter drop']);
  // A bridged network's NIC: its MAC is checked, addresses are the LAN's business.
  assert.deepEqual(fromTapRules(t, 'hgt-2'), ['ether saddr != 0a:68:67:00:00:02 counter drop', 'ether type arp arp saddr ether != 0a:68:67:00:00:02 counter drop',
    'ether type ip udp sport 67 counter drop', 'ether type ip6 udp sport 547 counter drop', 'ether type ip6 icmpv6 type nd-router-advert counter drop']);
});

test('anti-spoofing layout: one verdict-map dispatch per hook, each TAP\'s rules in its own chain, no per-TAP compare in the hook', () => {
  const taps = Array.from({ length: 40 }, (_, i) => ({ tap: `hgt-${i.toString(16).padStart(10, '0')}`, mac: `0a:68:67:00:00:${(i + 1).toString(16).padStart(2, '0')}`, ipv4: `10.77.0.${i + 2}` }));
  const t = renderPortFilter(taps)!;
  // The hook chain holds exactly one rule whatever the number of TAPs: the map lookup on the bridge port.
  assert.deepEqual(chainRules(t, 'prerouting'), ['type filter hook prerouting priority filter; policy accept;', 'iifname vmap @from_taps']);
  assert.equal(chainRules(t, 'postrouting'), null, 'no ingress limit: no postrouting hook at all');
  assert.doesNotMatch(t, /iifname "|oifname "/, 'no rule compares the port name');
  // Every TAP is an element of the map, jumping to its own chain, which exists and checks its own MAC and address.
  const elements = /map from_taps \{\n    type ifname : verdict\n    elements = \{ ([^}]*) \}/.exec(t)![1]!.split(/,\s*/);
  assert.deepEqual(elements, taps.map((p) => `"${p.tap}" : jump from-${p.tap}`));
  for (const p of taps) {
    const rules = fromTapRules(t, p.tap)!;
    assert.ok(rules.includes(`ether saddr != ${p.mac} counter drop`) && rules.includes(`ether type ip ip saddr != { 0.0.0.0, ${p.ipv4} } counter drop`), p.tap);
  }
  // Chains come before the map that names them, the map before the hook that looks it up (nft applies the file in order).
  assert.ok(t.indexOf(`chain from-${taps[39]!.tap} {`) < t.indexOf('map from_taps {') && t.indexOf('map from_taps {') < t.indexOf('chain prerouting {'));
  // A TAP named twice: one element, one chain holding both entries' rules (a duplicate element would fail the transaction).
  const twice = renderPortFilter([{ tap: 'hgt-1', mac: '0a:68:67:00:00:01' }, { tap: 'hgt-1', mac: '0a:68:67:00:00:01', egressBps: 8_000_000 }])!;
  assert.equal(twice.match(/"hgt-1" : jump/g)!.length, 1);
  assert.equal(fromTapRules(twice, 'hgt-1')!.filter((r) => r.startsWith('ether saddr')).length, 2);
  assert.throws(() => renderPortFilter([{ tap: 'tap 0; drop', mac: '0a:68:67:00:00:01' }]), /TAP name/);
});

test('dnsmasq stop: a process holds its sockets until it is a zombie or gone, not merely once its command line is empty', async () => {
  // `sleep 0.3` becomes a zombie under `sleep 30`, which never reaps it.
  const parent = spawn('sh', ['-c', 'sleep 0.3 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    const pid = Number(await new Promise<string>((resolve) => parent.stdout!.once('data', (b: Buffer) => resolve(b.toString()))));
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
    assert.equal(processHoldsResources(pid, start), true, 'running');
    assert.equal(processHoldsResources(pid, String(Number(start) + 1)), false, 'another process that reused the pid is not ours');
    for (let i = 0; i < 100 && processHoldsResources(pid, start); i++) await new Promise((r) => setTimeout(r, 20));
    assert.match(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'), /\) Z /, 'the child is a zombie now');
    assert.equal(processHoldsResources(pid, start), false, 'a zombie has closed its files');
  } finally {
    parent.kill('SIGKILL');
  }
});

test('IPv6: parsing and canonical form, EUI-64 addresses from a MAC, prefixes users may give', () => {
  assert.deepEqual(parseIpv6('fd12:3456:789a::1'), [0xfd12, 0x3456, 0x789a, 0, 0, 0, 0, 1]);
  assert.deepEqual(parseIpv6('::'), [0, 0, 0, 0, 0, 0, 0, 0]);
  for (const bad of ['1::2::3', 'fd12:::1', '12345::', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', 'g::1', '']) assert.equal(parseIpv6(bad), null, bad);
  assert.equal(formatIpv6([0x2001, 0xdb8, 0, 0, 1, 0, 0, 1]), '2001:db8::1:0:0:1');
  assert.equal(formatIpv6([0xfe80, 0, 0, 0, 0x868, 0x67ff, 0xfe00, 1]), 'fe80::868:67ff:fe00:1');
  assert.equal(formatIpv6([1, 0, 2, 0, 3, 0, 4, 0]), '1:0:2:0:3:0:4:0');
  // Modified EUI-64: the universal/local bit flipped (0a → 08), ff:fe in the middle.
  assert.deepEqual(eui64('0a:68:67:00:00:01'), [0x0868, 0x67ff, 0xfe00, 0x0001]);
  assert.equal(linkLocalAddress('0A:68:67:12:34:56'), 'fe80::868:67ff:fe12:3456');
  const p = parsePrefix('fd12:3456:789a::/64')!;
  assert.equal(slaacAddress(p, '0a:68:67:12:34:56'), 'fd12:3456:789a:0:868:67ff:fe12:3456');
  assert.equal(gateway6(p), 'fd12:3456:789a::1');
  assert.equal(formatPrefix(p), 'fd12:3456:789a::/64');
  assert.equal(parsePrefix('fd12:3456:789a::1/64'), null, 'host bits set');
  assert.equal(parsePrefix('fd12:3456::/48'), null, 'only /64');
  assert.throws(() => checkPrefix('fe80::/64'), /neither unique local/);
  assert.throws(() => checkPrefix('fd00::/56'), /not a \/64/);
  assert.equal(formatPrefix(checkPrefix('2001:db8:1:2::/64')), '2001:db8:1:2::/64');
  const u = newUlaPrefix();
  assert.equal(u.head[0]! >> 8, 0xfd);
  assert.equal(u.head[3], 0);
});

test('IPv6 in dnsmasq: router advertisements for SLAAC, DNS by DHCPv6, AAAA names; no default route on isolated networks', () => {
  const p = parsePrefix('fd12:3456:789a::/64')!;
  const nat = renderDnsmasqConfig({ dir: '/d', bridge: 'hgb-1', subnet: cidr('10.77.4.0/24'), routed: true, reservations: [], ipv6: p }).split('\n');
  for (const l of ['enable-ra', 'listen-address=fd12:3456:789a::1', 'dhcp-range=fd12:3456:789a::,ra-stateless,ra-names,64,1h', 'dhcp-option=option6:dns-server,[fd12:3456:789a::1]']) {
    assert.ok(nat.includes(l), l);
  }
  assert.ok(!nat.some((l) => l.startsWith('ra-param')));
  const iso = renderDnsmasqConfig({ dir: '/d', bridge: 'hgb-2', subnet: cidr('10.77.5.0/24'), routed: false, reservations: [], ipv6: p }).split('\n');
  assert.ok(iso.includes('ra-param=hgb-2,60,0'));
  const v4 = renderDnsmasqConfig({ dir: '/d', bridge: 'hgb-3', subnet: cidr('10.77.6.0/24'), routed: true, reservations: [] });
  assert.ok(!v4.includes('enable-ra') && !v4.includes('dhcp-range=fd'), 'IPv4 only without a prefix');
});

test('IPv6 in the firewall: forwarded and masqueraded from its own /64 only; other networks\' gateways closed; a TAP sends from its own addresses', () => {
  const a = parsePrefix('fd00:a::/64')!;
  const b = parsePrefix('fd00:b::/64')!;
  const t = renderFirewall([
    { kind: 'nat', bridge: 'hgb-a', subnet: cidr('10.77.0.0/24'), ipv6: a },
    { kind: 'isolated', bridge: 'hgb-b', subnet: cidr('10.77.1.0/24'), ipv6: b },
  ])!;
  assert.ok(t.includes('iifname "hgb-a" ip6 saddr fd00:a::/64 accept'));
  assert.ok(t.includes('ip6 saddr fd00:a::/64 ip6 daddr != fd00:a::/64 oifname != { "hgb-a", "hgb-b" } masquerade'));
  assert.ok(!t.includes('ip6 saddr fd00:b::/64'), 'an isolated network is not forwarded');
  assert.ok(t.includes('iifname "hgb-a" ip6 daddr fd00:b::1 drop') && t.includes('iifname "hgb-b" ip6 daddr fd00:a::1 drop'));
  const forward = t.slice(t.indexOf('chain forward'), t.indexOf('chain prerouting'));
  assert.ok(forward.indexOf('iifname "hgb-a" ip6 saddr fd00:a::/64 accept') < forward.indexOf('iifname "hgb-a" drop'));
  const input = t.slice(t.indexOf('chain input'), t.indexOf('chain forward'));
  assert.ok(input.indexOf('iifname "hgb-b" icmpv6 type { nd-router-solicit') < input.indexOf('iifname "hgb-b" drop'), 'neighbour discovery on an isolated network');
  const f = renderPortFilter([{ tap: 'hgt-1', mac: '0a:68:67:00:00:01', ipv4: '10.77.0.5', ipv6: [linkLocalAddress('0a:68:67:00:00:01'), slaacAddress(a, '0a:68:67:00:00:01')] }])!;
  assert.ok(fromTapRules(f, 'hgt-1')!.includes('ether type ip6 ip6 saddr != { ::, fe80::868:67ff:fe00:1, fd00:a::868:67ff:fe00:1 } counter drop'), f);
});
