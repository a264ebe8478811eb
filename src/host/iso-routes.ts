/**
 * The ISO routes of the API (iso-media.ts, docs/api.md "ISO media"):
 *
 *   GET    /1.0/vms/{name}/iso           the ISO, and what the running drive holds
 *   PUT    /1.0/vms/{name}/iso   {iso}   insert or change (a running QEMU VM at once)
 *   DELETE /1.0/vms/{name}/iso           eject
 *
 * Both are quick (a QMP command or a spec change), so they answer at once.
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { syncOf, VmName } from './api/schemas.js';
import { errors, type ApiContext } from './server.js';

const IsoState = Type.Object({
  vm: Type.String(),
  iso: Type.Union([Type.String(), Type.Null()], { description: 'What is in the drive now; null: empty' }),
  live: Type.Boolean({ description: 'PUT/DELETE: the running VM\'s drive was changed at once (false: the VM is stopped; its next start uses it). GET: the VM runs' }),
  drive: Type.Optional(Type.Union([Type.Object({ inserted: Type.Boolean(), file: Type.Union([Type.String(), Type.Null()]), trayOpen: Type.Boolean() }), Type.Null()], { description: 'GET: the running VM\'s drive as the engine reports it (null: not running, or no drive)' })),
});
const IsoInsertRequest = Type.Object({
  iso: Type.String({ minLength: 1, maxLength: 4096, description: 'An ISO 9660 image: an absolute path inside the daemon\'s import folders, or a raw storage volume "pool/volume"' }),
}, { additionalProperties: false });

export function registerIsoRoutes(instance: FastifyInstance, ctx: ApiContext): void {
  const app = instance.withTypeProvider<TypeBoxTypeProvider>();
  const params = Type.Object({ name: VmName });
  app.get('/1.0/vms/:name/iso', { schema: { summary: "The ISO of a VM, and what its running CD-ROM drive holds", params, response: { 200: syncOf(IsoState), ...errors } } }, async (req) =>
    ({ type: 'sync' as const, metadata: await ctx.vms.isoOps.show(req.params.name) }));
  app.put('/1.0/vms/:name/iso', { schema: { summary: "Insert an ISO into a VM's CD-ROM drive, or change it (at once when the VM runs)", params, body: IsoInsertRequest, response: { 200: syncOf(IsoState), ...errors } } }, async (req) =>
    ({ type: 'sync' as const, metadata: await ctx.vms.isoOps.insert(req.params.name, req.body.iso) }));
  app.delete('/1.0/vms/:name/iso', { schema: { summary: "Eject the ISO from a VM's CD-ROM drive", params, response: { 200: syncOf(IsoState), ...errors } } }, async (req) =>
    ({ type: 'sync' as const, metadata: await ctx.vms.isoOps.eject(req.params.name) }));
}
