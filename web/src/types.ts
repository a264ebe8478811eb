// The shapes of the API answers the UI reads (docs/api.md; the daemon's schemas are the reference).
export type VmState = 'stopped' | 'starting' | 'running' | 'paused' | 'stopping' | 'crashed';

export interface VmNicState { name: string; network: string; mac: string; tap: string; ipv4: string | null }
export interface Vm {
  id: string;
  name: string;
  state: VmState;
  spec: {
    image: string; engine: string; cpus: number; memoryBytes: number; cmdline: string;
    boot?: string; iso?: string;
    disks: Array<{ name: string; volume: string; readOnly?: boolean; serial?: string; owned?: boolean }>;
    nics?: Array<{ name: string; network: string; mac: string; ipv4?: string }>;
    cloudInit?: { sshKeys: string[]; userData?: string };
  };
  runtime: {
    pid: number | null; accel: string | null; startedAt: string | null; uptimeSeconds: number | null;
    lastExit: { reason: string; detail?: string; at: string } | null;
    rssBytes?: number; cpuSeconds?: number; nics?: VmNicState[];
  };
  display?: { type: 'vnc'; socket: string } | null;
  createdAt: string;
}

export interface Operation {
  id: string; description: string; status: string;
  progress?: { stage: string; percent?: number };
  resources: { vms: string[] };
  createdAt: string; updatedAt: string;
  error?: { code: string; message: string };
  result?: unknown;
}

export interface LifecycleEvent { seq: number; at: string; vm: string | null; type: string; reason?: string; message?: string }

export interface Image {
  name: string; description: string; status: 'ready' | 'missing' | 'building';
  origin?: 'built-in' | 'imported'; sizeBytes?: number; boot?: string[]; cloudInit?: boolean; disk?: string;
}

export interface EngineInfo { name: string; available?: boolean; limits?: { maxCpus: number; minMemoryBytes: number; maxMemoryBytes: number } }
export interface ServerInfo { apiVersion: string; version: string; engines: EngineInfo[] }

export interface HostCheck {
  kvm: { present: boolean; kind: string; detail: string };
  qemu: { present: boolean; version: string | null };
  cpus: { total: number; allocated: number };
  memory: { totalBytes: number; availableBytes: number; allocatedBytes: number };
  budget: Record<string, unknown>;
  advice: string[];
}

export interface Network { name: string; kind: string; subnet: string | null; gateway: string | null; bridge: string; description: string; usedBy: string[]; status: { bridge: boolean } }
export interface StoragePool { name: string; driver: string; path: string; quotaBytes: number; usage: { volumes: number; provisionedBytes: number; allocatedBytes: number; totalBytes: number; freeBytes: number } }
export interface Volume { name: string; pool: string; format: string; sizeBytes: number; allocatedBytes: number; usedBy: Array<{ vm: string } | string>; createdAt: string }
export interface PortForward { id: number; vm: string; proto: 'tcp' | 'udp'; address: string; hostPort: number; guestPort: number; guestAddress: string | null; createdAt: string }
export interface Snapshot { name: string; vm: string; createdAt: string; memory: boolean; vmState: string; vmStateBytes: number }
export interface VmDiskInfo { name: string; volume: string; readOnly: boolean; serial?: string; owned: boolean; format: string; sizeBytes: number; path: string }

/** The metrics contract (monitoring, docs/monitoring.md). */
export interface VmSample { t: number; cpuPercent: number; memoryBytes: number; guestMemoryUsedBytes: number | null; diskReadBytes: number; diskWriteBytes: number; netRxBytes: number; netTxBytes: number }
export interface HostSample { t: number; cpuPercent: number; memoryUsedBytes: number; memoryTotalBytes: number; load1: number; dataDirUsedBytes: number; dataDirTotalBytes: number }
export interface HostMetrics { step: number; samples: HostSample[]; budget?: { vcpus: { committed: number; available: number }; memoryBytes: { committed: number; available: number } } }
export interface Alert { id: string; vm: string | null; kind: string; message: string; raisedAt: number; clearedAt: number | null }
