/**
 * API resources of storage: pools and volumes (docs/storage.md). Kept apart
 * from schemas.ts so the storage routes (src/host/storage/routes.ts) and the
 * CLI take their types from one place; the OpenAPI document gets them
 * through the routes like every other schema.
 */
import { Type, type Static } from 'typebox';
import { PoolName, VolumeName } from '../../api/storage-names.js';
import { SizeInput } from './schemas.js';

export { PoolName, VolumeName };

export const DiskFormatSchema = Type.Union([Type.Literal('raw'), Type.Literal('qcow2')], { description: 'Disk image format' });

export const StoragePool = Type.Object({
  name: PoolName,
  driver: Type.Literal('dir'),
  path: Type.String({ description: "The pool's folder on the daemon's host" }),
  quotaBytes: Type.Integer({ description: "Most bytes the volumes' virtual sizes may add up to" }),
  usage: Type.Object({
    volumes: Type.Integer(),
    provisionedBytes: Type.Integer({ description: 'Sum of the virtual sizes of its volumes (what the quota counts)' }),
    allocatedBytes: Type.Integer({ description: 'What its volume files take on the host' }),
    totalBytes: Type.Integer({ description: 'Size of the host filesystem that holds the pool' }),
    freeBytes: Type.Integer({ description: 'Free space on that filesystem' }),
  }),
  createdAt: Type.String(),
});
export type StoragePool = Static<typeof StoragePool>;

/** POST /1.0/storage-pools */
export const StoragePoolCreateRequest = Type.Object(
  {
    name: PoolName,
    driver: Type.Optional(Type.Literal('dir')),
    path: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'dir: an absolute path of an empty or new folder (default <data dir>/storage/<name>)' })),
    quota: Type.Optional(SizeInput),
  },
  { additionalProperties: false },
);
export type StoragePoolCreateRequest = Static<typeof StoragePoolCreateRequest>;

/** PATCH /1.0/storage-pools/{pool} */
export const StoragePoolPatchRequest = Type.Object({ quota: SizeInput }, { additionalProperties: false });

export const VolumeUser = Type.Object({ vm: Type.String(), device: Type.String(), readOnly: Type.Boolean() });

export const Volume = Type.Object({
  name: VolumeName,
  pool: PoolName,
  format: DiskFormatSchema,
  sizeBytes: Type.Integer({ description: 'Virtual size' }),
  allocatedBytes: Type.Integer({ description: 'What its file takes on the host' }),
  backing: Type.Optional(Type.String({ description: 'The base file of an overlay volume' })),
  origin: Type.Optional(Type.Unknown({ description: 'How it was made: {kind:"empty"|"overlay"|"clone"|"import"|"upload", ...}' })),
  description: Type.Optional(Type.String()),
  createdAt: Type.String(),
  usedBy: Type.Array(VolumeUser, { description: 'VMs that use it; a volume in use cannot be deleted' }),
});
export type Volume = Static<typeof Volume>;

/** Where a new volume's content comes from (absent: an empty volume of `size`). */
export const VolumeSource = Type.Union([
  Type.Object({ type: Type.Literal('copy'), volume: Type.String({ minLength: 1, maxLength: 200, description: 'The volume to copy, "pool/volume"' }) }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('path'), path: Type.String({ minLength: 1, maxLength: 4096, description: "A raw or qcow2 file inside the daemon's import folders" }) }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('upload'), bytes: Type.Integer({ minimum: 1, description: 'Size of the file that will be PUT to .../content' }) }, { additionalProperties: false }),
]);
export type VolumeSource = Static<typeof VolumeSource>;

/** POST /1.0/storage-pools/{pool}/volumes */
export const VolumeCreateRequest = Type.Object(
  {
    name: VolumeName,
    size: Type.Optional(SizeInput),
    format: Type.Optional(DiskFormatSchema),
    description: Type.Optional(Type.String({ maxLength: 256 })),
    source: Type.Optional(VolumeSource),
  },
  { additionalProperties: false },
);
export type VolumeCreateRequest = Static<typeof VolumeCreateRequest>;

/** PATCH /1.0/storage-pools/{pool}/volumes/{volume}: grow it. */
export const VolumePatchRequest = Type.Object({ size: SizeInput }, { additionalProperties: false });
