/**
 * Snapshots as the daemon assembles them (src/host/main.ts): the manager
 * over the VM manager, the VM disks' files and qemu-img.
 */
import type { Logger } from '../../common/log.js';
import type { EventBus } from '../events.js';
import type { OperationManager } from '../operations.js';
import type { Store } from '../store.js';
import type { StorageService } from '../storage/index.js';
import { storageDiskSource } from './disks.js';
import { SnapshotManager, type VmAccess } from './manager.js';
import { qemuImgTool } from './offline.js';

export { SnapshotManager } from './manager.js';

export interface SnapshotWiring {
  store: Store;
  events: EventBus;
  operations: OperationManager;
  vms: VmAccess;
  log: Logger;
  /** Pools and volumes: where the VMs' disks are. */
  storage: StorageService;
}

export function createSnapshotManager(w: SnapshotWiring): SnapshotManager {
  return new SnapshotManager({
    store: w.store,
    events: w.events,
    operations: w.operations,
    vms: w.vms,
    disks: storageDiskSource(w.storage),
    offline: qemuImgTool,
    log: w.log.child({ component: 'snapshots' }),
  });
}
