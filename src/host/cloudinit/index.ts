/**
 * cloud-init for VMs launched from cloud images (docs/cloud-init.md): what
 * the daemon does with a create request's sshKeys/userData/networkConfig,
 * and the per-VM seed disk attached at each start.
 *
 *   create  cloudInitSpecFrom(req)        checks the inputs → VmSpec.cloudInit
 *           fitCloudInitToImage(spec, i)  once the image is known: refuses user-data
 *                                         for an image without cloud-init, drops keys
 *   start   attachGuestSide(config, ...)  builds <runDir>/cidata.img and adds it as a
 *                                         read-only disk (cloud-init images only), and
 *                                         the guest agent channel (engines that have one)
 *
 * The seed lives in the VM's folder, so deleting the VM removes it.
 */
import path from 'node:path';
import { HangarError } from '../../common/errors.js';
import type { DiskAttachment, EngineCapabilities, EngineVmConfig } from '../../engines/engine.js';
import { validateNetworkConfig, validateUserData, type CloudInitSpec } from './config.js';
import { validateSshKeys } from './keys.js';
import { buildSeed, SEED_FILE } from './seed.js';

export { validateSshKey, validateSshKeys, SSH_KEY_TYPES, MAX_SSH_KEYS } from './keys.js';
export { validateUserData, validateNetworkConfig, renderMetaData, renderUserData, defaultUserData, MAX_USER_DATA, MAX_NETWORK_CONFIG, type CloudInitSpec, type SeedContent } from './config.js';
export { buildSeed, seedFiles, SEED_FILE, SEED_LABEL } from './seed.js';

/** The disk id the seed gets in the VM (a name VM disks must not take). */
export const SEED_DISK_ID = 'cidata';
/** The guest agent socket's name in the VM's folder. */
export const GUEST_AGENT_SOCKET = 'qga.sock';

/** The cloud-init fields of a create request (schemas.ts: VmCreateRequest). */
export interface CloudInitRequest {
  sshKeys?: string[];
  userData?: string;
  networkConfig?: string;
}

/** Checks a create request's cloud-init fields; undefined when it has none. */
export function cloudInitSpecFrom(req: CloudInitRequest): CloudInitSpec | undefined {
  if (req.sshKeys === undefined && req.userData === undefined && req.networkConfig === undefined) return undefined;
  const spec: CloudInitSpec = { sshKeys: validateSshKeys(req.sshKeys ?? []) };
  if (req.userData !== undefined) spec.userData = validateUserData(req.userData);
  if (req.networkConfig !== undefined) spec.networkConfig = validateNetworkConfig(req.networkConfig);
  return spec;
}

/**
 * The spec as it fits its image, once the image is known. An image without
 * cloud-init cannot take user-data or a network config (refused:
 * UNSUPPORTED, before anything is created); SSH keys, which the CLI sends by
 * default, are dropped for it.
 */
export function fitCloudInitToImage<S extends { image: string; cloudInit?: CloudInitSpec }>(spec: S, image: { cloudInit?: boolean }): S {
  if (!spec.cloudInit || image.cloudInit) return spec;
  const given = [spec.cloudInit.userData !== undefined ? 'userData' : '', spec.cloudInit.networkConfig !== undefined ? 'networkConfig' : ''].filter(Boolean);
  if (given.length > 0) {
    throw new HangarError('UNSUPPORTED', `image "${spec.image}" does not run cloud-init: ${given.join(' and ')} cannot reach it`, { field: given[0], image: spec.image });
  }
  const { cloudInit: _dropped, ...rest } = spec;
  return rest as S;
}

/**
 * Adds what the guest side needs to a VM's engine config before it starts:
 * the cloud-init seed (rebuilt now, from the VM's id, name and spec) as a
 * read-only raw disk after the VM's own disks, for images that run
 * cloud-init; and a guest agent channel in the VM's folder when the engine
 * offers one.
 */
export async function attachGuestSide(
  config: EngineVmConfig,
  vm: { id: string; name: string; spec: { cloudInit?: CloudInitSpec } },
  image: { cloudInit?: boolean },
  caps: Pick<EngineCapabilities, 'devices'>,
): Promise<void> {
  if (image.cloudInit) {
    const seed = await buildSeed(path.join(config.runDir, SEED_FILE), {
      instanceId: vm.id,
      hostname: vm.name,
      cloudInit: vm.spec.cloudInit ?? { sshKeys: [] },
    });
    const disk: DiskAttachment = { id: SEED_DISK_ID, path: seed, format: 'raw', readOnly: true, serial: SEED_DISK_ID };
    if (config.disks.some((d) => d.id === SEED_DISK_ID)) {
      throw new HangarError('INVALID_ARGUMENT', `VM "${vm.name}" has a disk named "${SEED_DISK_ID}": that name is the cloud-init seed's`, { name: vm.name });
    }
    config.disks = [...config.disks, disk];
  }
  if (caps.devices.includes('guest-agent')) config.guestAgent = { socket: path.join(config.runDir, GUEST_AGENT_SOCKET) };
}
