/** Storage pools and volumes: what the rest of Hangar imports. */
export { StorageService, DEFAULT_POOL_QUOTA_BYTES, MAX_VOLUME_BYTES, roundUpToSector } from './service.js';
export type { OnlineResizeHook, StorageOptions, CreateVolumeRequest, CreatePoolRequest, PoolUsage } from './service.js';
export type { PoolRecord, VolumeRecord, VolumeAttachment, VolumeOrigin, VolumeState } from './records.js';
export type { PoolDriver, PoolCapacity, NewVolume } from './driver.js';
export { DirPoolDriver } from './dir-driver.js';
export { createOverlay, diskFileFormat, type OverlayInfo } from './overlay.js';
export { inspectDiskImage, type DiskImageInspection, type InspectOptions, type InspectRefusal } from './inspect.js';
export type { DiskFormat } from './qemu-img.js';
export { DEFAULT_POOL, parseVolumeRef, formatVolumeRef, isPoolName, isVolumeName, type VolumeRef } from '../../api/storage-names.js';
