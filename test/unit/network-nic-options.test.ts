/**
 * NIC options that need no host to check: rate parsing and the nftables
 * policing they render to, user-mode NICs in QEMU's argv (hostfwd, no TAP
 * descriptor), and `--network NAME,rate=…` on `hangar launch`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nftLimit, parseRate } from '../../src/host/network/rates.js';
import { renderPortFilter } from '../../src/host/network/firewall.js';
import { chainRules, fromTapRules, toTapRules } from '../helpers/nft.js';
import { buildQemuArgs } from '../../src/engines/qemu/cmdline.js';
import { launchRequest } from '../../src/cli/commands/vm.js';
import { isHangarError } from '../../src/common/errors.js';

test('rates: tc-style decimal units; nonsense and extremes refused', () => {
  assert.equal(parseRate('10mbit', 'ingress'), 10_000_000);
  assert.equal(parseRate('1.5gbit', 'egress'), 1_500_000_000);
  assert.equal(parseRate('500kbit', 'egress'), 500_000);
  for (const bad of ['10', '10 mbit', '10MB', '-1mbit', '1bit', '200gbit']) {
    assert.throws(() => parseRate(bad, 'ingress'), (e: unknown) => isHangarError(e) && e.code === 'INVALID_ARGUMENT' && /ingress/.test(e.message), bad);
  }
  assert.equal(nftLimit(10_000_000), 'limit rate over 1250000 bytes/second burst 125000 bytes');
  assert.equal(nftLimit(80_000), 'limit rate over 10000 bytes/second burst 65536 bytes', 'a burst of at least 64 KiB');
});

test('port filter: egress policed entering the bridge, ingress leaving it; no postrouting chain without ingress limits', () => {
  const t = renderPortFilter([{ tap: 'hgt-a', mac: '0a:68:67:00:00:01', ingressBps: 10_000_000, egressBps: 5_000_000 }])!;
  // Egress: first in what the TAP sends (before the anti-spoofing rules); ingress: what goes to it, dispatched on the way out.
  assert.equal(fromTapRules(t, 'hgt-a')![0], 'limit rate over 625000 bytes/second burst 65536 bytes counter drop');
  assert.deepEqual(toTapRules(t, 'hgt-a'), ['limit rate over 1250000 bytes/second burst 125000 bytes counter drop']);
  assert.deepEqual(chainRules(t, 'postrouting'), ['type filter hook postrouting priority filter; policy accept;', 'oifname vmap @to_taps']);
  assert.match(t, /map to_taps \{\n    type ifname : verdict\n    elements = \{ "hgt-a" : jump to-hgt-a \}/);
  assert.doesNotMatch(renderPortFilter([{ tap: 'hgt-b', mac: '0a:68:67:00:00:02' }])!, /postrouting|limit/);
});

test('QEMU argv: a user-mode NIC is a user netdev with its hostfwd rules and takes no TAP descriptor', () => {
  const a = buildQemuArgs({
    id: 'vm-1', name: 'web', cpus: 1, memoryBytes: 256 * 2 ** 20, boot: { kernel: '/img/vmlinuz' }, disks: [], accel: 'tcg',
    runDir: '/run/hangar/vms/web', consoleLog: '/var/lib/hangar/vms/web/console.log',
    nics: [
      { id: 'eth0', tap: '', mac: '0a:68:67:00:00:01', user: { forwards: [{ proto: 'tcp', address: '127.0.0.1', hostPort: 8080, guestPort: 80 }, { proto: 'udp', address: '0.0.0.0', hostPort: 5353, guestPort: 53 }] } },
      { id: 'eth1', tap: 'hgt-0123456789', mac: '0a:68:67:00:00:02' },
    ],
  }, { tapFds: [-1, 5] });
  const netdevs = a.flatMap((x, i) => (x === '-netdev' ? [a[i + 1]!] : []));
  assert.deepEqual(netdevs, ['user,id=net-eth0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:0.0.0.0:5353-:53', 'tap,id=net-eth1,fd=5']);
  assert.throws(() => buildQemuArgs({
    id: 'vm-1', name: 'web', cpus: 1, memoryBytes: 256 * 2 ** 20, boot: { kernel: '/img/vmlinuz' }, disks: [], accel: 'tcg', runDir: '/r', consoleLog: '/c',
    nics: [{ id: 'eth0', tap: '', mac: '0a:68:67:00:00:01', user: { forwards: [{ proto: 'tcp', address: 'localhost', hostPort: 8080, guestPort: 80 }] } }],
  }), /not an IPv4 address/);
});

test('launch --network: a plain name stays `network`; options make a NIC request with rates', () => {
  assert.deepEqual(launchRequest('tiny', 'a', { network: ['lan'], start: true }).network, 'lan');
  assert.deepEqual(launchRequest('tiny', 'a', { network: ['lan,rate=10mbit'], start: true }).nics, [{ network: 'lan', ingress: '10mbit', egress: '10mbit' }]);
  assert.deepEqual(launchRequest('tiny', 'a', { network: ['lan,egress=1mbit', 'user'], start: true }).nics, [{ network: 'lan', egress: '1mbit' }, { network: 'user' }]);
  assert.throws(() => launchRequest('tiny', 'a', { network: ['lan,speed=1'], start: true }), /not ingress=RATE/);
  assert.throws(() => launchRequest('tiny', 'a', { network: ['lan', 'none'], start: true }), /cannot go with other networks/);
});
