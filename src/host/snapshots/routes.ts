/**
 * The snapshot and copy routes of the API (docs/api.md, "Snapshots"):
 *
 *   GET    /1.0/vms/{name}/snapshots                    list
 *   POST   /1.0/vms/{name}/snapshots                    create   { name?, memory? }  → operation
 *   GET    /1.0/vms/{name}/snapshots/{snapshot}         one
 *   DELETE /1.0/vms/{name}/snapshots/{snapshot}         delete   → operation
 *   POST   /1.0/vms/{name}/snapshots/{snapshot}/restore restore { force? }         → operation
 *   POST   /1.0/vms/{name}/copy                         copy     { name, snapshot? } → operation
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { HangarError } from '../../common/errors.js';
import { AsyncBody, syncOf, VmName } from '../api/schemas.js';
import { asyncReply, errors, type ApiContext } from '../server.js';
import type { SnapshotManager } from './manager.js';
import { Snapshot, SnapshotCreateRequest, SnapshotName, SnapshotRestoreRequest, VmCopyRequest } from './schemas.js';

const NameParams = Type.Object({ name: VmName });
const SnapParams = Type.Object({ name: VmName, snapshot: SnapshotName });

export function registerSnapshotRoutes(instance: FastifyInstance, ctx: ApiContext): void {
  const app = instance.withTypeProvider<TypeBoxTypeProvider>();
  const snaps = (): SnapshotManager => {
    if (!ctx.snapshots) throw new HangarError('UNSUPPORTED', 'this daemon has no snapshots');
    return ctx.snapshots;
  };

  app.get('/1.0/vms/:name/snapshots', { schema: { summary: "A VM's snapshots, oldest first", params: NameParams, response: { 200: syncOf(Type.Array(Snapshot)), ...errors } } }, async (req) =>
    ({ type: 'sync' as const, metadata: snaps().list(req.params.name) }));

  app.post('/1.0/vms/:name/snapshots', { schema: { summary: 'Take a snapshot (disks; with memory: RAM and devices too)', params: NameParams, body: Type.Optional(SnapshotCreateRequest), response: { 202: AsyncBody, ...errors } } }, async (req, reply) =>
    asyncReply(reply, snaps().create(req.params.name, req.body ?? {})));

  app.get('/1.0/vms/:name/snapshots/:snapshot', { schema: { summary: 'One snapshot', params: SnapParams, response: { 200: syncOf(Snapshot), ...errors } } }, async (req) =>
    ({ type: 'sync' as const, metadata: snaps().get(req.params.name, req.params.snapshot) }));

  app.delete('/1.0/vms/:name/snapshots/:snapshot', { schema: { summary: 'Delete a snapshot', params: SnapParams, response: { 202: AsyncBody, ...errors } } }, async (req, reply) =>
    asyncReply(reply, snaps().remove(req.params.name, req.params.snapshot)));

  app.post('/1.0/vms/:name/snapshots/:snapshot/restore', { schema: { summary: 'Restore a snapshot (refused while it would lose unsaved data, unless force)', params: SnapParams, body: Type.Optional(SnapshotRestoreRequest), response: { 202: AsyncBody, ...errors } } }, async (req, reply) =>
    asyncReply(reply, snaps().restore(req.params.name, req.params.snapshot, req.body?.force ?? false)));

  app.post('/1.0/vms/:name/copy', { schema: { summary: 'Copy a VM (stopped) or one of its snapshots into a new, stopped VM with its own disks', params: NameParams, body: VmCopyRequest, response: { 202: AsyncBody, ...errors } } }, async (req, reply) =>
    asyncReply(reply, snaps().copy(req.params.name, req.body)));
}
