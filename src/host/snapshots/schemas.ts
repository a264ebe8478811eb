/**
 * The snapshot resources of the API (re-exported by src/host/api/schemas.ts,
 * the one place API schemas are gathered): request validation, types and
 * the OpenAPI document come from these.
 */
import { Type, type Static } from 'typebox';
import { VmName } from '../../api/names.js';

/**
 * Snapshot names start with a letter: QEMU finds an internal snapshot by
 * name OR numeric id, so a name of digits could select another snapshot.
 */
export const SNAPSHOT_NAME_PATTERN = '^[a-z][a-z0-9._-]{0,62}$';
export const SNAPSHOT_NAME_RULE = 'lower-case letters, digits, dots, dashes and underscores, starting with a letter, at most 63 characters';
const SNAPSHOT_NAME_RE = new RegExp(SNAPSHOT_NAME_PATTERN);
export const isSnapshotName = (s: unknown): s is string => typeof s === 'string' && SNAPSHOT_NAME_RE.test(s);

export const SnapshotName = Type.String({ pattern: SNAPSHOT_NAME_PATTERN, description: `Snapshot name: ${SNAPSHOT_NAME_RULE}` });

/** POST /1.0/vms/{name}/snapshots */
export const SnapshotCreateRequest = Type.Object(
  {
    name: Type.Optional(SnapshotName),
    memory: Type.Optional(Type.Boolean({ description: 'Also save RAM and device state (the VM must be running or paused); default false' })),
  },
  { additionalProperties: false },
);
export type SnapshotCreateRequest = Static<typeof SnapshotCreateRequest>;

/** POST /1.0/vms/{name}/snapshots/{snapshot}/restore */
export const SnapshotRestoreRequest = Type.Object(
  {
    force: Type.Optional(Type.Boolean({ description: 'Restore even when the VM has changes the snapshots do not hold (docs/snapshots.md, "When restore refuses")' })),
  },
  { additionalProperties: false },
);
export type SnapshotRestoreRequest = Static<typeof SnapshotRestoreRequest>;

/** POST /1.0/vms/{name}/copy */
export const VmCopyRequest = Type.Object(
  {
    name: VmName,
    snapshot: Type.Optional(SnapshotName),
  },
  { additionalProperties: false },
);
export type VmCopyRequest = Static<typeof VmCopyRequest>;

export const SnapshotDisk = Type.Object({
  name: Type.String({ description: 'The VM disk (device id)' }),
  volume: Type.String({ description: 'The volume holding the snapshot ("pool/volume")' }),
});

export const Snapshot = Type.Object({
  name: SnapshotName,
  vm: VmName,
  createdAt: Type.String(),
  memory: Type.Boolean({ description: 'Holds RAM and device state: restoring resumes the VM where it was' }),
  /** The VM's state when the snapshot was taken. */
  vmState: Type.String(),
  disks: Type.Array(SnapshotDisk),
  /** Bytes of saved machine state (0 without memory). */
  vmStateBytes: Type.Integer(),
});
export type Snapshot = Static<typeof Snapshot>;
