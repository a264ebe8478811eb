/**
 * The network manager: networks as API resources (records in SQLite) and
 * their realisation in the daemon's network namespace — a bridge with the
 * gateway address, a dnsmasq for DHCP and DNS, Hangar's nftables table —
 * plus the TAP of each NIC while its VM runs (docs/networking.md).
 *
 * Host changes are serialised (one at a time), and each is idempotent, so
 * the same code creates a network, repairs it, and reconciles after a
 * daemon restart. What exists on the host outlives the daemon: a daemon
 * crash does not cut running VMs off.
 */
import fs from 'node:fs';
import path from 'node:path';
import { HangarError, toHangarError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import type { HostForward, NicAttachment, VmHandle } from '../../engines/engine.js';
import type { Store, VmRecord } from '../store.js';
import type { Network, NetworkCreateRequest, NetworkUpdateRequest, PortForward, PortForwardRequest, VmNic, VmNicRequest, VmNicState } from './schemas.js';
import { DEFAULT_NETWORK, NETWORK_NAME_RULE, NO_NETWORK, USER_NETWORK, isNetworkName } from './schemas.js';
import { isDeviceId } from '../../api/names.js';
import {
  BRIDGE_PREFIX, TAP_PREFIX, checkSubnet, contains, dhcpRange, formatCidr, formatIpv4, gatewayOf, isLocalUnicastMac, macFor,
  newBridgeName, overlaps, parseCidr, parseIpv4, pickFreeSubnet, tapNameFor, type Subnet,
} from './addressing.js';
import {
  addressesOf, deleteOwnLink, enableIpv4Forwarding, enableIpv6Forwarding, enableRouteLocalnet, ensureBridge, ensureTap, getLink, ipv6Neighbours, ipv6Unavailable,
  listLinks, ownerAlias, reattachTap, setBridgeIpv6, usedSubnets,
} from './links.js';
import {
  IPV6_AUTO, IPV6_NONE, checkPrefix, formatPrefix, gateway6, linkLocalAddress, newUlaPrefix, parsePrefix, samePrefix, slaacAddress, type Prefix64,
} from './addressing6.js';
import { dnsmasqFiles, findDnsmasq, readLeases, renderDnsmasqConfig, startDnsmasq, stopDnsmasq, type DhcpReservation } from './dnsmasq.js';
import { applyFirewall, firewallPresent, type FirewallForward, type FirewallNetwork, type FirewallPort } from './firewall.js';
import { ForwardRecords, NetworkRecords, type ForwardRecord, type NetworkRecord } from './records.js';
import { parseRate } from './rates.js';

export interface NetworkManagerDeps {
  dataDir: string;
  store: Store;
  log: Logger;
  /**
   * The network a cloud image's VM joins when its create request names none
   * (`hangard --default-network`): absent means `default` (made on first
   * use), null means none.
   */
  defaultNetwork?: string | null;
}

/** VM states in which a VM has a process, hence TAPs. */
const LIVE_STATES = new Set(['starting', 'running', 'paused', 'stopping']);

export const MAX_NICS = 8;

/** What the network manager needs of the daemon's VMs to change NICs of a running one. */
export interface NetworkVmAccess {
  withLock<T>(name: string, fn: () => Promise<T>): Promise<T>;
  handleOf(name: string): VmHandle | null;
}

export class NetworkManager {
  private readonly records: NetworkRecords;
  private readonly forwards: ForwardRecords;
  private readonly alias: string;
  private chain: Promise<unknown> = Promise.resolve();
  private vms: NetworkVmAccess | null = null;

  constructor(private readonly d: NetworkManagerDeps) {
    this.records = new NetworkRecords(d.store.sqlite);
    this.forwards = new ForwardRecords(d.store.sqlite);
    this.alias = ownerAlias(d.dataDir);
  }

  /** Runs host changes one at a time. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  dir(name: string): string {
    return path.join(this.d.dataDir, 'networks', name);
  }

  // --- reading -------------------------------------------------------------

  /** VMs with a NIC on the network. */
  usedBy(network: string): string[] {
    return this.d.store.listVms().filter((v) => (v.spec.nics ?? []).some((n) => n.network === network)).map((v) => v.name);
  }

  private toNetwork(r: NetworkRecord): Network {
    const subnet = r.subnet ? parseCidr(r.subnet) : null;
    const link = getLinkQuietly(r.bridge);
    const prefix = r.ipv6 ? parsePrefix(r.ipv6) : null;
    const v6off = prefix ? ipv6Unavailable() : null;
    return {
      name: r.name,
      kind: r.kind,
      subnet: r.subnet,
      gateway: subnet ? formatIpv4(gatewayOf(subnet)) : null,
      ipv6: r.ipv6,
      gateway6: prefix ? gateway6(prefix) : null,
      bridge: r.bridge,
      description: r.description,
      createdAt: r.createdAt,
      usedBy: this.usedBy(r.name),
      status: {
        bridge: link !== null && link.up,
        dnsmasqPid: r.kind === 'bridged' ? null : findDnsmasq(dnsmasqFiles(this.dir(r.name))),
        ipv6: prefix !== null && v6off === null && link !== null,
        ipv6Unavailable: v6off,
      },
    };
  }

  list(): Network[] {
    return this.records.list().map((r) => this.toNetwork(r));
  }

  async show(name: string): Promise<Network> {
    if (name === DEFAULT_NETWORK && !this.records.get(name)) await this.ensureDefault();
    return this.toNetwork(this.records.require(name));
  }

  /** NICs of a VM with their TAP and the address DHCP leased to each. */
  nicStates(vm: VmRecord): VmNicState[] {
    const leasesByNet = new Map<string, Map<string, string>>();
    const seen6 = new Map<string, Map<string, string[]>>();
    return (vm.spec.nics ?? []).map((n) => {
      // A user-mode NIC has no TAP, and its address is QEMU's business (not reachable from the host).
      if (n.network === USER_NETWORK) return { name: n.name, network: n.network, mac: n.mac, tap: '', ipv4: null, ipv6: [] };
      let leases = leasesByNet.get(n.network);
      if (!leases) {
        leases = new Map(readLeases(dnsmasqFiles(this.dir(n.network))).map((l) => [l.mac, l.ipv4]));
        leasesByNet.set(n.network, leases);
      }
      return { name: n.name, network: n.network, mac: n.mac, tap: tapNameFor(vm.id, n.name), ipv4: leases.get(n.mac.toLowerCase()) ?? null, ipv6: this.ipv6Seen(n, seen6) };
    });
  }

  /** The global IPv6 addresses the host's neighbour table holds for a NIC (none without IPv6). */
  private ipv6Seen(n: VmNic, cache: Map<string, Map<string, string[]>>): string[] {
    const net = this.records.get(n.network);
    if (!net || !this.activeIpv6(net)) return [];
    let table = cache.get(net.bridge);
    if (!table) {
      try { table = ipv6Neighbours(net.bridge); } catch { table = new Map(); }
      cache.set(net.bridge, table);
    }
    return table.get(n.mac.toLowerCase()) ?? [];
  }

  /** A network's /64 when IPv6 is on for it: it has one and the host has IPv6. */
  private activeIpv6(r: NetworkRecord): Prefix64 | null {
    if (r.kind === 'bridged' || !r.ipv6 || ipv6Unavailable() !== null) return null;
    return parsePrefix(r.ipv6);
  }

  /** `ipv6` of a create or update request → the /64 to record (null: none); absent or "auto": a new unique local /64. */
  private chooseIpv6(setting: string | undefined, except: string | null): string | null {
    if (setting === IPV6_NONE) return null;
    const others = this.records.list().filter((r) => r.name !== except && r.ipv6).map((r) => ({ name: r.name, p: parsePrefix(r.ipv6!)! }));
    if (setting === undefined || setting === IPV6_AUTO) {
      for (;;) {
        const p = newUlaPrefix();
        if (!others.some((o) => samePrefix(o.p, p))) return formatPrefix(p);
      }
    }
    const p = checkPrefix(setting);
    const clash = others.find((o) => samePrefix(o.p, p));
    if (clash) throw new HangarError('ALREADY_EXISTS', `IPv6 subnet ${setting} is network "${clash.name}"'s`, { field: 'ipv6' });
    return formatPrefix(p);
  }

  // --- networks --------------------------------------------------------------

  create(req: NetworkCreateRequest): Promise<Network> {
    return this.serial(async () => this.toNetwork(await this.createLocked(req)));
  }

  private async createLocked(req: NetworkCreateRequest): Promise<NetworkRecord> {
    if (!isNetworkName(req.name) || req.name === NO_NETWORK || req.name === USER_NETWORK) {
      throw new HangarError('INVALID_ARGUMENT', `network name ${JSON.stringify(req.name)} is not valid: ${NETWORK_NAME_RULE}, and not "${NO_NETWORK}" or "${USER_NETWORK}"`, { field: 'name' });
    }
    if (this.records.get(req.name)) throw new HangarError('ALREADY_EXISTS', `a network named "${req.name}" already exists`, { network: req.name });
    const kind = req.kind ?? 'nat';
    let rec: NetworkRecord;
    const base = { name: req.name, kind, description: req.description ?? '', createdAt: new Date().toISOString() };
    if (kind === 'bridged') {
      if (req.subnet !== undefined) throw new HangarError('INVALID_ARGUMENT', 'a bridged network takes no subnet: addresses come from the LAN of its parent bridge', { field: 'subnet' });
      if (!req.parent) throw new HangarError('INVALID_ARGUMENT', 'a bridged network needs --parent: the existing host bridge its NICs join', { field: 'parent' });
      const parent = getLink(req.parent);
      if (!parent) throw new HangarError('NOT_FOUND', `host bridge ${req.parent} does not exist`, { field: 'parent' });
      if (parent.kind !== 'bridge') throw new HangarError('INVALID_ARGUMENT', `host link ${req.parent} is not a bridge (it is ${parent.kind ?? 'a plain link'})`, { field: 'parent' });
      if (parent.alias === this.alias) throw new HangarError('INVALID_ARGUMENT', `${req.parent} is the bridge of a Hangar network: use that network instead`, { field: 'parent' });
      if (req.ipv6 !== undefined && req.ipv6 !== IPV6_NONE) throw new HangarError('INVALID_ARGUMENT', 'a bridged network takes no IPv6 subnet: addresses come from the LAN of its parent bridge', { field: 'ipv6' });
      rec = { ...base, subnet: null, ipv6: null, bridge: req.parent };
    } else {
      if (req.parent !== undefined) throw new HangarError('INVALID_ARGUMENT', `a ${kind} network has a bridge of its own; --parent is for bridged networks`, { field: 'parent' });
      const subnet = req.subnet !== undefined ? this.checkFreeSubnet(req.subnet, null) : pickFreeSubnet(this.takenSubnets(null));
      rec = { ...base, subnet: formatCidr(subnet), ipv6: this.chooseIpv6(req.ipv6, null), bridge: this.freeBridgeName() };
    }
    this.records.insert(rec);
    try {
      await this.realise(rec);
      await this.applyFirewall();
    } catch (e) {
      // Nothing half-made stays: the host side goes, then the record.
      await this.unrealise(rec).catch(() => undefined);
      this.records.delete(rec.name);
      await this.applyFirewall().catch(() => undefined);
      throw e;
    }
    this.d.log.info({ network: rec.name, kind: rec.kind, subnet: rec.subnet, ipv6: rec.ipv6, bridge: rec.bridge }, 'network created');
    if (rec.ipv6 && ipv6Unavailable()) this.d.log.warn({ network: rec.name, reason: ipv6Unavailable() }, 'network runs IPv4 only');
    return rec;
  }

  /** The `default` NAT network, created on first use. */
  ensureDefault(): Promise<NetworkRecord> {
    return this.serial(async () => this.records.get(DEFAULT_NETWORK) ?? this.createLocked({ name: DEFAULT_NETWORK, kind: 'nat', description: 'Default NAT network' }));
  }

  update(name: string, req: NetworkUpdateRequest): Promise<Network> {
    return this.serial(async () => {
      const cur = this.records.require(name);
      const next: NetworkRecord = { ...cur, ...(req.description !== undefined ? { description: req.description } : {}) };
      if (req.subnet !== undefined && req.subnet !== cur.subnet) {
        if (cur.kind === 'bridged') throw new HangarError('INVALID_ARGUMENT', 'a bridged network has no subnet of its own', { field: 'subnet' });
        const users = this.usedBy(name);
        if (users.length) throw new HangarError('INVALID_STATE', `network "${name}" is used by ${users.join(', ')}: its subnet can change only while no NIC uses it`, { network: name, usedBy: users });
        next.subnet = formatCidr(this.checkFreeSubnet(req.subnet, name));
      }
      if (req.ipv6 !== undefined) {
        if (cur.kind === 'bridged') {
          if (req.ipv6 !== IPV6_NONE) throw new HangarError('INVALID_ARGUMENT', 'a bridged network has no IPv6 subnet of its own', { field: 'ipv6' });
        } else {
          const wanted = req.ipv6 === IPV6_AUTO && cur.ipv6 ? cur.ipv6 : this.chooseIpv6(req.ipv6, name);
          if (wanted !== cur.ipv6) {
            const users = this.usedBy(name);
            if (users.length) throw new HangarError('INVALID_STATE', `network "${name}" is used by ${users.join(', ')}: its IPv6 subnet can change only while no NIC uses it`, { network: name, usedBy: users });
            next.ipv6 = wanted;
          }
        }
      }
      this.records.update(next);
      if (next.subnet !== cur.subnet || next.ipv6 !== cur.ipv6) {
        try {
          await this.realise(next);
          await this.applyFirewall();
        } catch (e) {
          this.records.update(cur);
          await this.realise(cur).catch(() => undefined);
          await this.applyFirewall().catch(() => undefined);
          throw e;
        }
      }
      return this.toNetwork(next);
    });
  }

  delete(name: string): Promise<void> {
    return this.serial(async () => {
      const rec = this.records.require(name);
      const users = this.usedBy(name);
      if (users.length) throw new HangarError('INVALID_STATE', `network "${name}" is used by ${users.join(', ')}: remove their NICs first`, { network: name, usedBy: users });
      await this.unrealise(rec);
      this.records.delete(name);
      await this.applyFirewall();
      this.d.log.info({ network: name }, 'network deleted');
    });
  }

  private takenSubnets(except: string | null): Subnet[] {
    const own = this.records.list().filter((r) => r.name !== except && r.subnet).map((r) => parseCidr(r.subnet!)!);
    // Our own bridges' addresses are counted through the records (a network being changed frees its own).
    const exceptBridge = except ? this.records.get(except)?.bridge : undefined;
    const host = exceptBridge ? usedSubnetsExcept(exceptBridge) : usedSubnets();
    return [...own, ...host];
  }

  private checkFreeSubnet(text: string, except: string | null): Subnet {
    const s = checkSubnet(text);
    const clash = this.records.list().find((r) => r.name !== except && r.subnet && overlaps(parseCidr(r.subnet)!, s));
    if (clash) throw new HangarError('ALREADY_EXISTS', `subnet ${text} overlaps network "${clash.name}" (${clash.subnet})`, { field: 'subnet' });
    const exceptBridge = except ? this.records.get(except)?.bridge : undefined;
    const host = (exceptBridge ? usedSubnetsExcept(exceptBridge) : usedSubnets()).find((h) => h.prefix > 0 && overlaps(h, s));
    if (host) throw new HangarError('ALREADY_EXISTS', `subnet ${text} overlaps ${formatCidr(host)}, which this host already uses`, { field: 'subnet' });
    return s;
  }

  private freeBridgeName(): string {
    const used = new Set([...listLinks().map((l) => l.name), ...this.records.list().map((r) => r.bridge)]);
    for (;;) {
      const n = newBridgeName();
      if (!used.has(n)) return n;
    }
  }

  // --- realisation -----------------------------------------------------------

  /** Reservations for a network: one per NIC on it, named after its VM (the first NIC of a VM carries the name). */
  private reservations(network: string): DhcpReservation[] {
    const out: DhcpReservation[] = [];
    for (const vm of this.d.store.listVms()) {
      let named = false;
      for (const n of vm.spec.nics ?? []) {
        if (n.network !== network) continue;
        out.push({ mac: n.mac, ...(named ? {} : { name: vm.name }), ...(n.ipv4 ? { ipv4: n.ipv4 } : {}) });
        named = true;
      }
    }
    return out;
  }

  /** Makes the host match the record: bridge, address, dnsmasq (restarted only when its config changed or it died). */
  private async realise(rec: NetworkRecord): Promise<void> {
    if (rec.kind === 'bridged') return;
    const subnet = parseCidr(rec.subnet!)!;
    const dir = this.dir(rec.name);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const fresh = ensureBridge(rec.bridge, this.alias, `${formatIpv4(gatewayOf(subnet))}/${subnet.prefix}`);
    if (rec.kind === 'nat') {
      enableIpv4Forwarding();
      enableRouteLocalnet(rec.bridge);
    }
    // IPv6 where the host has it; elsewhere the network runs IPv4 only (its status says why).
    const v6 = this.activeIpv6(rec);
    if (ipv6Unavailable() === null) setBridgeIpv6(rec.bridge, v6 ? `${gateway6(v6)}/64` : null);
    if (v6 && rec.kind === 'nat') {
      const kept = enableIpv6Forwarding();
      if (kept.length) this.d.log.info({ interfaces: kept }, 'IPv6 forwarding on: accept_ra=2 on interfaces whose default route came from router advertisements, so they keep it');
    }
    const files = dnsmasqFiles(dir);
    const conf = renderDnsmasqConfig({ dir, bridge: rec.bridge, subnet, routed: rec.kind === 'nat', reservations: this.reservations(rec.name), ...(v6 ? { ipv6: v6 } : {}) });
    let old = '';
    try { old = fs.readFileSync(files.conf, 'utf8'); } catch { /* first time */ }
    const pid = findDnsmasq(files);
    // A dnsmasq that served a bridge since recreated holds sockets bound to the old link: restarted.
    if (pid !== null && old === conf && !fresh) return;
    if (pid !== null) await stopDnsmasq(files);
    if (old !== conf) {
      // A lease for an address outside a changed subnet would only confuse dnsmasq.
      if (old !== '' && !old.includes(`interface=${rec.bridge}\n`)) fs.rmSync(files.leases, { force: true });
      fs.writeFileSync(files.conf, conf, { mode: 0o600 });
    }
    await startDnsmasq(files);
  }

  /** Removes the host side of a network: dnsmasq, our bridge, its folder (leases included). */
  private async unrealise(rec: NetworkRecord): Promise<void> {
    const dir = this.dir(rec.name);
    await stopDnsmasq(dnsmasqFiles(dir));
    if (rec.kind !== 'bridged') deleteOwnLink(rec.bridge, this.alias);
    fs.rmSync(dir, { recursive: true, force: true });
  }

  private applyFirewall(): Promise<void> {
    const nets: FirewallNetwork[] = this.records.list()
      .filter((r): r is NetworkRecord & { kind: 'nat' | 'isolated' } => r.kind !== 'bridged')
      .map((r) => {
        const v6 = this.activeIpv6(r);
        return { kind: r.kind, bridge: r.bridge, subnet: parseCidr(r.subnet!)!, ...(v6 ? { ipv6: v6 } : {}) };
      });
    const fw: FirewallForward[] = [];
    for (const f of this.forwards.list()) {
      const guestAddress = this.forwardTarget(f.vm);
      if (guestAddress) fw.push({ proto: f.proto, address: f.address, hostPort: f.hostPort, guestPort: f.guestPort, guestAddress });
    }
    // Every TAP of a VM that has (or is about to have) a process.
    const ports: FirewallPort[] = [];
    for (const vm of this.d.store.listVms()) {
      if (!LIVE_STATES.has(vm.state)) continue;
      for (const n of vm.spec.nics ?? []) {
        const net = this.records.get(n.network);
        if (!net) continue;
        const ipv4 = n.ipv4 ?? net.subnet ?? undefined;
        // IPv6: its link-local address, and its SLAAC address where the network has IPv6 (both follow from its MAC).
        const v6 = this.activeIpv6(net);
        const ipv6 = [linkLocalAddress(n.mac), ...(v6 ? [slaacAddress(v6, n.mac)] : [])];
        ports.push({
          tap: tapNameFor(vm.id, n.name), mac: n.mac.toLowerCase(), ...(net.kind !== 'bridged' && ipv4 ? { ipv4, ipv6 } : {}),
          ...(n.ingress ? { ingressBps: parseRate(n.ingress, 'ingress') } : {}), ...(n.egress ? { egressBps: parseRate(n.egress, 'egress') } : {}),
        });
      }
    }
    return applyFirewall(nets, fw, ports);
  }

  // --- port forwards -----------------------------------------------------------

  /** The NIC a VM's forwards go to: its first on a nat network. */
  private forwardNic(vm: VmRecord): VmNic | null {
    const nics = vm.spec.nics ?? [];
    return nics.find((n) => this.records.get(n.network)?.kind === 'nat') ?? nics.find((n) => n.network === USER_NETWORK) ?? null;
  }

  /** A VM's forwards as QEMU's user-mode network takes them (hostfwd). */
  private hostForwards(vmName: string): HostForward[] {
    return this.forwards.list(vmName).map((f) => ({ proto: f.proto, address: f.address, hostPort: f.hostPort, guestPort: f.guestPort }));
  }

  /** The running VM's process when its forwards go to a user-mode NIC (they are QEMU's hostfwd, changed live). */
  private userForwardTarget(vm: VmRecord, nic: VmNic): VmHandle | null {
    if (nic.network !== USER_NETWORK || !LIVE_STATES.has(vm.state)) return null;
    const handle = this.vms?.handleOf(vm.name) ?? null;
    if (handle && !handle.addHostForward) throw new HangarError('UNSUPPORTED', `engine ${vm.spec.engine} has no user-mode networking`, { name: vm.name });
    return handle;
  }

  /** The guest address of a VM's forwards: the reservation of its forward NIC. */
  private forwardTarget(vmName: string): string | null {
    const vm = this.d.store.getVm(vmName);
    return vm ? this.forwardNic(vm)?.ipv4 ?? null : null;
  }

  private toForward(f: ForwardRecord): PortForward {
    return { ...f, guestAddress: this.forwardTarget(f.vm) };
  }

  listForwards(vm?: string): PortForward[] {
    if (vm !== undefined) this.d.store.requireVm(vm);
    return this.forwards.list(vm).map((f) => this.toForward(f));
  }

  /**
   * Publishes a guest port. The VM's NIC on a nat network gets a reserved
   * address if it had none (the one it holds now, else a free one), so the
   * forward keeps pointing at the VM across restarts.
   */
  addForward(vmName: string, req: PortForwardRequest): Promise<PortForward> {
    return this.serial(async () => {
      const vm = this.d.store.requireVm(vmName);
      const nic = this.forwardNic(vm);
      if (!nic) throw new HangarError('INVALID_STATE', `VM "${vmName}" has no NIC on a nat network or on "${USER_NETWORK}": only those can be reached through a forward`, { name: vmName });
      const proto = req.proto ?? 'tcp';
      const address = req.address ?? '0.0.0.0';
      if (parseIpv4(address) === null) throw new HangarError('INVALID_ARGUMENT', `address ${address} is not an IPv4 address`, { field: 'address' });
      const clash = this.forwards.list().find((f) => f.proto === proto && f.hostPort === req.hostPort && (f.address === address || f.address === '0.0.0.0' || address === '0.0.0.0'));
      if (clash) throw new HangarError('ALREADY_EXISTS', `${proto} port ${req.hostPort} on ${clash.address} is already forwarded to VM "${clash.vm}"`, { field: 'hostPort' });
      if (nic.network === USER_NETWORK) return this.toForward(await this.addUserForward(vm, nic, { proto, address, hostPort: req.hostPort, guestPort: req.guestPort }));
      const net = this.records.require(nic.network);
      let pinned = false;
      if (!nic.ipv4) {
        const ipv4 = this.freeAddress(net, nic.mac);
        nic.ipv4 = ipv4;
        this.d.store.transaction(() => {
          const cur = this.d.store.requireVm(vmName);
          this.d.store.setVmSpec(vmName, { ...cur.spec, nics: (cur.spec.nics ?? []).map((n) => (n.name === nic.name ? { ...n, ipv4 } : n)) });
        });
        pinned = true;
      }
      const rec = this.forwards.insert({ vm: vmName, proto, address, hostPort: req.hostPort, guestPort: req.guestPort, createdAt: new Date().toISOString() });
      try {
        if (pinned) await this.realise(net);
        await this.applyFirewall();
      } catch (e) {
        this.forwards.delete(rec.id);
        await this.applyFirewall().catch(() => undefined);
        throw e;
      }
      this.d.log.info({ vm: vmName, ...req }, 'port forward added');
      return this.toForward(rec);
    });
  }

  /**
   * A forward to a user-mode NIC: QEMU itself listens on the host port
   * (hostfwd), added to a running VM at once and given to QEMU at every start.
   * QEMU runs unprivileged, so the port must be 1024 or above.
   */
  private async addUserForward(vm: VmRecord, nic: VmNic, f: HostForward): Promise<ForwardRecord> {
    if (f.hostPort < 1024) throw new HangarError('INVALID_ARGUMENT', `a forward to a user-mode NIC needs a host port of 1024 or above: QEMU listens on it itself, without privileges`, { field: 'hostPort' });
    const handle = this.userForwardTarget(vm, nic);
    const rec = this.forwards.insert({ vm: vm.name, ...f, createdAt: new Date().toISOString() });
    try {
      if (handle) await handle.addHostForward!(nic.name, f);
    } catch (e) {
      this.forwards.delete(rec.id);
      throw e;
    }
    this.d.log.info({ vm: vm.name, nic: nic.name, ...f }, 'port forward added (user-mode)');
    return rec;
  }

  /** The address DHCP gave this MAC, else the first host address nobody reserved or leased. */
  private freeAddress(net: NetworkRecord, mac: string): string {
    const leases = readLeases(dnsmasqFiles(this.dir(net.name)));
    const mine = leases.find((l) => l.mac === mac.toLowerCase());
    const reserved = new Set(this.d.store.listVms().flatMap((v) => v.spec.nics ?? []).filter((n) => n.network === net.name && n.ipv4).map((n) => n.ipv4!));
    if (mine && !reserved.has(mine.ipv4)) return mine.ipv4;
    const taken = new Set([...reserved, ...leases.map((l) => l.ipv4)]);
    const range = dhcpRange(parseCidr(net.subnet!)!);
    for (let ip = range.first; ip <= range.last; ip++) if (!taken.has(formatIpv4(ip))) return formatIpv4(ip);
    throw new HangarError('RESOURCE_EXHAUSTED', `network "${net.name}" has no free address left`);
  }

  removeForward(vmName: string, id: number): Promise<void> {
    return this.serial(async () => {
      const f = this.forwards.list(vmName).find((x) => x.id === id);
      if (!f) throw new HangarError('NOT_FOUND', `VM "${vmName}" has no port forward ${id}`, { id });
      const vm = this.d.store.requireVm(vmName);
      const nic = this.forwardNic(vm);
      const handle = nic ? this.userForwardTarget(vm, nic) : null;
      if (handle) await handle.removeHostForward!(nic!.name, { proto: f.proto, address: f.address, hostPort: f.hostPort, guestPort: f.guestPort });
      this.forwards.delete(id);
      await this.applyFirewall();
    });
  }

  /** A VM was deleted: its forwards and DHCP reservations go. */
  async forgetVm(vmName: string, networks: string[]): Promise<void> {
    const had = this.forwards.deleteForVm(vmName);
    if (networks.length || had) await this.refresh(networks);
  }

  /** A network's reservations changed (a VM or NIC came or went): dnsmasq gets the new ones. */
  refresh(networks: string[]): Promise<void> {
    return this.serial(async () => {
      for (const name of new Set(networks)) {
        const rec = this.records.get(name);
        if (rec) await this.realise(rec);
      }
      // Forwards follow the reservations they point at.
      await this.applyFirewall();
    });
  }

  // --- NICs ------------------------------------------------------------------

  private macsInUse(): Set<string> {
    const used = new Set<string>();
    for (const vm of this.d.store.listVms()) for (const n of vm.spec.nics ?? []) used.add(n.mac.toLowerCase());
    return used;
  }

  /**
   * The NICs of a new VM: `nics` when given, else one eth0 on `network`
   * (`none`: no NIC), else, for a cloud image (`cloudImage`), one on the
   * daemon's default network unless that is off. Networks must exist
   * (`default` is created on first use); MACs are chosen (stable, unique on
   * this host) where not given.
   */
  async planNics(vmName: string, req: { network?: string; nics?: VmNicRequest[]; engine?: string }, cloudImage: boolean): Promise<VmNic[]> {
    let wanted: VmNicRequest[];
    const fallback = this.d.defaultNetwork === undefined ? DEFAULT_NETWORK : this.d.defaultNetwork;
    if (req.nics !== undefined) wanted = req.nics;
    else if (req.network === NO_NETWORK) wanted = [];
    else if (req.network !== undefined) wanted = [{ network: req.network }];
    else wanted = cloudImage && fallback !== null ? [{ network: fallback }] : [];
    if (wanted.length > MAX_NICS) throw new HangarError('INVALID_ARGUMENT', `a VM has at most ${MAX_NICS} NICs`, { field: 'nics' });
    const nics: VmNic[] = [];
    for (const w of wanted) nics.push(await this.planNic(vmName, nics, w));
    if (nics.some((n) => n.network === USER_NETWORK)) requireUserMode(req.engine ?? 'qemu');
    return nics;
  }

  /** One more NIC beside `existing`: network checked, name and MAC chosen or checked, address checked. */
  async planNic(vmName: string, existing: VmNic[], w: VmNicRequest): Promise<VmNic> {
    if (!isNetworkName(w.network)) throw new HangarError('INVALID_ARGUMENT', `network name ${JSON.stringify(w.network)} is not valid: ${NETWORK_NAME_RULE}`, { field: 'network' });
    // `user`: QEMU's user-mode network, no record and nothing on the host.
    const net = w.network === USER_NETWORK ? null : w.network === DEFAULT_NETWORK ? await this.ensureDefault() : this.records.require(w.network);
    let name = w.name;
    if (name === undefined) {
      for (let i = 0; ; i++) if (!existing.some((n) => n.name === `eth${i}`)) { name = `eth${i}`; break; }
    }
    if (!isDeviceId(name)) throw new HangarError('INVALID_ARGUMENT', `NIC name ${JSON.stringify(name)} is not valid`, { field: 'name' });
    if (existing.some((n) => n.name === name)) throw new HangarError('ALREADY_EXISTS', `VM "${vmName}" already has a NIC named ${name}`, { nic: name });
    const used = this.macsInUse();
    for (const n of existing) used.add(n.mac.toLowerCase());
    let mac: string;
    if (w.mac !== undefined) {
      mac = w.mac.toLowerCase();
      if (!isLocalUnicastMac(mac)) throw new HangarError('INVALID_ARGUMENT', `MAC ${w.mac} must be a locally administered unicast address (first octet like x2, x6, xA or xE)`, { field: 'mac' });
      if (used.has(mac)) throw new HangarError('ALREADY_EXISTS', `MAC ${mac} is already used by another NIC on this host`, { field: 'mac' });
    } else {
      let attempt = 0;
      do mac = macFor(`${vmName}/${name}/${Date.now()}`, attempt++); while (used.has(mac));
    }
    const nic: VmNic = { name, network: net?.name ?? USER_NETWORK, mac };
    for (const dir of ['ingress', 'egress'] as const) {
      const rate = w[dir];
      if (rate === undefined) continue;
      if (!net) throw new HangarError('UNSUPPORTED', `a NIC on "${USER_NETWORK}" takes no rate limit: it has no TAP to police`, { field: dir });
      parseRate(rate, dir);
      nic[dir] = rate;
    }
    if (w.ipv4 !== undefined) {
      if (!net) throw new HangarError('INVALID_ARGUMENT', `a NIC on "${USER_NETWORK}" takes no address: QEMU's user-mode network hands out its own`, { field: 'ipv4' });
      nic.ipv4 = this.checkReservation(net, w.ipv4, existing);
    }
    return nic;
  }

  private checkReservation(net: NetworkRecord, ipv4: string, existing: VmNic[]): string {
    if (net.kind === 'bridged') throw new HangarError('INVALID_ARGUMENT', `network "${net.name}" is bridged: Hangar hands out no addresses there`, { field: 'ipv4' });
    const subnet = parseCidr(net.subnet!)!;
    const ip = parseIpv4(ipv4);
    const range = dhcpRange(subnet);
    if (ip === null || !contains(subnet, ip) || ip < range.first || ip > range.last) {
      throw new HangarError('INVALID_ARGUMENT', `address ${ipv4} is not a host address of ${net.name} (${formatIpv4(range.first)} to ${formatIpv4(range.last)})`, { field: 'ipv4' });
    }
    const taken = [...this.d.store.listVms().flatMap((v) => v.spec.nics ?? []), ...existing].find((n) => n.network === net.name && n.ipv4 === ipv4);
    if (taken) throw new HangarError('ALREADY_EXISTS', `address ${ipv4} is already reserved on ${net.name}`, { field: 'ipv4' });
    return ipv4;
  }

  /**
   * Before a VM starts: its networks are up, and each NIC has a TAP of ours
   * on the right bridge. Returns what the engine attaches. On failure the
   * TAPs made here are removed again.
   */
  attach(vm: VmRecord): Promise<NicAttachment[]> {
    const nics = vm.spec.nics ?? [];
    if (nics.length === 0) return Promise.resolve([]);
    return this.serial(async () => {
      const out: NicAttachment[] = [];
      try {
        for (const n of nics) {
          if (n.network === USER_NETWORK) {
            requireUserMode(vm.spec.engine);
            const fwd = this.forwardNic(vm)?.name === n.name ? this.hostForwards(vm.name) : [];
            out.push({ id: n.name, tap: '', mac: n.mac, user: { forwards: fwd } });
            continue;
          }
          const net = this.records.get(n.network);
          if (!net) throw new HangarError('NOT_FOUND', `NIC ${n.name} of VM "${vm.name}" is on network "${n.network}", which does not exist`, { network: n.network });
          await this.realise(net);
          if (net.kind === 'bridged' && !getLink(net.bridge)) throw new HangarError('UNAVAILABLE', `the parent bridge ${net.bridge} of network "${net.name}" does not exist`, { network: net.name });
          const tap = tapNameFor(vm.id, n.name);
          ensureTap(tap, this.alias, net.bridge);
          out.push({ id: n.name, tap, mac: n.mac });
        }
        // Its TAPs' anti-spoofing rules are in place before the guest can send a frame.
        await this.applyFirewall();
      } catch (e) {
        for (const a of out) if (!a.user) deleteOwnLink(a.tap, this.alias);
        throw e;
      }
      return out;
    });
  }

  /** After a VM's process ended: its TAPs go (synchronously, so a restart can make them again at once). */
  detach(vm: VmRecord): void {
    for (const n of vm.spec.nics ?? []) {
      if (n.network === USER_NETWORK) continue;
      try {
        deleteOwnLink(tapNameFor(vm.id, n.name), this.alias);
      } catch (e) {
        this.d.log.warn({ vm: vm.name, nic: n.name, err: toHangarError(e).message }, 'could not remove a TAP');
      }
    }
    // Its TAPs' rules go too (later: a rule naming a TAP that no longer exists matches nothing meanwhile).
    if (vm.spec.nics?.length) {
      void this.serial(() => this.applyFirewall()).catch((e: unknown) => this.d.log.warn({ err: toHangarError(e).message }, 'could not update the firewall'));
    }
  }

  /** The daemon's VMs: their locks and running processes (for NICs plugged in and out while they run). */
  useVms(access: NetworkVmAccess): void {
    this.vms = access;
  }

  private onVm<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.vms ? this.vms.withLock(name, fn) : fn();
  }

  /**
   * The process to plug a NIC into or out of, null when the VM is stopped;
   * refuses states where the NICs cannot change and engines that cannot hot-plug.
   */
  private hotTarget(vm: VmRecord, what: 'add' | 'remove'): VmHandle | null {
    if (vm.state === 'stopped' || vm.state === 'crashed') return null;
    const handle = vm.state === 'running' ? this.vms?.handleOf(vm.name) ?? null : null;
    if (!handle) {
      throw new HangarError('INVALID_STATE', `cannot ${what} a NIC while VM "${vm.name}" is ${vm.state}${vm.state === 'paused' ? ': resume it first (the guest takes part in hot-plug)' : ''}`, { name: vm.name, state: vm.state });
    }
    if (!(what === 'add' ? handle.attachNic : handle.detachNic)) {
      throw new HangarError('UNSUPPORTED', `engine ${vm.spec.engine} cannot ${what} NICs while the VM runs: stop VM "${vm.name}" first`, { name: vm.name, engine: vm.spec.engine });
    }
    return handle;
  }

  private setNics(vmName: string, change: (nics: VmNic[]) => VmNic[]): void {
    this.d.store.transaction(() => {
      const cur = this.d.store.requireVm(vmName);
      this.d.store.setVmSpec(vmName, { ...cur.spec, nics: change(cur.spec.nics ?? []) });
    });
  }

  /**
   * Adds a NIC: to a stopped VM's spec, or also plugged into a running QEMU
   * VM at once (its TAP made, on the bridge, under the anti-spoofing rules,
   * before the guest sees the device). A failed hot-plug leaves the VM as it was.
   */
  addNic(vmName: string, req: VmNicRequest): Promise<VmNic> {
    return this.onVm(vmName, async () => {
      const vm = this.d.store.requireVm(vmName);
      const handle = this.hotTarget(vm, 'add');
      const nics = vm.spec.nics ?? [];
      if (nics.length >= MAX_NICS) throw new HangarError('RESOURCE_EXHAUSTED', `VM "${vmName}" has ${MAX_NICS} NICs already`);
      const nic = await this.planNic(vmName, nics, req);
      this.setNics(vmName, (cur) => [...cur, nic]);
      if (!handle) {
        await this.refresh([nic.network]);
        return nic;
      }
      if (nic.network === USER_NETWORK) {
        try {
          requireUserMode(vm.spec.engine);
          await handle.attachNic!({ id: nic.name, tap: '', mac: nic.mac, user: { forwards: this.forwardNic(this.d.store.requireVm(vmName))?.name === nic.name ? this.hostForwards(vmName) : [] } });
        } catch (e) {
          this.setNics(vmName, (cur) => cur.filter((n) => n.name !== nic.name));
          throw e;
        }
        return nic;
      }
      const tap = tapNameFor(vm.id, nic.name);
      try {
        await this.serial(async () => {
          const net = this.records.require(nic.network);
          await this.realise(net);
          if (net.kind === 'bridged' && !getLink(net.bridge)) throw new HangarError('UNAVAILABLE', `the parent bridge ${net.bridge} of network "${net.name}" does not exist`, { network: net.name });
          ensureTap(tap, this.alias, net.bridge);
          await this.applyFirewall();
        });
        await handle.attachNic!({ id: nic.name, tap, mac: nic.mac });
      } catch (e) {
        try { deleteOwnLink(tap, this.alias); } catch { /* reconcile removes it later */ }
        this.setNics(vmName, (cur) => cur.filter((n) => n.name !== nic.name));
        await this.refresh([nic.network]).catch(() => undefined);
        throw e;
      }
      this.d.log.info({ vm: vmName, nic: nic.name, network: nic.network, tap }, 'NIC plugged in');
      return nic;
    });
  }

  /** Removes a NIC: from a stopped VM's spec, or unplugged from a running QEMU VM first (its TAP then goes). */
  removeNic(vmName: string, nicName: string): Promise<void> {
    return this.onVm(vmName, async () => {
      const vm = this.d.store.requireVm(vmName);
      const nic = (vm.spec.nics ?? []).find((n) => n.name === nicName);
      if (!nic) throw new HangarError('NOT_FOUND', `VM "${vmName}" has no NIC named ${nicName}`, { nic: nicName });
      const handle = this.hotTarget(vm, 'remove');
      if (handle && nic.network === USER_NETWORK) {
        await handle.detachNic!(nicName);
      } else if (handle) {
        await handle.detachNic!(nicName);
        try {
          deleteOwnLink(tapNameFor(vm.id, nicName), this.alias);
        } catch (e) {
          this.d.log.warn({ vm: vmName, nic: nicName, err: toHangarError(e).message }, 'could not remove a TAP');
        }
        this.d.log.info({ vm: vmName, nic: nicName }, 'NIC unplugged');
      }
      this.setNics(vmName, (cur) => cur.filter((n) => n.name !== nicName));
      await this.refresh([nic.network]);
    });
  }

  // --- recovery --------------------------------------------------------------

  /**
   * Daemon start (after VMs were reconciled): every recorded network is
   * realised again (missing bridges, dnsmasqs, the nft table come back),
   * running VMs' TAPs are put back on their bridges, and what Hangar made
   * but no longer needs goes: TAPs of VMs that do not run, bridges and
   * dnsmasqs of networks that are gone. Links without our alias are never touched.
   */
  reconcile(): Promise<void> {
    return this.serial(async () => {
      const recs = this.records.list();
      for (const r of recs) {
        try { await this.realise(r); } catch (e) { this.d.log.error({ network: r.name, err: toHangarError(e).message }, 'could not realise network'); }
      }
      try {
        // With no network, nft is asked only whether a table of ours is left (a daemon without networks may lack nft rights).
        if (recs.length > 0 || (await firewallPresent())) await this.applyFirewall();
      } catch (e) {
        this.d.log[recs.length ? 'error' : 'debug']({ err: toHangarError(e).message }, 'could not apply the firewall');
      }

      const wantedTaps = new Map<string, string>();
      for (const vm of this.d.store.listVms()) {
        if (!LIVE_STATES.has(vm.state)) continue;
        for (const n of vm.spec.nics ?? []) {
          const net = recs.find((r) => r.name === n.network);
          if (net) wantedTaps.set(tapNameFor(vm.id, n.name), net.bridge);
        }
      }
      for (const [tap, bridge] of wantedTaps) {
        try {
          if (!reattachTap(tap, this.alias, bridge)) this.d.log.warn({ tap }, 'a running VM\'s TAP is gone: the VM has no network until it restarts');
        } catch (e) { this.d.log.error({ tap, err: toHangarError(e).message }, 'could not put a TAP back on its bridge'); }
      }
      const bridges = new Set(recs.map((r) => r.bridge));
      for (const l of listLinks()) {
        if (l.alias !== this.alias) continue;
        const stale = (l.name.startsWith(TAP_PREFIX) && !wantedTaps.has(l.name)) || (l.name.startsWith(BRIDGE_PREFIX) && !bridges.has(l.name));
        if (stale && deleteOwnLink(l.name, this.alias)) this.d.log.info({ link: l.name }, 'removed a link Hangar no longer needs');
      }
      let dirs: string[] = [];
      try { dirs = fs.readdirSync(path.join(this.d.dataDir, 'networks')); } catch { /* none yet */ }
      for (const name of dirs) {
        const rec = recs.find((r) => r.name === name);
        if (rec && rec.kind !== 'bridged') continue;
        await stopDnsmasq(dnsmasqFiles(this.dir(name)));
        fs.rmSync(this.dir(name), { recursive: true, force: true });
        this.d.log.info({ network: name }, 'removed the files of a network that is gone');
      }
    });
  }
}

/** User-mode networking is QEMU's: other engines have none. */
function requireUserMode(engine: string): void {
  if (engine !== 'qemu') throw new HangarError('UNSUPPORTED', `the ${engine} engine has no user-mode networking: "${USER_NETWORK}" NICs are for QEMU VMs`, { field: 'network' });
}

function getLinkQuietly(name: string): ReturnType<typeof getLink> {
  try { return getLink(name); } catch { return null; }
}

/** The namespace's subnets, leaving out those of one bridge of ours (a network whose subnet is changing). */
function usedSubnetsExcept(bridge: string): Subnet[] {
  const own = new Set<string>();
  try {
    for (const a of addressesOf(bridge)) {
      const [addr, len] = a.split('/');
      const ip = parseIpv4(addr!);
      const prefix = Number(len);
      if (ip === null) continue;
      const m = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
      own.add(formatCidr({ base: (ip & m) >>> 0, prefix }));
      own.add(`${addr}/32`);
    }
  } catch { /* no link */ }
  return usedSubnets().filter((s) => !own.has(formatCidr(s)));
}
