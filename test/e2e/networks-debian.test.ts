/**
 * Two real Debian servers on the `default` network, all inside a network
 * namespace this test creates (the daemon, its bridges, dnsmasqs and VMs
 * live there; nothing is sent anywhere else). Both debian-12 VMs (QEMU,
 * TCG on our hosts) boot at once and are reused for every check:
 *
 * - each gets a DHCP lease that `hangar list` shows; they ping each other
 *   by name (NAME and NAME.hangar) and reach their gateway;
 * - IPv6: each takes its SLAAC address (from the MAC) from the network's
 *   router advertisements, they ping6 each other and the gateway, `hangar
 *   show` lists the address; a forged IPv6 source address is dropped (and
 *   counted) while the VM's own traffic passes;
 * - a rogue DHCP server in one guest (python3 on UDP port 67) is filtered:
 *   the other guest's DHCP still gets its offer and lease from Hangar's
 *   dnsmasq only, and the rogue's offers are counted as dropped;
 * - a VM on another network (the tiny image) reaches its own gateway but
 *   neither Debian VM.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { startDaemon, waitOperation, ConsoleSession, type TestDaemon } from '../helpers/daemon.js';
import { runHangar, expectOk, type CliResult } from '../helpers/cli.js';
import { TINY_PROMPT } from '../../src/host/images/tiny.js';
import { linkLocalAddress, parsePrefix, slaacAddress } from '../../src/host/network/addressing6.js';
import { counterOf, fromTapRules } from '../helpers/nft.js';

const isRoot = process.getuid?.() === 0;
const haveTools = ['/usr/sbin/dnsmasq', '/usr/sbin/nft'].every((f) => fs.existsSync(f));
const imageDir = process.env.HANGAR_IMAGE_DIR;
const haveDebian = imageDir !== undefined && fs.existsSync(path.join(imageDir, 'debian-12', 'image.json'));
/** What every test here needs (the daemon in a namespace of ours); the Debian test also needs the image. */
const skipNet = !isRoot ? 'needs root (namespaces, bridges)' : !haveTools ? 'needs dnsmasq and nft' : false;
const skip = skipNet || (!haveDebian ? `needs the debian-12 image (no debian-12/image.json in HANGAR_IMAGE_DIR=${imageDir ?? 'unset'})` : false);

const NS = `hgt-e${process.pid % 100000}`;
const A = 'deb-a';
const B = 'deb-b';
/** Generous bound for two TCG boots at once on a busy 2-core host; a quiet one takes a fraction. */
const BOOT_LIMIT_MS = 900_000;
let d: TestDaemon | null = null;
let nsMade = false;

const inNs = (...args: string[]): string => execFileSync('ip', ['netns', 'exec', NS, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function api(method: string, p: string, body?: unknown): Promise<any> {
  const r = await d!.request(method, p, body);
  assert.ok(r.status < 300, `${method} ${p}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.metadata;
}

const hangar = (args: string[], input?: string): Promise<CliResult> =>
  runHangar(args, { env: d!.env, timeoutMs: 300_000, ...(input !== undefined ? { input } : {}) });

/** `hangar exec VM -- sh -c SCRIPT`, retried while the guest agent does not answer yet (the guest is booting). */
async function sh(vm: string, script: string, limitMs = 0, input?: string): Promise<CliResult> {
  const end = Date.now() + limitMs;
  const timeout = ['--timeout', String(Math.max(60, Math.ceil(limitMs / 1000)))];
  for (;;) {
    const r = await hangar(['exec', vm, ...timeout, ...(input !== undefined ? ['--stdin'] : []), '--', 'sh', '-c', script], input);
    if (r.code !== 5 || !/AGENT_UNAVAILABLE/.test(r.stderr)) return r;
    if (Date.now() > end) assert.fail(`no guest agent in ${vm} within ${limitMs / 1000} s: ${r.stderr}`);
    await sleep(3000);
  }
}

/** Runs `script` in the guest until it exits 0 (the guest may still be configuring itself); the last result. */
async function until(vm: string, script: string, tries = 30): Promise<CliResult> {
  let r = await sh(vm, script);
  for (let i = 1; i < tries && r.code !== 0; i++) {
    await sleep(2000);
    r = await sh(vm, script);
  }
  return r;
}

/** The packet count of the rule in this TAP's chain of the bridge table that contains `match`. */
function dropCount(tap: string, match: string): number {
  const table = inNs('nft', 'list', 'table', 'bridge', 'hangar');
  const rules = fromTapRules(table, tap);
  assert.ok(rules, `no chain for ${tap}:\n${table}`);
  return counterOf(rules, match);
}

/** A DHCP server that offers 10.250.0.99 to every DISCOVER it hears, for `secs` seconds; prints how many offers it sent. */
const ROGUE_DHCP = `
import os, socket, struct, sys, time
open('/tmp/rogue.pid', 'w').write(str(os.getpid()))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, 25, sys.argv[3].encode())
s.bind(('', 67))
s.settimeout(1)
me = socket.inet_aton(sys.argv[2])
sent, end = 0, time.time() + float(sys.argv[1])
while time.time() < end:
    try:
        m = s.recv(2048)
    except socket.timeout:
        continue
    if len(m) < 240 or m[0] != 1:
        continue
    opts = bytes([53, 1, 2, 54, 4]) + me + bytes([1, 4, 255, 255, 255, 0, 3, 4]) + me + bytes([51, 4, 0, 0, 14, 16, 255])
    reply = bytes([2, 1, 6, 0]) + m[4:8] + bytes(8) + socket.inet_aton('10.250.0.99') + me + bytes(4) + m[28:44] + bytes(192) + m[236:240] + opts
    s.sendto(reply, ('255.255.255.255', 68))
    sent += 1
    print('offers', sent, flush=True)
`;

before(async () => {
  if (skipNet) return;
  execFileSync('ip', ['netns', 'add', NS]);
  nsMade = true;
  inNs('ip', 'link', 'set', 'lo', 'up');
  d = await startDaemon({ netns: NS });
});

after(async () => {
  // dnsmasq is its own daemon (it outlives hangard by design): ours are stopped by their verified pids.
  const pids: number[] = [];
  const netDir = d ? path.join(d.dataDir, 'networks') : null;
  for (const dir of netDir && fs.existsSync(netDir) ? fs.readdirSync(netDir) : []) {
    try { pids.push(Number(fs.readFileSync(path.join(netDir!, dir, 'dnsmasq.pid'), 'utf8'))); } catch { /* none */ }
  }
  for (const pid of pids) {
    try { if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(d!.dataDir)) process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
  }
  await d?.cleanup();
  if (nsMade) spawnSync('ip', ['netns', 'del', NS]);
});

test('two debian-12 VMs on default: leases, names, gateway, IPv6 by RA, spoofed IPv6 and a rogue DHCP server filtered, other networks apart', { skip, timeout: BOOT_LIMIT_MS + 300_000 }, async (t) => {
  // image.json alone is not a built image: ask the daemon, which lists a built-in image as `ready` only when all
  // its files are there (else creating the VMs would start a build, inside this namespace with no way out).
  const image = await d!.request('GET', '/1.0/images/debian-12');
  const status = image.status === 200 ? image.body.metadata.status : `not found (${image.status})`;
  if (status !== 'ready') { t.skip(`debian-12 is not ready in ${imageDir} (status ${status})`); return; }
  const started = Date.now();
  // Both boot at once (no --network: a cloud image joins `default`).
  // The creates go one after the other (each returns once QEMU runs; the guests then boot side by side):
  // two creates from one image at once race in the storage pool (one of them finds no root volume).
  for (const name of [A, B]) {
    const o = await waitOperation(d!, await d!.request('POST', '/1.0/vms', { name, image: 'debian-12', memory: '512M' }));
    assert.equal(o.status, 'success', JSON.stringify(o.error));
  }
  const def = await api('GET', '/1.0/networks/default');
  assert.equal(def.kind, 'nat');
  assert.match(def.ipv6, /^fd[0-9a-f]{2}:[0-9a-f:]+::\/64$/, 'default has a unique local /64');
  assert.equal(def.status.ipv6, true, JSON.stringify(def.status));
  const prefix = parsePrefix(def.ipv6)!;
  const vmA = await api('GET', `/1.0/vms/${A}`);
  const vmB = await api('GET', `/1.0/vms/${B}`);
  const [macA, macB] = [vmA.spec.nics[0].mac, vmB.spec.nics[0].mac];
  const [tapA, tapB] = [vmA.runtime.nics[0].tap, vmB.runtime.nics[0].tap];

  // While the Debians boot: a tiny VM on another network.
  await api('POST', '/1.0/networks', { name: 'other' });
  const other = await api('GET', '/1.0/networks/other');
  const top = await waitOperation(d!, await d!.request('POST', '/1.0/vms', { name: 'o1', image: 'tiny', memory: '128M', network: 'other' }));
  assert.equal(top.status, 'success', JSON.stringify(top.error));
  const con = await ConsoleSession.open(d!, 'o1');
  await con.waitForPrompt(TINY_PROMPT);
  await con.run(`printf '#!/bin/sh\\n[ "$1" = bound ] && ip addr add $ip/$mask dev $interface && ip route add default via $router\\nexit 0\\n' > /tmp/u.sh; chmod +x /tmp/u.sh`);
  assert.match(await con.run('ip link set eth0 up; udhcpc -i eth0 -n -q -t 15 -T 1 -s /tmp/u.sh', 60_000), /lease of \S+ obtained/);

  // --- leases, shown by `hangar list` ------------------------------------------------------
  // Up: the guest agent answers (short commands only: a long `cloud-init status --wait` through the agent
  // was cut short once, exit 128, on a host at load 13).
  for (const vm of [A, B]) {
    const r = await sh(vm, 'true', BOOT_LIMIT_MS);
    assert.equal(r.code, 0, r.stderr);
  }
  // The guest names its NIC itself (enp0s7 and the like): found by its MAC.
  const ifname = async (vm: string, mac: string): Promise<string> => (await sh(vm, `ip -br link | awk 'tolower($3) == "${mac}" {print $1}'`)).stdout.trim();
  const [ifA, ifB] = [await ifname(A, macA), await ifname(B, macB)];
  assert.ok(ifA && ifB, `the guests' NICs: ${ifA} ${ifB}`);
  t.diagnostic(`both Debian VMs up (agent answers, cloud-init done) after ${((Date.now() - started) / 1000).toFixed(0)} s`);
  const leased = async (vm: string): Promise<string | null> => {
    for (let i = 0; i < 150; i++) {
      const ip = (await api('GET', `/1.0/vms/${vm}`)).runtime.nics[0].ipv4 as string | null;
      if (ip) return ip;
      await sleep(2000);
    }
    return null;
  };
  const ipA = (await leased(A))!;
  const ipB = (await leased(B))!;
  assert.ok(ipA && ipB && ipA !== ipB, `leases: ${ipA} ${ipB}`);
  const list = expectOk(await hangar(['list']), 'hangar list').stdout;
  for (const [vm, ip] of [[A, ipA], [B, ipB]]) assert.match(list, new RegExp(`^${vm}\\s.*\\s${ip.replace(/\./g, '\\.')}\\s*$`, 'm'), list);

  // --- by name, both ways, and the gateway --------------------------------------------------
  // (until: the guest's DHCP client writes the search domain into resolv.conf a moment after the lease.)
  assert.equal((await until(A, `ping -c 1 -W 5 ${B}`, 20)).code, 0, `${A} pings ${B} by name`);
  assert.equal((await sh(A, `ping -c 1 -W 5 ${B}.hangar`)).code, 0, `${A} pings ${B}.hangar`);
  assert.equal((await until(B, `ping -c 1 -W 5 ${A}.hangar`, 20)).code, 0, `${B} pings ${A}.hangar`);
  const byName = await sh(A, `getent ahostsv4 ${B}.hangar`);
  assert.match(byName.stdout, new RegExp(`^${ipB.replace(/\./g, '\\.')}\\s`, 'm'), `${B}.hangar resolves to its lease: ${byName.stdout}`);
  assert.equal((await sh(A, `ping -c 1 -W 5 ${def.gateway}`)).code, 0, 'the gateway answers');

  // --- IPv6: SLAAC from the router advertisements, ping6 each other and the gateway ---------
  const [v6A, v6B] = [slaacAddress(prefix, macA), slaacAddress(prefix, macB)];
  for (const [vm, addr, dev] of [[A, v6A, ifA], [B, v6B, ifB]] as const) {
    const r = await until(vm, `ip -6 -o addr show dev ${dev} scope global | grep -q ' ${addr}/64'`);
    assert.equal(r.code, 0, `${vm} took ${addr} by SLAAC: ${(await sh(vm, `ip -6 addr show dev ${dev}`)).stdout}`);
  }
  assert.equal((await sh(A, `ping -6 -c 1 -W 5 ${v6B}`)).code, 0, 'ping6 between the VMs');
  assert.equal((await sh(B, `ping -6 -c 1 -W 5 ${v6A}`)).code, 0, 'ping6 back');
  assert.equal((await sh(A, `ping -6 -c 1 -W 5 ${def.gateway6}`)).code, 0, 'ping6 of the gateway');
  assert.equal((await sh(B, `ping -6 -c 1 -W 5 ${def.gateway6}`)).code, 0);
  assert.ok((await api('GET', `/1.0/vms/${A}`)).runtime.nics[0].ipv6.includes(v6A), 'the API lists the IPv6 address');
  assert.match(expectOk(await hangar(['show', A]), 'show').stdout, new RegExp(v6A), '`hangar show` lists it');
  const aaaa = await until(A, `getent ahostsv6 ${B}.hangar | grep -q '^${v6B} '`, 10);
  t.diagnostic(`${B}.hangar has its AAAA record (dnsmasq ra-names): ${aaaa.code === 0}`);

  // --- a forged IPv6 source is dropped; its own still passes ----------------------------------
  const forged = `${def.ipv6.replace('::/64', '')}::bad:1`;
  const before6 = dropCount(tapA, 'ip6 saddr !=');
  const spoof = await sh(A, `ip -6 addr add ${forged}/64 dev ${ifA} nodad; ping -6 -c 2 -W 3 -I ${forged} ${v6B}; rc=$?; ip -6 addr del ${forged}/64 dev ${ifA}; exit $rc`);
  assert.notEqual(spoof.code, 0, `a forged IPv6 source is dropped: ${spoof.stdout}`);
  assert.ok(dropCount(tapA, 'ip6 saddr !=') > before6, 'and counted');
  assert.equal((await sh(A, `ping -6 -c 1 -W 5 ${v6B}`)).code, 0, 'its own address still passes');
  // (nft lists the set sorted and leaves out the implied `ether type ip6`.)
  const rule6 = fromTapRules(inNs('nft', 'list', 'table', 'bridge', 'hangar'), tapA)!.find((l) => l.includes('ip6 saddr !='))!;
  for (const allowed of ['::', linkLocalAddress(macA), v6A]) assert.ok(rule6.includes(` ${allowed},`) || rule6.includes(` ${allowed} }`), `${allowed} in ${rule6}`);

  // --- a rogue DHCP server in B: A's DHCP still gets Hangar's offer only ----------------------
  expectOk(await sh(B, 'cat > /tmp/rogue.py', 0, ROGUE_DHCP), 'write the rogue server');
  expectOk(await sh(B, `setsid -f python3 /tmp/rogue.py 120 ${ipB} ${ifB} </dev/null >/tmp/rogue.log 2>&1; sleep 2`), 'start the rogue server');
  const rogueBefore = dropCount(tapB, 'udp sport 67');
  const dhcp = await sh(A, `timeout 60 dhclient -1 -v -sf /bin/true -lf /tmp/probe.leases -pf /tmp/probe.pid ${ifA} >/tmp/probe.log 2>&1; rc=$?; kill $(cat /tmp/probe.pid) 2>/dev/null; cat /tmp/probe.log; exit $rc`, 90_000);
  const rogueLog = (await sh(B, 'cat /tmp/rogue.log; kill $(cat /tmp/rogue.pid)')).stdout;
  assert.equal(dhcp.code, 0, `the victim's DHCP completes: ${dhcp.stdout}`);
  assert.match(dhcp.stdout, new RegExp(`DHCPACK of ${ipA.replace(/\./g, '\\.')} from ${def.gateway.replace(/\./g, '\\.')}`), dhcp.stdout);
  assert.doesNotMatch(dhcp.stdout, new RegExp(`10\\.250\\.0\\.99|from ${ipB.replace(/\./g, '\\.')}`), 'no rogue offer reached the victim');
  assert.match(rogueLog, /offers [1-9]/, `the rogue server did answer: ${rogueLog}`);
  assert.ok(dropCount(tapB, 'udp sport 67') > rogueBefore, 'its offers were dropped at its TAP');
  assert.equal((await sh(A, `ping -c 1 -W 5 ${B}`)).code, 0, 'the victim\'s traffic is unaffected');

  // --- another network reaches neither Debian VM ---------------------------------------------
  assert.match(await con.run(`ping -c 1 -W 5 ${other.gateway}`, 30_000), /1 packets received/, 'its own gateway answers');
  for (const ip of [ipA, ipB, def.gateway]) assert.match(await con.run(`ping -c 1 -W 3 ${ip}`, 30_000), /0 packets received/, `${ip} is not reachable from "other"`);
  await con.close();

  // --- everything goes, nothing is left ------------------------------------------------------
  for (const vm of [A, B, 'o1']) assert.equal((await waitOperation(d!, await d!.request('DELETE', `/1.0/vms/${vm}?force=true`))).status, 'success');
  await api('DELETE', '/1.0/networks/default');
  await api('DELETE', '/1.0/networks/other');
  const left = (JSON.parse(inNs('ip', '-j', 'link', 'show')) as Array<{ ifname: string }>).map((l) => l.ifname).filter((n) => n !== 'lo');
  assert.deepEqual(left, [], 'no links left');
  assert.equal(spawnSync('ip', ['netns', 'exec', NS, 'nft', 'list', 'table', 'bridge', 'hangar']).status, 1, 'no nft table left');
  t.diagnostic(`suite time ${((Date.now() - started) / 1000).toFixed(0)} s`);
});

test('a host without IPv6: networks run IPv4 only and say so', { skip: skipNet, timeout: 60_000 }, async () => {
  // The daemon's namespace with IPv6 switched off (sysctl, in our namespace only).
  inNs('sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
  try {
    const n = await api('POST', '/1.0/networks', { name: 'v4only' });
    assert.match(n.ipv6, /^fd/, 'the prefix is kept for when IPv6 comes back');
    assert.equal(n.status.ipv6, false);
    assert.match(n.status.ipv6Unavailable, /IPv6 is disabled on this host/);
    assert.equal(typeof n.status.dnsmasqPid, 'number', 'DHCP and DNS still run');
    assert.doesNotMatch(fs.readFileSync(path.join(d!.dataDir, 'networks', 'v4only', 'dnsmasq.conf'), 'utf8'), /enable-ra/);
    assert.doesNotMatch(inNs('nft', 'list', 'table', 'inet', 'hangar'), /ip6 saddr/);
    assert.match(expectOk(await hangar(['network', 'show', 'v4only']), 'network show').stdout, /not in use: IPv6 is disabled on this host/);
    const none = await api('POST', '/1.0/networks', { name: 'nov6', ipv6: 'none' });
    assert.equal(none.ipv6, null);
    assert.equal((await d!.request('POST', '/1.0/networks', { name: 'bad6', ipv6: 'fd00::1/64' })).status, 400, 'host bits set');
    await api('DELETE', '/1.0/networks/v4only');
    await api('DELETE', '/1.0/networks/nov6');
  } finally {
    inNs('sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=0', 'net.ipv6.conf.default.disable_ipv6=0');
  }
});
