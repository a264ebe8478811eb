/**
 * The API resources of virtual networks and NICs (docs/networking.md): one
 * TypeBox schema each, re-exported by src/host/api/schemas.ts, so they give
 * request validation, types and the OpenAPI document like every other resource.
 */
import { Type, type Static } from 'typebox';
import { DeviceId, MacAddress, VmName } from '../../api/names.js';
import { RATE_PATTERN, RATE_RULE } from './rates.js';

/** Network names: also parts of file paths under <dataDir>/networks. */
export const NETWORK_NAME_PATTERN = '^[a-z][a-z0-9-]{0,30}$';
export const NETWORK_NAME_RULE = 'lower-case letters, digits and dashes, starting with a letter, at most 31 characters';
const NETWORK_NAME_RE = new RegExp(NETWORK_NAME_PATTERN);
export const isNetworkName = (s: unknown): s is string => typeof s === 'string' && NETWORK_NAME_RE.test(s);
export const NetworkName = Type.String({ pattern: NETWORK_NAME_PATTERN, description: `Network name: ${NETWORK_NAME_RULE}` });

/** `none` in a create request means: no NIC at all. */
export const NO_NETWORK = 'none';
/** `user`: QEMU's user-mode network (no bridge, no privileges; forwards become QEMU hostfwd). Not a network record. */
export const USER_NETWORK = 'user';
/** The NAT network a VM joins when it asks for `default`; created on first use. */
export const DEFAULT_NETWORK = 'default';

export const NetworkKind = Type.Union([Type.Literal('nat'), Type.Literal('isolated'), Type.Literal('bridged')], {
  description: 'nat: own bridge, DHCP/DNS, outbound NAT; isolated: the same without forwarding; bridged: NICs join an existing host bridge',
});
export type NetworkKind = Static<typeof NetworkKind>;

const Ipv4 = Type.String({ pattern: '^(\\d{1,3})(\\.\\d{1,3}){3}$', description: 'An IPv4 address, e.g. 10.77.0.10' });
const Cidr = Type.String({ pattern: '^(\\d{1,3})(\\.\\d{1,3}){3}/\\d{1,2}$', description: 'An IPv4 subnet, e.g. 10.77.0.0/24 (prefix 16 to 28)' });
const Ipv6Setting = Type.String({
  pattern: '^(auto|none|[0-9a-fA-F:]{2,39}/64)$',
  description: 'IPv6 of a nat or isolated network: a /64 (e.g. fd12:3456:789a::/64), "auto" (a generated unique local /64; the default) or "none" (IPv4 only)',
});
const Rate = Type.String({ pattern: RATE_PATTERN, description: `Rate limit (${RATE_RULE}); ingress: what the guest receives, egress: what it sends` });
const HostLink = Type.String({ pattern: '^(?!\\.{1,2}$)[A-Za-z0-9_.-]{1,15}$', description: 'An existing host bridge (bridged networks)' });

/** POST /1.0/networks */
export const NetworkCreateRequest = Type.Object(
  {
    name: NetworkName,
    kind: Type.Optional(NetworkKind),
    subnet: Type.Optional(Cidr),
    ipv6: Type.Optional(Ipv6Setting),
    parent: Type.Optional(HostLink),
    description: Type.Optional(Type.String({ maxLength: 256 })),
  },
  { additionalProperties: false },
);
export type NetworkCreateRequest = Static<typeof NetworkCreateRequest>;

/** PATCH /1.0/networks/{name} */
export const NetworkUpdateRequest = Type.Object(
  {
    description: Type.Optional(Type.String({ maxLength: 256 })),
    subnet: Type.Optional(Cidr),
    ipv6: Type.Optional(Ipv6Setting),
  },
  { additionalProperties: false },
);
export type NetworkUpdateRequest = Static<typeof NetworkUpdateRequest>;

export const Network = Type.Object({
  name: NetworkName,
  kind: NetworkKind,
  /** nat and isolated: the subnet; bridged: null (the parent bridge's LAN assigns addresses). */
  subnet: Type.Union([Cidr, Type.Null()]),
  gateway: Type.Union([Ipv4, Type.Null()]),
  /** nat and isolated: the IPv6 /64 (null: IPv4 only); bridged: null. */
  ipv6: Type.Union([Type.String(), Type.Null()]),
  /** The host's IPv6 address on the bridge (PREFIX::1), null without IPv6. */
  gateway6: Type.Union([Type.String(), Type.Null()]),
  /** The host link VMs' TAPs join: Hangar's own bridge, or the parent of a bridged network. */
  bridge: Type.String(),
  description: Type.String(),
  createdAt: Type.String(),
  /** VMs with a NIC on this network. */
  usedBy: Type.Array(VmName),
  /** What exists on the host right now. */
  status: Type.Object({
    bridge: Type.Boolean({ description: 'The bridge exists and is up' }),
    dnsmasqPid: Type.Union([Type.Integer(), Type.Null()]),
    ipv6: Type.Boolean({ description: 'IPv6 is on: the bridge has its IPv6 gateway address and dnsmasq advertises the prefix' }),
    ipv6Unavailable: Type.Union([Type.String(), Type.Null()], { description: 'Why a network with an IPv6 subnet runs IPv4 only on this host (IPv6 disabled), else null' }),
  }),
});
export type Network = Static<typeof Network>;

/** One NIC of a VM, as its spec keeps it. */
export const VmNic = Type.Object({
  name: DeviceId,
  network: NetworkName,
  mac: MacAddress,
  /** A static DHCP reservation on the network (nat and isolated networks). */
  ipv4: Type.Optional(Ipv4),
  ingress: Type.Optional(Rate),
  egress: Type.Optional(Rate),
});
export type VmNic = Static<typeof VmNic>;

/** A NIC in a create request or `POST /1.0/vms/{name}/nics`: everything but the network is chosen when absent. */
export const VmNicRequest = Type.Object(
  {
    name: Type.Optional(DeviceId),
    network: NetworkName,
    mac: Type.Optional(MacAddress),
    ipv4: Type.Optional(Ipv4),
    ingress: Type.Optional(Rate),
    egress: Type.Optional(Rate),
  },
  { additionalProperties: false },
);
export type VmNicRequest = Static<typeof VmNicRequest>;

/** A NIC with what the host knows of it now: its TAP and the address its network's DHCP server leased. */
export const VmNicState = Type.Object({
  name: DeviceId,
  network: NetworkName,
  mac: MacAddress,
  tap: Type.String(),
  ipv4: Type.Union([Ipv4, Type.Null()]),
  /** Global IPv6 addresses the host has seen the NIC use (its SLAAC address once the guest has talked on the network). */
  ipv6: Type.Array(Type.String()),
});
export type VmNicState = Static<typeof VmNicState>;

/** POST /1.0/vms/{name}/forwards: publish a guest port on a host address. */
export const PortForwardRequest = Type.Object(
  {
    hostPort: Type.Integer({ minimum: 1, maximum: 65535 }),
    guestPort: Type.Integer({ minimum: 1, maximum: 65535 }),
    proto: Type.Optional(Type.Union([Type.Literal('tcp'), Type.Literal('udp')])),
    address: Type.Optional(Type.String({ pattern: '^(\\d{1,3})(\\.\\d{1,3}){3}$', description: 'Host address to publish on (default 0.0.0.0: every address of the host, loopback included)' })),
  },
  { additionalProperties: false },
);
export type PortForwardRequest = Static<typeof PortForwardRequest>;

export const PortForward = Type.Object({
  id: Type.Integer(),
  vm: VmName,
  proto: Type.Union([Type.Literal('tcp'), Type.Literal('udp')]),
  address: Type.String(),
  hostPort: Type.Integer(),
  guestPort: Type.Integer(),
  /** The guest address connections go to: its NIC's reservation on a nat network. */
  guestAddress: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String(),
});
export type PortForward = Static<typeof PortForward>;
