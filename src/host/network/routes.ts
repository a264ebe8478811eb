/**
 * API routes of networks and of VMs' NICs (docs/api.md, "Networks").
 * Network changes take well under a second (a bridge, a dnsmasq start, one
 * nft transaction), so they answer synchronously.
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { ErrorBody, VmName, syncOf } from '../api/schemas.js';
import { DeviceId } from '../../api/names.js';
import type { NetworkManager } from './manager.js';
import type { Store } from '../store.js';
import { Network, NetworkCreateRequest, NetworkName, NetworkUpdateRequest, PortForward, PortForwardRequest, VmNic, VmNicRequest, VmNicState } from './schemas.js';

const errors = { 400: ErrorBody, 404: ErrorBody, 409: ErrorBody, 422: ErrorBody, 500: ErrorBody, 503: ErrorBody };

export async function registerNetworkRoutes(app: FastifyInstance, networks: NetworkManager, store: Store): Promise<void> {
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const Params = Type.Object({ name: NetworkName });
  const VmParams = Type.Object({ name: VmName });
  const NicParams = Type.Object({ name: VmName, nic: DeviceId });

  r.get('/1.0/networks', { schema: { summary: 'Networks', response: { 200: syncOf(Type.Array(Network)) } } }, async () =>
    ({ type: 'sync' as const, metadata: networks.list() }));

  r.post('/1.0/networks', { schema: { summary: 'Create a network (nat, isolated or bridged)', body: NetworkCreateRequest, response: { 201: syncOf(Network), ...errors } } }, async (req, reply) =>
    reply.code(201).send({ type: 'sync' as const, metadata: await networks.create(req.body) }));

  r.get('/1.0/networks/:name', { schema: { summary: 'One network (default: created on first use)', params: Params, response: { 200: syncOf(Network), ...errors } } }, async (req) =>
    ({ type: 'sync' as const, metadata: await networks.show(req.params.name) }));

  r.patch('/1.0/networks/:name', { schema: { summary: 'Change a network\'s description, or its subnet while no NIC uses it', params: Params, body: NetworkUpdateRequest, response: { 200: syncOf(Network), ...errors } } }, async (req) =>
    ({ type: 'sync' as const, metadata: await networks.update(req.params.name, req.body) }));

  r.delete('/1.0/networks/:name', { schema: { summary: 'Delete a network (refused while NICs use it)', params: Params, response: { 200: syncOf(Type.Object({ name: Type.String() })), ...errors } } }, async (req) => {
    await networks.delete(req.params.name);
    return { type: 'sync' as const, metadata: { name: req.params.name } };
  });

  r.get('/1.0/vms/:name/nics', { schema: { summary: 'A VM\'s NICs with their TAPs and leased addresses', params: VmParams, response: { 200: syncOf(Type.Array(VmNicState)), ...errors } } }, async (req) =>
    ({ type: 'sync' as const, metadata: networks.nicStates(store.requireVm(req.params.name)) }));

  r.post('/1.0/vms/:name/nics', { schema: { summary: 'Add a NIC (plugged in at once when the VM runs on QEMU)', params: VmParams, body: VmNicRequest, response: { 201: syncOf(VmNic), ...errors } } }, async (req, reply) =>
    reply.code(201).send({ type: 'sync' as const, metadata: await networks.addNic(req.params.name, req.body) }));

  r.get('/1.0/forwards', { schema: { summary: 'All port forwards', response: { 200: syncOf(Type.Array(PortForward)) } } }, async () =>
    ({ type: 'sync' as const, metadata: networks.listForwards() }));

  r.get('/1.0/vms/:name/forwards', { schema: { summary: 'A VM\'s port forwards', params: VmParams, response: { 200: syncOf(Type.Array(PortForward)), ...errors } } }, async (req) =>
    ({ type: 'sync' as const, metadata: networks.listForwards(req.params.name) }));

  r.post('/1.0/vms/:name/forwards', { schema: { summary: 'Publish a guest port on a host address (nftables DNAT)', params: VmParams, body: PortForwardRequest, response: { 201: syncOf(PortForward), ...errors } } }, async (req, reply) =>
    reply.code(201).send({ type: 'sync' as const, metadata: await networks.addForward(req.params.name, req.body) }));

  const ForwardParams = Type.Object({ name: VmName, id: Type.String({ pattern: '^[0-9]{1,9}$' }) });
  r.delete('/1.0/vms/:name/forwards/:id', { schema: { summary: 'Remove a port forward', params: ForwardParams, response: { 200: syncOf(Type.Object({ id: Type.Integer() })), ...errors } } }, async (req) => {
    await networks.removeForward(req.params.name, Number(req.params.id));
    return { type: 'sync' as const, metadata: { id: Number(req.params.id) } };
  });

  r.delete('/1.0/vms/:name/nics/:nic', { schema: { summary: 'Remove a NIC (unplugged first when the VM runs on QEMU)', params: NicParams, response: { 200: syncOf(Type.Object({ name: Type.String() })), ...errors } } }, async (req) => {
    await networks.removeNic(req.params.name, req.params.nic);
    return { type: 'sync' as const, metadata: { name: req.params.nic } };
  });
}
