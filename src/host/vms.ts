/**
 * The VM manager: creates, starts, stops, pauses, deletes VMs through their
 * engine, supervises the running processes (an exit becomes a state change
 * and an event) and re-adopts them when the daemon starts again.
 *
 * Every action on one VM runs under that VM's lock, so actions on one VM are
 * ordered while different VMs proceed in parallel. The store is written at
 * each step, so a failure halfway leaves a consistent record: a VM whose
 * start fails stays defined, 'stopped', with lastExit.reason 'start-failed'.
 * Every state change goes through transition(): the record, its event and
 * the check that the change is legal, in one transaction.
 *
 * Engines are reached through the registry; a VM's size was checked against
 * its engine once, at create (spec.ts); what the host can hold is checked
 * at each start against the admission budget (admission.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { HangarError, toHangarError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { StartSnapshot } from '../engines/snapshot-control.js';
import type { EngineCapabilities, EngineName, EngineVmConfig, VmExit, VmHandle } from '../engines/engine.js';
import type { EngineRegistry } from '../engines/registry.js';
import type { AdmissionBudget, DiskImageImportRequest, Image, ImageImportRequest, Operation, Vm, VmCreateRequest, VmExecRequest, VmExecResult, VmStateName, VmStateRequest } from './api/schemas.js';
import type { EventType, Store, VmPatch, VmRecord } from './store.js';
import type { EventBus } from './events.js';
import type { OperationManager, ReportProgress } from './operations.js';
import { Admission, defaultSettings, hostResources, type AdmissionSettings, type HostResources, type Usage } from './admission.js';
import { buildVmSpec, DEFAULT_ENGINE, validateVmName } from './spec.js';
import { ConsoleHub, type ConsoleClient, type ConsoleConnection } from './console-hub.js';
import { consoleLogLimitFromEnv } from '../common/console-log/limits.js';
import { attachGuestSide, fitCloudInitToImage } from './cloudinit/index.js';
import { execInGuest } from './guest-exec.js';
import { bootConfig, bootImageOf, displayOf, resolveBoot } from './boot.js';
import { connectVnc, takeScreenshot, type ScreenshotFormat } from './display.js';
import type { Socket } from 'node:net';
import type { StorageService } from './storage/index.js';
import { DiskService } from './disks/service.js';
import { VmDiskOps } from './disks/vm-ops.js';
import { attachIsoVolume, detachIsoVolume, VmIsoOps } from './iso-media.js';
import { diskSize, planDisks, ROOT_DISK } from './disks/plan.js';
import type { NetworkManager } from './network/manager.js';

/** A bootable image as the image store resolves it. */
export interface ResolvedImage {
  name: string;
  /** Absent for an imported disk image, which boots by firmware from its own disk. */
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  /** Kernel argument through which the image's init takes the VM's name as its host name. */
  hostnameArg?: string;
  sizeBytes?: number;
  /** The image's base disk (absolute path): VMs get a root volume made from it. */
  disk?: string;
  /** How a disk image can boot: its kernel directly, or its disk by BIOS or UEFI firmware. */
  boot?: Array<'kernel' | 'bios' | 'uefi'>;
  /** The image runs cloud-init and reads a NoCloud (cidata) seed. */
  cloudInit?: boolean;
}

/** The part of the image store the VM manager and the API use (src/host/images). */
export interface ImageProvider {
  listImages(): Promise<Array<{ name: string }>> | Array<{ name: string }>;
  ensureImage(name: string, onProgress?: (stage: string, percent?: number) => void): Promise<ResolvedImage>;
  /** Imports an image from files on the host (absent: the API answers UNSUPPORTED). */
  importImage?(req: ImageImportRequest & { kernel: string }): Promise<Image>;
  /** Checks a disk image import from the import folders; `run` copies it in (absent: the API answers UNSUPPORTED). */
  prepareDiskImport?(req: DiskImageImportRequest): Promise<{ run: (report: (p: { stage: string; percent?: number }) => void) => Promise<Image> }>;
  /** Deletes an imported image; the caller checks that no VM uses it. */
  deleteImage?(name: string): void;
  /** Builds (or rebuilds) a built-in image (absent: the API answers UNSUPPORTED). */
  buildImage?(name: string, options: { packages?: string[] }, onProgress?: (stage: string, percent?: number) => void): Promise<ResolvedImage>;
  /** Whether `name` is a built-in image (one buildImage can build). */
  isBuiltIn?(name: string): boolean;
}

export type { EngineRegistry };

export interface VmManagerDeps {
  dataDir: string;
  store: Store;
  events: EventBus;
  operations: OperationManager;
  engines: EngineRegistry;
  images: ImageProvider;
  log: Logger;
  /** Admission settings (defaults for this host when absent). */
  admission?: AdmissionSettings;
  /** This host's memory and CPUs as admission sees them (the real host when absent; tests pin it). */
  hostResources?: HostResources;
  /** Storage pools and volumes (absent: VMs cannot have disks). */
  storage?: StorageService;
  /** Virtual networks (absent: VMs get no NICs). */
  networks?: NetworkManager;
}

/** A VM process this daemon watches. */
interface LiveVm {
  handle: VmHandle;
  /** Resolves once with the engine's exit report. */
  exited: Promise<VmExit>;
  /** Resolves once the exit has been written to the store (set after the start is recorded). */
  handled: Promise<void>;
  /** Set when the daemon itself asked the VM to end (stop, restart, delete). */
  expectExit: boolean;
  hub: ConsoleHub | null;
}

/** States in which a VM has (or is about to have) a process: they hold memory and vCPUs. */
const ACTIVE_STATES = new Set<VmStateName>(['starting', 'running', 'paused', 'stopping']);

/**
 * The state changes the VM manager makes in normal operation. Reconciling
 * after a restart may make any. Every start passes through 'starting', the
 * step where admission reserves the VM's share of the host.
 */
export const LEGAL_TRANSITIONS: Readonly<Record<VmStateName, readonly VmStateName[]>> = {
  stopped: ['starting'],
  crashed: ['starting'],
  starting: ['running', 'stopped'],
  running: ['paused', 'stopping', 'stopped', 'crashed'],
  paused: ['running', 'stopping', 'stopped', 'crashed'],
  stopping: ['stopped', 'crashed'],
};

/** Throws INVALID_STATE unless `from` → `to` is a legal change in normal operation. */
export function checkTransition(name: string, from: VmStateName, to: VmStateName): void {
  if (!LEGAL_TRANSITIONS[from].includes(to)) {
    throw new HangarError('INVALID_STATE', `VM "${name}" cannot go from ${from} to ${to}`, { name, state: from, to });
  }
}

interface TransitionOptions {
  /** Other fields of the record that change with the state. */
  patch?: VmPatch;
  /** The lifecycle event that tells subscribers (published after the commit). */
  event?: EventType;
  reason?: string;
  /** Daemon start: the record is made to match the process that really runs, whatever it said. */
  reconcile?: boolean;
}
export const DEFAULT_STOP_TIMEOUT_S = 30;
export const START_FAILED = 'start-failed';
export const EXITED_WHILE_DOWN = 'exited while the daemon was down';
/** The daemon died between asking the engine for a start and recording the pid. */
export const START_INTERRUPTED = 'start interrupted by a daemon restart';
/** A VM process ran that the record did not know (its start was never recorded) and it answered: adopted. */
export const ADOPTED_UNRECORDED = 'adopted after a daemon restart: its start had not been recorded';
/** A VM process of ours that does not answer on its control socket after a daemon restart. */
export const KILLED_UNRESPONSIVE = 'killed after a daemon restart: its process did not answer';
/** How long a re-adopted VM may take to report its state before it counts as not answering. */
const RECOVER_QUERY_MS = 5000;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new HangarError('TIMEOUT', `${what} within ${ms} ms`)), ms); });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

export class VmManager {
  private readonly live = new Map<string, LiveVm>();
  private readonly locks = new Map<string, Promise<void>>();
  /** Names being created but not yet in the store. */
  private readonly pending = new Set<string>();
  private readonly imageBuilds = new Map<string, Promise<ResolvedImage>>();
  private shuttingDown = false;
  readonly admission: Admission;
  /** Disks of VMs (null without storage); attach/detach/list live in disks/vm-ops.ts. */
  readonly disks: DiskService | null;
  readonly diskOps: VmDiskOps;
  /** ISO insert/eject (iso-media.ts). */
  readonly isoOps: VmIsoOps;

  constructor(private readonly d: VmManagerDeps) {
    const host = d.hostResources ?? hostResources();
    this.admission = new Admission({
      settings: d.admission ?? defaultSettings(host),
      host,
      committed: () => this.committed(),
      defined: () => this.d.store.listVms().length + this.pending.size,
    });
    this.disks = d.storage ? new DiskService(d.storage, d.log) : null;
    this.diskOps = new VmDiskOps({
      store: d.store, operations: d.operations, disks: this.disks, log: d.log,
      withLock: (name, fn) => this.withLock(name, fn),
      handleOf: (name) => this.live.get(name)?.handle ?? null,
    });
    d.storage?.setOnlineResizeHook((req) => this.diskOps.resizeOnline(req.vm, req.device, req.sizeBytes));
    this.isoOps = new VmIsoOps({
      store: d.store, storage: d.storage, log: d.log,
      withLock: (name, fn) => this.withLock(name, fn),
      handleOf: (name) => this.live.get(name)?.handle ?? null,
    });
  }

  // --- paths ---------------------------------------------------------------

  runDir(name: string): string {
    return path.join(this.d.dataDir, 'vms', name);
  }

  consoleLog(name: string): string {
    return path.join(this.runDir(name), 'console.log');
  }

  /** The console log of a VM that exists (NOT_FOUND otherwise); read it with readConsoleTail (console-log.ts). */
  consoleLogOf(name: string): string {
    this.d.store.requireVm(name);
    return this.consoleLog(name);
  }

  private configFile(name: string): string {
    return path.join(this.runDir(name), 'engine-config.json');
  }

  // --- reading -------------------------------------------------------------

  toVm(r: VmRecord): Vm {
    const running = r.state === 'running' || r.state === 'paused';
    return {
      id: r.id,
      name: r.name,
      state: r.state,
      spec: r.spec,
      runtime: {
        pid: r.pid,
        accel: r.accel,
        startedAt: r.startedAt,
        uptimeSeconds: running && r.startedAt ? Math.max(0, (Date.now() - Date.parse(r.startedAt)) / 1000) : null,
        lastExit: r.lastExit,
        ...(this.d.networks && r.spec.nics?.length ? { nics: this.d.networks.nicStates(r) } : {}),
      },
      display: displayOf(r.spec, this.runDir(r.name)),
      createdAt: r.createdAt,
    };
  }

  list(): Vm[] {
    return this.d.store.listVms().map((r) => this.toVm(r));
  }

  /** One VM, with the process's RSS and CPU time when it runs. */
  async get(name: string): Promise<Vm> {
    const vm = this.toVm(this.d.store.requireVm(name));
    const live = this.live.get(name);
    if (live && (vm.state === 'running' || vm.state === 'paused')) {
      try {
        const s = await Promise.race([live.handle.stats(), new Promise<null>((r) => setTimeout(() => r(null), 1000).unref())]);
        if (s) { vm.runtime.rssBytes = s.rssBytes; vm.runtime.cpuSeconds = s.cpuSeconds; }
      } catch { /* stats are a bonus */ }
    }
    return vm;
  }

  /** CPUs and memory held by VMs that have (or are about to have) a process. */
  committed(): Usage {
    let cpus = 0;
    let memoryBytes = 0;
    for (const r of this.d.store.listVms()) {
      if (ACTIVE_STATES.has(r.state)) { cpus += r.spec.cpus; memoryBytes += r.spec.memoryBytes; }
    }
    return { cpus, memoryBytes };
  }

  /** The admission budget: what active VMs hold against what this daemon admits. */
  budget(): AdmissionBudget {
    return this.admission.budget();
  }

  /** Names of the VMs defined on an image (an image in use cannot be deleted). */
  imageUsers(image: string): string[] {
    return this.d.store.listVms().filter((r) => r.spec.image === image).map((r) => r.name);
  }

  // --- locking -------------------------------------------------------------

  private withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(name) ?? Promise.resolve();
    const run = prev.then(fn);
    const tail = run.then(() => undefined, () => undefined);
    this.locks.set(name, tail);
    void tail.then(() => { if (this.locks.get(name) === tail) this.locks.delete(name); });
    return run;
  }

  private requireDisks(): DiskService {
    if (!this.disks) throw new HangarError('UNSUPPORTED', 'this daemon has no storage: VMs cannot have disks', { field: 'disks' });
    return this.disks;
  }

  /** The engine's capabilities; UNSUPPORTED when it cannot run VMs on this host. */
  private async usableEngine(name: EngineName): Promise<EngineCapabilities> {
    const caps = await this.d.engines.get(name).capabilities();
    if (!caps.available) {
      throw new HangarError('UNSUPPORTED', `engine "${name}" is not available on this host${caps.reason ? `: ${caps.reason}` : ''}`, { engine: name });
    }
    return caps;
  }

  /**
   * The one way a VM's state changes: checks the change is legal, writes the
   * state with the fields that go with it and the event, in one transaction
   * (subscribers hear of it once it has committed).
   */
  private transition(name: string, to: VmStateName, o: TransitionOptions = {}): VmRecord {
    return this.d.store.transaction(() => {
      const cur = this.d.store.requireVm(name);
      if (!o.reconcile) checkTransition(name, cur.state, to);
      const next = this.d.store.updateVm(name, { ...o.patch, state: to });
      if (o.event) this.d.events.emit(name, o.event, o.reason);
      return next;
    });
  }

  private ensureImage(name: string, progress?: ReportProgress): Promise<ResolvedImage> {
    // One build per image at a time, however many VMs ask for it.
    let p = this.imageBuilds.get(name);
    if (!p) {
      p = this.d.images.ensureImage(name, (stage, percent) => {
        progress?.({ stage: `image: ${stage}`, ...(percent !== undefined ? { percent } : {}) });
      });
      this.imageBuilds.set(name, p);
      const clear = (): void => { if (this.imageBuilds.get(name) === p) this.imageBuilds.delete(name); };
      p.then(clear, clear);
    }
    return p.catch((e: unknown) => {
      throw e instanceof HangarError ? e : new HangarError('ENGINE_FAILED', `image "${name}" could not be prepared: ${toHangarError(e).message}`);
    });
  }

  async imageNames(): Promise<string[]> {
    return (await this.d.images.listImages()).map((i) => i.name);
  }

  // --- actions (each returns the operation at once) ------------------------

  async create(req: VmCreateRequest): Promise<Operation> {
    const name = validateVmName(req.name);
    const taken = (): void => {
      if (this.d.store.getVm(name) || this.pending.has(name)) throw new HangarError('ALREADY_EXISTS', `a VM named "${name}" already exists`, { name });
    };
    taken();
    const caps = await this.usableEngine(req.engine ?? DEFAULT_ENGINE);
    // The one check of the VM's size: against the limits of the engine that will run it.
    const images = await this.d.images.listImages();
    const spec = buildVmSpec(req, { imageNames: images.map((i) => i.name), engine: caps });
    // How it boots (kernel, bios, uefi) and the ISO it boots from, checked against the engine and the image.
    Object.assign(spec, resolveBoot(req, { engine: caps, image: bootImageOf(images.find((i) => i.name === req.image)), hasDisks: (req.disks?.length ?? 0) > 0 || req.rootSize !== undefined, volumes: this.d.storage }));
    if (this.d.networks) {
      // Cloud images (cloud-init configures their NICs) get the daemon's default network unless
      // told otherwise; `hangard --default-network none` turns that off (docs/networking.md).
      const cloudImage = (images.find((i) => i.name === req.image) as { cloudInit?: boolean } | undefined)?.cloudInit === true;
      const nics = await this.d.networks.planNics(name, req, cloudImage);
      if (nics.length) spec.nics = nics;
    } else if (req.nics?.length || (req.network !== undefined && req.network !== 'none')) {
      throw new HangarError('UNSUPPORTED', 'this daemon has no networks', { field: 'network' });
    }
    // Checked again after the awaits: a concurrent create may have taken the name meanwhile.
    taken();
    // Disks besides the root disk, checked against storage now; made in the operation.
    const plans = planDisks(name, req.disks ?? [], [ROOT_DISK]);
    const rootSize = req.rootSize !== undefined ? diskSize(req.rootSize, 'rootSize') : undefined;
    if (plans.length > 0) this.requireDisks().check(name, plans, spec.engine);
    const start = req.start ?? true;
    const want = { cpus: spec.cpus, memoryBytes: spec.memoryBytes };
    this.admission.checkCreate(name, want);
    // A launch that cannot start now is refused before anything is created.
    if (start) this.admission.checkStart(name, want);
    this.pending.add(name);
    return this.d.operations.run(`${start ? 'Launching' : 'Creating'} VM ${name}`, [name], async (progress) => {
      try {
        progress({ stage: 'image' });
        const image = await this.ensureImage(spec.image, progress);
        return await this.withLock(name, async () => {
          // The root disk (from the image's base disk) first, then the others; undone if the VM is not recorded.
          const root = image.disk || rootSize !== undefined ? this.requireDisks().rootPlan(name, image, rootSize) : null;
          const all = root ? [root, ...plans] : plans;
          let disks = spec.disks;
          if (all.length > 0) {
            const svc = this.requireDisks();
            svc.check(name, all, spec.engine);
            disks = await svc.provision(name, all, spec.engine, (stage) => progress({ stage }));
          }
          const rec: VmRecord = {
            id: randomUUID(), name, spec: fitCloudInitToImage({ ...spec, disks }, image), state: 'stopped', pid: null, accel: null,
            startedAt: null, lastExit: null, createdAt: new Date().toISOString(),
          };
          try {
            this.d.store.transaction(() => {
              this.d.store.insertVm(rec);
              // An ISO volume is in use while the VM has it (iso-media.ts).
              attachIsoVolume(this.d.storage, name, rec.spec.iso);
              this.d.events.emit(name, 'created');
            });
          } catch (e) {
            this.disks?.undo(name, all.filter((p) => p.create), all);
            throw e;
          }
          this.pending.delete(name);
          if (start) await this.doStart(name, progress);
          return this.toVm(this.d.store.requireVm(name));
        });
      } finally {
        this.pending.delete(name);
      }
    });
  }

  /** PUT /1.0/vms/{name}/state. Obvious mistakes (unknown VM, wrong state when nothing is queued) fail at once. */
  changeState(name: string, req: VmStateRequest): Operation {
    const rec = this.d.store.requireVm(name);
    if (!this.locks.has(name)) {
      this.checkState(rec, req.action);
      // A start the budget cannot take fails at once (it is checked again when it really starts).
      if (req.action === 'start') this.admission.checkStart(name, { cpus: rec.spec.cpus, memoryBytes: rec.spec.memoryBytes });
    }
    const verb = { start: 'Starting', stop: 'Stopping', restart: 'Restarting', pause: 'Pausing', resume: 'Resuming' }[req.action];
    return this.d.operations.run(`${verb} VM ${name}`, [name], (progress) =>
      this.withLock(name, async () => {
        const cur = this.d.store.requireVm(name);
        this.checkState(cur, req.action);
        const timeoutS = req.timeout ?? DEFAULT_STOP_TIMEOUT_S;
        switch (req.action) {
          case 'start': await this.doStart(name, progress); break;
          case 'stop': await this.doStop(name, req.force ?? false, timeoutS); break;
          case 'restart':
            if (this.live.has(name)) { progress({ stage: 'stopping' }); await this.doStop(name, req.force ?? false, timeoutS); }
            await this.doStart(name, progress);
            break;
          case 'pause': await this.doPause(name); break;
          case 'resume': await this.doResume(name); break;
        }
        return this.toVm(this.d.store.requireVm(name));
      }));
  }

  private checkState(rec: VmRecord, action: VmStateRequest['action']): void {
    const ok: Record<VmStateRequest['action'], string[]> = {
      start: ['stopped', 'crashed'],
      stop: ['running', 'paused'],
      restart: ['running', 'paused', 'stopped', 'crashed'],
      pause: ['running'],
      resume: ['paused'],
    };
    if (!ok[action].includes(rec.state)) {
      throw new HangarError('INVALID_STATE', `cannot ${action} VM "${rec.name}": it is ${rec.state}`, { name: rec.name, state: rec.state, action });
    }
  }

  delete(name: string, force: boolean): Operation {
    const rec = this.d.store.requireVm(name);
    if (!force && ACTIVE_STATES.has(rec.state)) {
      throw new HangarError('INVALID_STATE', `VM "${name}" is ${rec.state}: stop it first or delete with force`, { name, state: rec.state });
    }
    return this.d.operations.run(`Deleting VM ${name}`, [name], () =>
      this.withLock(name, async () => {
        const cur = this.d.store.requireVm(name);
        if (ACTIVE_STATES.has(cur.state) || this.live.has(name)) {
          if (!force) throw new HangarError('INVALID_STATE', `VM "${name}" is ${cur.state}: stop it first or delete with force`, { name, state: cur.state });
          if (this.live.has(name)) await this.doStop(name, true, 0);
        }
        // Its own root volume goes; other volumes are detached and kept (disks/service.ts).
        if (cur.spec.disks.length) this.requireDisks().releaseForDelete(name, cur.spec.disks);
        this.d.store.transaction(() => {
          detachIsoVolume(this.d.storage, name, cur.spec.iso);
          this.d.store.deleteVm(name);
          this.d.events.emit(name, 'deleted');
        });
        fs.rmSync(this.runDir(name), { recursive: true, force: true });
        // Its DHCP reservations and port forwards go with it.
        await this.d.networks?.forgetVm(name, (cur.spec.nics ?? []).map((n) => n.network));
        return { name };
      }));
  }

  // --- the steps, called under the VM's lock -------------------------------

  private async doStart(name: string, progress?: ReportProgress, loadSnapshot?: StartSnapshot): Promise<void> {
    const rec = this.d.store.requireVm(name);
    const engine = this.d.engines.get(rec.spec.engine);
    const caps = await this.usableEngine(rec.spec.engine);
    progress?.({ stage: 'image' });
    const image = await this.ensureImage(rec.spec.image, progress);
    // The engine knows what this host gives its VMs (QEMU: KVM where it runs kernel mode natively, else TCG).
    const accel = caps.defaultAccel;
    if (accel === null) throw new HangarError('UNSUPPORTED', `engine "${engine.name}" has no usable accelerator on this host`, { engine: engine.name });
    const runDir = this.runDir(name);
    fs.mkdirSync(runDir, { recursive: true, mode: 0o700 });
    // The image's command line wins; an image without one boots with the engine's default.
    // An image that can name its host gets the VM's name; the user's arguments come last and win.
    const base = image.cmdline ?? engine.defaultCmdline;
    const hostname = image.hostnameArg ? `${image.hostnameArg}=${name}` : '';
    const parts = [base ?? '', hostname, rec.spec.cmdline].filter((s) => s.length > 0);
    const cmdline = base === undefined && parts.length === 0 ? undefined : parts.join(' ');
    const config: EngineVmConfig = {
      id: rec.id,
      name,
      cpus: rec.spec.cpus,
      memoryBytes: rec.spec.memoryBytes,
      // The image's kernel, or firmware with the ISO, the UEFI variable store and the display (boot.ts).
      ...bootConfig(rec.spec, image, runDir, cmdline, this.d.storage),
      disks: rec.spec.disks.length ? this.requireDisks().attachments(name, rec.spec.disks, rec.spec.engine) : [],
      nics: [],
      accel,
      runDir,
      consoleLog: this.consoleLog(name),
      consoleLogLimit: consoleLogLimitFromEnv(),
      ...(loadSnapshot !== undefined ? { loadSnapshot } : {}),
    };
    // The cloud-init seed (cloud images) and the guest agent channel.
    await attachGuestSide(config, rec, image, caps);
    // Admission and the move to 'starting' happen in one synchronous step: 'starting' commits the
    // VM's memory and vCPUs, so a concurrent start sees them and cannot pass on the same headroom.
    this.admission.checkStart(name, { cpus: rec.spec.cpus, memoryBytes: rec.spec.memoryBytes });
    this.transition(name, 'starting', { patch: { pid: null, accel } });
    progress?.({ stage: 'starting' });
    let handle: VmHandle;
    try {
      // Each NIC's TAP is made and put on its network's bridge before the engine attaches it.
      if (this.d.networks) config.nics = await this.d.networks.attach(rec);
      // Kept next to the VM so a restarted daemon can re-adopt it with the same config.
      fs.writeFileSync(this.configFile(name), JSON.stringify(config, null, 2), { mode: 0o600 });
      handle = await engine.start(config);
    } catch (e) {
      this.d.networks?.detach(rec);
      const err = toHangarError(e, 'ENGINE_FAILED');
      this.transition(name, 'stopped', { patch: { pid: null, startedAt: null, lastExit: { reason: START_FAILED, detail: err.message, at: new Date().toISOString() } } });
      this.d.log.warn({ vm: name, code: err.code, err: err.message }, 'VM failed to start');
      throw new HangarError(err.code === 'INTERNAL' ? 'ENGINE_FAILED' : err.code, `VM "${name}" failed to start: ${err.message}`, { name });
    }
    const live = this.watch(name, handle);
    this.transition(name, 'running', { patch: { pid: handle.pid, accel, startedAt: new Date().toISOString() }, event: 'started' });
    this.armExit(name, live);
    this.d.log.info({ vm: name, pid: handle.pid, accel, engine: engine.name }, 'VM started');
  }

  private async doStop(name: string, force: boolean, timeoutS: number): Promise<void> {
    const live = this.live.get(name);
    const rec = this.d.store.requireVm(name);
    if (!live) {
      // The record says it runs but we hold no process: it cannot be running.
      this.transition(name, 'stopped', { patch: { pid: null, startedAt: null }, event: 'stopped', reason: 'no process' });
      return;
    }
    live.expectExit = true;
    this.transition(name, 'stopping');
    let exited = false;
    if (!force && timeoutS > 0) {
      try {
        // A paused guest cannot react to the power button.
        if (rec.state === 'paused') await live.handle.resume();
        await live.handle.requestShutdown();
        let timer: NodeJS.Timeout | undefined;
        exited = await Promise.race([
          live.exited.then(() => true),
          new Promise<boolean>((r) => { timer = setTimeout(() => r(false), timeoutS * 1000); }),
        ]);
        clearTimeout(timer);
      } catch (e) {
        this.d.log.warn({ vm: name, err: String(e) }, 'graceful shutdown request failed; killing');
      }
    }
    if (!exited) await live.handle.kill();
    await live.exited;
    await live.handled;
  }

  private async doPause(name: string): Promise<void> {
    const live = this.requireLive(name);
    await live.handle.pause();
    this.transition(name, 'paused', { event: 'paused' });
  }

  private async doResume(name: string): Promise<void> {
    const live = this.requireLive(name);
    await live.handle.resume();
    this.transition(name, 'running', { event: 'resumed' });
  }

  /** POST /1.0/vms/{name}/exec: a command run in the guest through its agent (guest-exec.ts). */
  async exec(name: string, req: VmExecRequest): Promise<VmExecResult> {
    const rec = this.d.store.requireVm(name);
    const live = this.live.get(name);
    if (!live || rec.state !== 'running') {
      throw new HangarError('INVALID_STATE', `VM "${name}" is ${rec.state}: commands run in a running VM`, { name, state: rec.state });
    }
    return execInGuest(name, live.handle, req);
  }

  private requireLive(name: string): LiveVm {
    const live = this.live.get(name);
    if (!live) throw new HangarError('INVALID_STATE', `VM "${name}" has no running process`, { name });
    return live;
  }

  // --- for snapshots (src/host/snapshots/manager.ts, VmAccess) --------------

  /** Runs fn under the VM's lock, ordered with every other action on that VM. */
  withVmLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.withLock(name, fn);
  }

  /** The VM's process, if this daemon holds one. */
  liveHandle(name: string): VmHandle | null {
    return this.live.get(name)?.handle ?? null;
  }

  /** Under the VM's lock: starts it, from an internal snapshot when `loadSnapshot` names one. */
  startLocked(name: string, progress?: ReportProgress, loadSnapshot?: StartSnapshot): Promise<void> {
    return this.doStart(name, progress, loadSnapshot);
  }

  /** Under the VM's lock: ends its process at once. */
  killLocked(name: string): Promise<void> {
    return this.doStop(name, true, 0);
  }

  /** Under the VM's lock: resumes a paused VM. */
  resumeLocked(name: string): Promise<void> {
    return this.doResume(name);
  }

  /** Throws when one more VM of this size may not be defined (a copy). */
  checkCreate(name: string, want: { cpus: number; memoryBytes: number }): void {
    this.admission.checkCreate(name, want);
  }

  // --- supervision ---------------------------------------------------------

  /** Starts listening for the process's exit; the store is updated only after armExit. */
  private watch(name: string, handle: VmHandle): LiveVm {
    let resolveExit!: (e: VmExit) => void;
    const exited = new Promise<VmExit>((r) => { resolveExit = r; });
    const live: LiveVm = { handle, exited, handled: exited.then(() => undefined), expectExit: false, hub: null };
    handle.onExit((e) => resolveExit(e));
    this.live.set(name, live);
    return live;
  }

  /** From here on an exit is written to the store (never before the start itself was). */
  private armExit(name: string, live: LiveVm): void {
    live.handled = live.exited.then((exit) => this.recordExit(name, live, exit));
  }

  private recordExit(name: string, live: LiveVm, exit: VmExit): void {
    if (this.live.get(name) !== live || this.shuttingDown) return;
    this.live.delete(name);
    live.hub?.close('VM stopped');
    const crashed = !live.expectExit && (exit.reason === 'crashed' || exit.reason === 'killed');
    const lastExit = { reason: exit.reason, ...(exit.detail ? { detail: exit.detail } : {}), at: new Date().toISOString() };
    try {
      // A VM deleted meanwhile has no record left to update.
      if (this.d.store.getVm(name)) {
        this.transition(name, crashed ? 'crashed' : 'stopped', {
          patch: { pid: null, startedAt: null, lastExit },
          event: crashed ? 'crashed' : 'stopped',
          reason: exit.detail ? `${exit.reason}: ${exit.detail}` : exit.reason,
        });
      }
    } catch (e) {
      this.d.log.error({ vm: name, err: String(e) }, 'could not record VM exit');
    }
    // Its TAPs go with the process (a VM deleted meanwhile took them with it already).
    const rec = this.d.store.getVm(name);
    if (rec) this.d.networks?.detach(rec);
    this.d.log.info({ vm: name, reason: exit.reason, detail: exit.detail, asked: live.expectExit }, crashed ? 'VM crashed' : 'VM stopped');
  }

  /**
   * Daemon start: reconciles every VM's record with the process that really
   * runs (rules in docs/api.md, "Recovery after a daemon restart"):
   * a VM process that answers on its control socket is adopted, whatever the
   * record says; one that does not answer is killed, by its verified pid; a
   * record that says the VM runs when no process does is marked stopped.
   * Each VM ends in one transaction (record and event together). Runs before
   * the API listens, so no action can interleave.
   */
  async recover(): Promise<void> {
    for (const rec of this.d.store.listVms()) {
      try {
        await this.reconcile(rec);
      } catch (e) {
        // One VM that cannot be reconciled must not keep the daemon from starting.
        this.d.log.error({ vm: rec.name, err: String(e) }, 'could not reconcile VM with its process');
      }
    }
  }

  private readConfig(name: string): EngineVmConfig | null {
    try {
      return JSON.parse(fs.readFileSync(this.configFile(name), 'utf8')) as EngineVmConfig;
    } catch {
      return null;
    }
  }

  private async reconcile(rec: VmRecord): Promise<void> {
    const active = ACTIVE_STATES.has(rec.state);
    const engine = this.d.engines.find(rec.spec.engine);
    // No config: the VM never got as far as an engine start, so no process can exist.
    const config = engine ? this.readConfig(rec.name) : null;
    let pid: number | null = null;
    if (engine && config) {
      if (engine.findProcess) pid = await engine.findProcess(config, rec.pid ?? undefined);
      else if (active) pid = rec.pid; // an engine that cannot look: trust the record; adopt() checks it
    }
    if (pid === null || !engine || !config) {
      if (active) this.markStopped(rec.name, rec.pid === null ? START_INTERRUPTED : EXITED_WHILE_DOWN);
      return;
    }

    let handle: VmHandle | null = null;
    let state: 'running' | 'paused' | null = null;
    let why = 'its control socket is gone';
    try {
      handle = await engine.adopt(config, pid);
      if (handle) state = await withTimeout(handle.queryState(), RECOVER_QUERY_MS, 'the VM did not report its state');
    } catch (e) {
      why = toHangarError(e).message;
    }
    if (handle && state) {
      const adopted = handle;
      const unrecorded = !active || rec.pid !== adopted.pid;
      const live = this.watch(rec.name, adopted);
      this.transition(rec.name, state, {
        reconcile: true,
        patch: unrecorded ? { pid: adopted.pid, accel: config.accel, startedAt: new Date().toISOString() } : { pid: adopted.pid },
        ...(unrecorded ? { event: 'started' as const, reason: ADOPTED_UNRECORDED } : {}),
      });
      this.armExit(rec.name, live);
      this.d.log.info({ vm: rec.name, pid: adopted.pid, state, unrecorded }, 'VM re-adopted');
      return;
    }

    handle?.detach();
    // adopt() gave up: the process ended just now, or it lives but does not answer.
    const still = engine.findProcess ? await engine.findProcess(config, pid) : null;
    if (still === null) {
      if (active) this.markStopped(rec.name, rec.pid === null ? START_INTERRUPTED : EXITED_WHILE_DOWN);
      return;
    }
    if (!engine.killProcess) {
      this.d.log.error({ vm: rec.name, pid: still, why }, 'VM process does not answer and this engine cannot end it; left running');
      if (active) this.markStopped(rec.name, rec.pid === null ? START_INTERRUPTED : EXITED_WHILE_DOWN);
      return;
    }
    const gone = await engine.killProcess(config, still);
    const detail = `its process (pid ${still}) did not answer (${why}) and was ${gone ? 'killed' : 'sent SIGKILL but still runs'}`;
    if (!gone) this.d.log.error({ vm: rec.name, pid: still }, 'a stray VM process would not die');
    const reason = active && rec.pid === null ? START_INTERRUPTED : KILLED_UNRESPONSIVE;
    if (active) {
      this.transition(rec.name, 'stopped', { reconcile: true, patch: { pid: null, startedAt: null, lastExit: { reason, detail, at: new Date().toISOString() } }, event: 'stopped', reason: `${reason}: ${detail}` });
    } else {
      // A record that already says stopped or crashed keeps its state and last exit; the event tells.
      this.d.events.emit(rec.name, 'stopped', `${reason}: ${detail}`);
    }
    this.d.log.warn({ vm: rec.name, pid: still, gone, why }, 'killed a VM process that did not answer after a daemon restart');
  }

  private markStopped(name: string, reason: string): void {
    this.transition(name, 'stopped', { reconcile: true, patch: { pid: null, startedAt: null, lastExit: { reason, at: new Date().toISOString() } }, event: 'stopped', reason });
    this.d.log.info({ vm: name, reason }, 'VM marked stopped');
  }

  /** Daemon stop: drop control connections, leave every VM running. */
  shutdown(): void {
    this.shuttingDown = true;
    for (const [, live] of this.live) {
      live.hub?.close('daemon shutting down');
      try { live.handle.detach(); } catch { /* already detached */ }
    }
    this.live.clear();
  }

  // --- display ---------------------------------------------------------------

  /** What the display of a running VM shows (PNG or PPM bytes). */
  async screenshot(name: string, format: ScreenshotFormat): Promise<Buffer> {
    return takeScreenshot(this.requireDisplay(name).handle, this.runDir(name), format);
  }

  /** A stream to the VNC server of a running VM with a display (the seam for a browser console). */
  async openDisplay(name: string): Promise<Socket> {
    this.requireDisplay(name);
    return connectVnc(displayOf(this.d.store.requireVm(name).spec, this.runDir(name))!.socket);
  }

  private requireDisplay(name: string): LiveVm {
    const rec = this.d.store.requireVm(name);
    if (!displayOf(rec.spec, this.runDir(name))) throw new HangarError('INVALID_STATE', `VM "${name}" has no display: it boots its kernel directly and is headless (use its serial console)`, { name });
    const live = this.live.get(name);
    if (!live || (rec.state !== 'running' && rec.state !== 'paused')) {
      throw new HangarError('INVALID_STATE', `VM "${name}" is ${rec.state}: its display is available while it runs`, { name, state: rec.state });
    }
    return live;
  }

  // --- console ---------------------------------------------------------------

  /** Joins the VM's shared console. Input written goes to the VM; output arrives through client.send. */
  async attachConsole(name: string, client: ConsoleClient): Promise<ConsoleConnection> {
    const rec = this.d.store.requireVm(name);
    const live = this.live.get(name);
    if (!live || (rec.state !== 'running' && rec.state !== 'paused')) {
      throw new HangarError('INVALID_STATE', `VM "${name}" is ${rec.state}: its console is available while it runs`, { name, state: rec.state });
    }
    if (!live.hub) {
      const hub: ConsoleHub = new ConsoleHub(() => live.handle.openConsole(), () => { if (live.hub === hub) live.hub = null; });
      live.hub = hub;
    }
    return live.hub.attach(client);
  }
}
