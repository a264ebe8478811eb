/**
 * The storage routes of the API (docs/storage.md, docs/api.md):
 *
 *   GET/POST          /1.0/storage-pools
 *   GET/PATCH/DELETE  /1.0/storage-pools/{pool}
 *   GET/POST          /1.0/storage-pools/{pool}/volumes
 *   GET/PATCH/DELETE  /1.0/storage-pools/{pool}/volumes/{volume}
 *   GET/PUT           /1.0/storage-pools/{pool}/volumes/{volume}/content
 *
 * Quick changes answer at once (sync); copying, importing and uploading
 * answer 202 with an operation that reports progress.
 */
import fs from 'node:fs';
import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { HangarError } from '../../common/errors.js';
import { parseSize } from '../../common/sizes.js';
import { AsyncBody, ErrorBody, syncOf, type Operation } from '../api/schemas.js';
import {
  DiskFormatSchema, PoolName, StoragePool, StoragePoolCreateRequest, StoragePoolPatchRequest, Volume, VolumeCreateRequest, VolumeName, VolumePatchRequest,
  type StoragePool as StoragePoolT, type Volume as VolumeT,
} from '../api/storage-schemas.js';
import type { OperationManager } from '../operations.js';
import type { PoolRecord, VolumeRecord } from './records.js';
import type { StorageService } from './service.js';
import { VolumeJobs } from './jobs.js';

const errors = { 400: ErrorBody, 404: ErrorBody, 409: ErrorBody, 422: ErrorBody, 500: ErrorBody, 504: ErrorBody };
const PoolParams = Type.Object({ pool: PoolName });
const VolumeParams = Type.Object({ pool: PoolName, volume: VolumeName });

export function presentPool(storage: StorageService, p: PoolRecord): StoragePoolT {
  return { name: p.name, driver: p.driver, path: p.path, quotaBytes: p.quotaBytes, usage: storage.poolUsage(p), createdAt: p.createdAt };
}

export function presentVolume(storage: StorageService, v: VolumeRecord): VolumeT {
  const pool = storage.requirePool(v.pool);
  const out: VolumeT = {
    name: v.name, pool: v.pool, format: v.format, sizeBytes: v.sizeBytes,
    allocatedBytes: storage.driverOf(pool).allocatedBytes(v.name, v.format),
    createdAt: v.createdAt,
    usedBy: v.attachments.map((a) => ({ vm: a.vm, device: a.device, readOnly: a.readOnly })),
  };
  if (v.backing !== null) out.backing = v.backing;
  if (v.origin !== null) out.origin = v.origin;
  if (v.description !== null) out.description = v.description;
  return out;
}

/** One VolumeJobs per storage service: uploads in progress live in it. */
const jobsOf = new WeakMap<StorageService, VolumeJobs>();
export function volumeJobs(storage: StorageService, operations: OperationManager): VolumeJobs {
  let j = jobsOf.get(storage);
  if (!j) {
    j = new VolumeJobs(storage, operations, { present: (v) => presentVolume(storage, v) });
    jobsOf.set(storage, j);
  }
  return j;
}

export async function registerStorageRoutes(
  server: FastifyInstance,
  ctx: { storage: StorageService; operations: OperationManager },
  asyncReply: (reply: FastifyReply, op: Operation) => FastifyReply,
): Promise<void> {
  const app = server.withTypeProvider<TypeBoxTypeProvider>();
  const { storage } = ctx;
  const jobs = volumeJobs(storage, ctx.operations);

  app.get('/1.0/storage-pools', { schema: { summary: 'Storage pools', response: { 200: syncOf(Type.Array(StoragePool)) } } }, async () =>
    ({ type: 'sync' as const, metadata: storage.listPools().map((p) => presentPool(storage, p)) }));

  app.post('/1.0/storage-pools', { schema: { summary: 'Create a storage pool', body: StoragePoolCreateRequest, response: { 201: syncOf(StoragePool), ...errors } } }, async (req, reply) => {
    const b = req.body;
    const pool = storage.createPool({
      name: b.name,
      ...(b.driver !== undefined ? { driver: b.driver } : {}),
      ...(b.path !== undefined ? { path: b.path } : {}),
      ...(b.quota !== undefined ? { quotaBytes: parseSize(b.quota, 'quota') } : {}),
    });
    return reply.code(201).send({ type: 'sync' as const, metadata: presentPool(storage, pool) });
  });

  app.get('/1.0/storage-pools/:pool', { schema: { summary: 'One storage pool', params: PoolParams, response: { 200: syncOf(StoragePool), ...errors } } }, async (req) =>
    ({ type: 'sync' as const, metadata: presentPool(storage, storage.requirePool(req.params.pool)) }));

  app.patch('/1.0/storage-pools/:pool', { schema: { summary: "Change a pool's quota", params: PoolParams, body: StoragePoolPatchRequest, response: { 200: syncOf(StoragePool), ...errors } } }, async (req) =>
    ({ type: 'sync' as const, metadata: presentPool(storage, storage.setPoolQuota(req.params.pool, parseSize(req.body.quota, 'quota'))) }));

  app.delete('/1.0/storage-pools/:pool', { schema: { summary: 'Delete an empty storage pool', params: PoolParams, response: { 200: syncOf(Type.Object({ name: Type.String() })), ...errors } } }, async (req) => {
    storage.deletePool(req.params.pool);
    return { type: 'sync' as const, metadata: { name: req.params.pool } };
  });

  app.get('/1.0/storage-pools/:pool/volumes', { schema: { summary: "A pool's volumes", params: PoolParams, response: { 200: syncOf(Type.Array(Volume)), ...errors } } }, async (req) =>
    ({ type: 'sync' as const, metadata: storage.listVolumes(req.params.pool).filter((v) => v.state === 'ready').map((v) => presentVolume(storage, v)) }));

  app.post('/1.0/storage-pools/:pool/volumes', {
    schema: { summary: 'Create a volume: empty (sync), or copied, imported or uploaded (async)', params: PoolParams, body: VolumeCreateRequest, response: { 201: syncOf(Volume), 202: AsyncBody, ...errors } },
  }, async (req, reply) => {
    const { pool } = req.params;
    const b = req.body;
    const common = { ...(b.format !== undefined ? { format: b.format } : {}), ...(b.description !== undefined ? { description: b.description } : {}) };
    const src = b.source;
    if (src && b.size !== undefined) throw new HangarError('INVALID_ARGUMENT', 'size goes with an empty volume; a copied, imported or uploaded volume takes its source\'s size (grow it afterwards)');
    if (!src) {
      if (b.size === undefined) throw new HangarError('INVALID_ARGUMENT', 'an empty volume needs a size');
      const v = await storage.createVolume({ pool, name: b.name, sizeBytes: parseSize(b.size, 'size'), ...common });
      return reply.code(201).send({ type: 'sync' as const, metadata: presentVolume(storage, v) });
    }
    switch (src.type) {
      case 'copy': return asyncReply(reply, jobs.clone(pool, b.name, src.volume, common));
      case 'path': return asyncReply(reply, await jobs.importPath(pool, b.name, src.path, common));
      case 'upload': return asyncReply(reply, jobs.beginUpload(pool, b.name, src.bytes, common));
      default: throw new HangarError('INVALID_ARGUMENT', 'unknown volume source');
    }
  });

  app.get('/1.0/storage-pools/:pool/volumes/:volume', { schema: { summary: 'One volume', params: VolumeParams, response: { 200: syncOf(Volume), ...errors } } }, async (req) =>
    ({ type: 'sync' as const, metadata: presentVolume(storage, storage.requireVolume(req.params.pool, req.params.volume)) }));

  app.patch('/1.0/storage-pools/:pool/volumes/:volume', { schema: { summary: 'Grow a volume (online when a running VM uses it)', params: VolumeParams, body: VolumePatchRequest, response: { 200: syncOf(Volume), ...errors } } }, async (req) => {
    const v = await storage.resizeVolume(req.params.pool, req.params.volume, parseSize(req.body.size, 'size'));
    return { type: 'sync' as const, metadata: presentVolume(storage, v) };
  });

  app.delete('/1.0/storage-pools/:pool/volumes/:volume', { schema: { summary: 'Delete a volume no VM uses (or cancel its upload)', params: VolumeParams, response: { 200: syncOf(Type.Object({ pool: Type.String(), name: Type.String() })), ...errors } } }, async (req) => {
    const { pool, volume } = req.params;
    if (jobs.isUploading(pool, volume)) jobs.cancelUpload(pool, volume);
    else storage.deleteVolume(pool, volume);
    return { type: 'sync' as const, metadata: { pool, name: volume } };
  });

  app.get('/1.0/storage-pools/:pool/volumes/:volume/content', {
    schema: { summary: "A volume's image file (application/octet-stream), converted when another format is asked for", params: VolumeParams, querystring: Type.Object({ format: Type.Optional(DiskFormatSchema) }, { additionalProperties: false }) },
  }, async (req, reply) => {
    const { pool, volume } = req.params;
    const out = await jobs.prepareExport(pool, volume, req.query.format);
    const stream = fs.createReadStream(out.file);
    stream.once('close', out.cleanup);
    return reply
      .type('application/octet-stream')
      .header('content-length', String(out.bytes))
      .header('content-disposition', `attachment; filename="${volume}.${out.format}"`)
      .header('x-hangar-format', out.format)
      .send(stream);
  });

  // The bytes of an upload arrive as a stream, never buffered whole.
  await app.register(async (sub) => {
    sub.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
    sub.put('/1.0/storage-pools/:pool/volumes/:volume/content', {
      schema: { summary: 'Upload the image of a volume being uploaded (application/octet-stream)', params: VolumeParams, response: { 200: syncOf(Volume), ...errors } },
    }, async (req, reply) => {
      const body = req.body as Readable | undefined;
      if (!body || typeof body.pipe !== 'function') throw new HangarError('INVALID_ARGUMENT', 'send the bytes as application/octet-stream');
      const { pool, volume } = req.params as { pool: string; volume: string };
      const len = req.headers['content-length'] !== undefined ? Number(req.headers['content-length']) : undefined;
      try {
        return { type: 'sync' as const, metadata: (await jobs.receive(pool, volume, body, len)) as VolumeT };
      } catch (e) {
        if (body.readableDidRead || body.destroyed) reply.header('connection', 'close');
        throw e;
      }
    });
  });
}
