/**
 * Snapshots as the daemon assembles them (src/host/main.ts): the manager
 * over the VM manager, the VM disks' files and qemu-img.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../../common/log.js';
import type { EventBus } from '../events.js';
import type { OperationManager } from '../operations.js';
import type { Store } from '../store.js';
import { specDiskSource, type VolumeResolver } from './disks.js';
import { SnapshotManager, type VmAccess } from './manager.js';
import { qemuImgTool } from './offline.js';

export { SnapshotManager } from './manager.js';

export interface SnapshotWiring {
  dataDir: string;
  store: Store;
  events: EventBus;
  operations: OperationManager;
  vms: VmAccess;
  log: Logger;
  /** Where volumes live (the storage area's resolver); files under <dataDir>/storage/<pool>/ by default. */
  volumes?: VolumeResolver;
}

/** Volumes "pool/name" as files <dataDir>/storage/<pool>/<name>; qcow2 unless the file says otherwise. */
export function dataDirVolumes(dataDir: string): VolumeResolver {
  return {
    fileOf(volume: string) {
      const [pool, name] = volume.includes('/') ? volume.split('/', 2) as [string, string] : ['default', volume];
      const file = path.join(dataDir, 'storage', pool, name);
      let format: 'raw' | 'qcow2' = 'qcow2';
      try {
        const head = Buffer.alloc(4);
        const fd = fs.openSync(file, 'r');
        try { fs.readSync(fd, head, 0, 4, 0); } finally { fs.closeSync(fd); }
        if (head.toString('latin1') !== 'QFI\xfb') format = 'raw';
      } catch { /* not there (yet): a copy's target */ }
      return { path: file, format };
    },
  };
}

export function createSnapshotManager(w: SnapshotWiring): SnapshotManager {
  return new SnapshotManager({
    store: w.store,
    events: w.events,
    operations: w.operations,
    vms: w.vms,
    disks: specDiskSource(w.volumes ?? dataDirVolumes(w.dataDir)),
    offline: qemuImgTool,
    log: w.log.child({ component: 'snapshots' }),
  });
}
