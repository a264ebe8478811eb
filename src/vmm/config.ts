/**
 * Validation of hangar-vmm's configuration: the control API bodies and the
 * `--config` file, against their schemas in src/api/vmm.ts (as the plain
 * JSON of vmm-schemas.generated.ts, see schema-check.ts for why). A refusal
 * is an INVALID_ARGUMENT HangarError that names the resource, the field and
 * the rule ("machine-config: "vcpu_count" must be a whole number from 1 to 32").
 */
import type {
  VmmAction, VmmBootSource, VmmConfigFile, VmmDrive, VmmMachineConfig, VmmNetworkInterface, VmmVmStatePatch, VmmActionType, VmmSnapshotCreate, VmmSnapshotLoad,
} from '../api/vmm.js';
import { VMM_SCHEMA_JSON } from '../api/vmm-schemas.generated.js';
import { HangarError } from '../common/errors.js';
import { firstSchemaError, type JsonSchema } from './schema-check.js';

export type { VmmBootSource as BootSourceBody, VmmConfigFile, VmmDrive as DriveConfig, VmmMachineConfig as MachineConfigBody, VmmNetworkInterface as NetConfig } from '../api/vmm.js';

const SCHEMAS = VMM_SCHEMA_JSON as unknown as Record<keyof typeof VMM_SCHEMA_JSON, JsonSchema>;

/** The schema that describes the value at `instancePath` ("/drives/0/drive_id"). */
function schemaAt(root: JsonSchema, instancePath: string): JsonSchema | undefined {
  let s: JsonSchema | undefined = root;
  for (const seg of instancePath.split('/').slice(1)) {
    if (!s) return undefined;
    s = s.properties?.[seg] ?? (/^\d+$/.test(seg) ? s.items : undefined);
  }
  return s;
}

/** "/drives/0/drive_id" → drives[0].drive_id */
function fieldName(instancePath: string): string {
  return instancePath.split('/').slice(1).map((seg, i) => (/^\d+$/.test(seg) ? `[${seg}]` : i === 0 ? seg : `.${seg}`)).join('');
}

/** Checks `value` against `schema`; throws one clear INVALID_ARGUMENT for the first thing wrong. */
export function check(schema: JsonSchema, value: unknown, what: string): void {
  const e = firstSchemaError(schema, value);
  if (!e) return;
  const where = e.instancePath === '' ? what : `${what}: "${fieldName(e.instancePath)}"`;
  const params = e.params;
  if (e.keyword === 'required') {
    throw new HangarError('INVALID_ARGUMENT', `${where}${e.instancePath === '' ? ':' : ''} field "${params.requiredProperties?.[0] ?? '?'}" is required`);
  }
  if (e.keyword === 'additionalProperties') {
    throw new HangarError('INVALID_ARGUMENT', `${where}${e.instancePath === '' ? ':' : ''} unknown field "${params.additionalProperties?.[0] ?? '?'}"`);
  }
  const node = schemaAt(schema, e.instancePath);
  if (e.instancePath === '' && e.keyword === 'type') throw new HangarError('INVALID_ARGUMENT', `${what} must be a JSON object`);
  throw new HangarError('INVALID_ARGUMENT', `${where} must be ${node?.description ?? e.message}`);
}

export function parseMachineConfig(v: unknown): VmmMachineConfig {
  check(SCHEMAS.machineConfig, v, 'machine-config');
  return v as VmmMachineConfig;
}

export function parseBootSource(v: unknown): VmmBootSource {
  check(SCHEMAS.bootSource, v, 'boot-source');
  return v as VmmBootSource;
}

export function parseDrive(v: unknown, idFromPath?: string): VmmDrive {
  check(SCHEMAS.drive, v, 'drive');
  const d = v as VmmDrive;
  if (idFromPath !== undefined && d.drive_id !== idFromPath) throw new HangarError('INVALID_ARGUMENT', `drive: "drive_id" ${d.drive_id} does not match the path's ${idFromPath}`);
  return d;
}

export function parseNet(v: unknown, idFromPath?: string): VmmNetworkInterface {
  check(SCHEMAS.networkInterface, v, 'network-interface');
  const n = v as VmmNetworkInterface;
  if (idFromPath !== undefined && n.iface_id !== idFromPath) throw new HangarError('INVALID_ARGUMENT', `network-interface: "iface_id" ${n.iface_id} does not match the path's ${idFromPath}`);
  return n;
}

/** PUT /entropy takes an empty object, or no body at all. */
export function parseEntropy(v: unknown): void {
  if (v !== undefined) check(SCHEMAS.entropy, v, 'entropy');
}

export function parseAction(v: unknown): VmmActionType {
  check(SCHEMAS.action, v, 'actions');
  return (v as VmmAction).action_type;
}

export function parseVmStatePatch(v: unknown): 'Paused' | 'Resumed' {
  check(SCHEMAS.vmStatePatch, v, 'vm');
  return (v as VmmVmStatePatch).state;
}

export function parseConfigFile(v: unknown): VmmConfigFile {
  check(SCHEMAS.configFile, v, 'config');
  return v as VmmConfigFile;
}

export function parseSnapshotCreate(v: unknown): VmmSnapshotCreate {
  check(SCHEMAS.snapshotCreate, v, 'snapshot/create');
  return v as VmmSnapshotCreate;
}

export function parseSnapshotLoad(v: unknown): VmmSnapshotLoad {
  check(SCHEMAS.snapshotLoad, v, 'snapshot/load');
  return v as VmmSnapshotLoad;
}
