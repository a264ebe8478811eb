/**
 * Confinement of one VM process (QEMU or hangar-vmm), the way Firecracker's
 * jailer does it, as far as a daemon can without a helper binary:
 *
 *   prepareVmSandbox(request) → VmSandbox
 *     .wrap(cmd, args)   the command to spawn instead: a shell puts itself into
 *                        the VM's cgroup, then execs setpriv, which drops to the
 *                        VM's uid/gid, clears every capability set and sets
 *                        no_new_privs, then execs the VM binary (so
 *                        /proc/<pid>/cmdline is the binary's own argv);
 *     .explain(exit)     a SIGKILL the cgroup's memory events blame on the OOM
 *                        killer becomes `crashed`, "killed by the kernel: …";
 *     .cleanup()         removes the cgroup, gives the uid and lent files back.
 *
 * The record of what was prepared is kept in <runDir>/sandbox.json (root's,
 * in a sticky folder the VM cannot replace it in), so a restarted daemon can
 * explain and clean up a VM it adopted or found dead (loadVmSandbox).
 *
 * Settings (environment of the daemon):
 *   HANGAR_VM_SANDBOX=0                 run VM processes unconfined (debugging; the
 *                                       default when the daemon is not root)
 *   HANGAR_VM_MEMORY_OVERHEAD_MIB=N     allowance above guest RAM (defaults: per engine)
 *   HANGAR_VM_PIDS_MAX=N                task cap per VM (default 512)
 *   HANGAR_VM_UID_BASE / _UID_COUNT     the uid range (default 0x77000000, 65536)
 *   HANGAR_CGROUP_PARENT=/path          parent cgroup inside each hierarchy
 */
import fs from 'node:fs';
import path from 'node:path';
import { HangarError } from '../../common/errors.js';
import type { EngineVmConfig, VmExit } from '../engine.js';
import { createCgroup, detectCgroupLayout, oomKilled, procsFiles, removeCgroup, type CgroupSet } from './cgroup.js';
import { claimUid, releaseUid, vmGroupGid, DEFAULT_UID_BASE, DEFAULT_UID_COUNT } from './identity.js';
import { closeRunDir, giveBack, grantRead, lend, prepareRunDir, type AccessContext, type OwnerRecord } from './access.js';
import { imageDir } from '../../common/paths.js';

const MIB = 2 ** 20;

/**
 * What the VM binary may use above guest RAM, by engine and accelerator
 * (docs/engines.md, "VM process isolation"): QEMU with TCG keeps a
 * translation cache of up to 1 GiB (QEMU's default tb-size) on top of its own
 * ~100 MiB; hangar-vmm is ~66 MiB beyond guest RAM with one vCPU and ~11 MiB
 * per further vCPU.
 */
export const DEFAULT_OVERHEAD_MIB = { 'qemu-kvm': 256, 'qemu-tcg': 1280, micro: 256 } as const;
export const DEFAULT_PIDS_MAX = 512;
/**
 * CPU quota above the vCPUs, in CPUs (HANGAR_VM_CPU_ALLOWANCE). A VM process runs more than its
 * vCPU threads (QEMU's main loop and I/O threads, hangar-vmm's device thread), and a quota of
 * exactly the vCPUs throttles that work while the guest is busy — but measured on a Debian boot
 * under TCG that cost ≤ 4 % of the boot's time and no boot was faster with one CPU more
 * (docs/benchmarks.md `cpu-quota-debian`), so the default stays at the vCPUs: the VM gets what
 * it was sized for. Raise it for guests whose I/O threads are busy.
 */
export const DEFAULT_CPU_ALLOWANCE = 0;

export interface SandboxRequest {
  engine: 'qemu' | 'micro';
  accel: 'kvm' | 'tcg';
  vmId: string;
  runDir: string;
  cpus: number;
  memoryBytes: number;
  /** Files the VM reads only: kernel, initrd, read-only disks. */
  readFiles: string[];
  /** Files the VM writes: disks, console log. Lent to the VM's uid for the run. */
  writeFiles: string[];
  /** Extra supplementary groups (e.g. the group of /dev/kvm for QEMU with KVM). */
  extraGroups?: number[];
}

export interface SandboxLimits {
  memoryBytes: number;
  pidsMax: number;
  cpus: number;
}

/** What sandbox.json holds. */
export interface SandboxRecord {
  uid: number;
  gid: number;
  groups: number[];
  runDir: string;
  cgroup: CgroupSet;
  limits: SandboxLimits;
  lent: OwnerRecord[];
}

export interface WrappedCommand {
  cmd: string;
  args: string[];
  env: NodeJS.ProcessEnv;
}

export interface VmSandbox {
  readonly record: SandboxRecord;
  wrap(cmd: string, args: string[]): WrappedCommand;
  oomKilled(): boolean;
  /** The exit as the engine saw it, corrected when the memory limit killed the VM. */
  explain(exit: VmExit, killRequested: boolean): VmExit;
  cleanup(): void;
  /** Lets the running VM read `readFiles` and lends it `writeFiles` (a hot-plugged disk); cleanup() gives them back. */
  grant(readFiles: string[], writeFiles: string[]): void;
  /** Gives files lent for the run back to their owners now (an unplugged disk). */
  revoke(files: string[]): void;
}

const RECORD_FILE = 'sandbox.json';

/** True unless turned off, or the daemon is not root (it could not switch users anyway). */
export function sandboxEnabled(): boolean {
  const v = process.env.HANGAR_VM_SANDBOX;
  if (v === '0' || v === 'off' || v === 'false') return false;
  return process.getuid?.() === 0;
}

function envInt(name: string, dflt: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min) throw new HangarError('INVALID_ARGUMENT', `${name} must be a whole number ≥ ${min}, got ${JSON.stringify(raw)}`);
  return n;
}

/** The allowance above guest RAM: HANGAR_VM_MEMORY_OVERHEAD_MIB, else the engine's default. */
export function overheadMib(engine: 'qemu' | 'micro', accel: 'kvm' | 'tcg'): number {
  return envInt('HANGAR_VM_MEMORY_OVERHEAD_MIB', DEFAULT_OVERHEAD_MIB[engine === 'micro' ? 'micro' : (`qemu-${accel}` as const)], 0);
}

export function limitsFor(req: Pick<SandboxRequest, 'engine' | 'accel' | 'cpus' | 'memoryBytes'>): SandboxLimits {
  const overhead = overheadMib(req.engine, req.accel);
  return {
    memoryBytes: req.memoryBytes + overhead * MIB, pidsMax: envInt('HANGAR_VM_PIDS_MAX', DEFAULT_PIDS_MAX, 16),
    cpus: req.cpus + envInt('HANGAR_VM_CPU_ALLOWANCE', DEFAULT_CPU_ALLOWANCE, 0),
  };
}

/** The daemon's environment minus what a VM process has no business reading (API tokens and the like). */
function vmEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/TOKEN|SECRET|PASSW|KEY|CREDENTIAL/i.test(k)) env[k] = v;
  return env;
}

/** util-linux's setpriv, which does the dropping. */
function setprivPath(): string {
  for (const p of ['/usr/bin/setpriv', '/bin/setpriv']) if (fs.existsSync(p)) return p;
  throw new HangarError('UNAVAILABLE', 'setpriv (util-linux) is not installed: it is needed to run VM processes unprivileged');
}

/** The shell that joins the cgroup(s) named before "--" and execs setpriv with the rest. */
const JOIN_AND_DROP = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"';

class Sandbox implements VmSandbox {
  private cleaned = false;
  constructor(readonly record: SandboxRecord) {}

  wrap(cmd: string, args: string[]): WrappedCommand {
    const r = this.record;
    const groups = r.groups.length ? [`--groups=${r.groups.join(',')}`] : ['--clear-groups'];
    const setpriv = [setprivPath(), `--reuid=${r.uid}`, `--regid=${r.gid}`, ...groups, '--no-new-privs',
      '--inh-caps=-all', '--ambient-caps=-all', '--bounding-set=-all', '--', cmd, ...args];
    return { cmd: '/bin/sh', args: ['-c', JOIN_AND_DROP, 'hangar-vm-start', ...procsFiles(r.cgroup), '--', ...setpriv], env: vmEnv() };
  }

  oomKilled(): boolean {
    return oomKilled(this.record.cgroup);
  }

  explain(exit: VmExit, killRequested: boolean): VmExit {
    if (!killRequested && exit.signal === 'SIGSYS') {
      return { ...exit, reason: 'crashed', detail: 'killed by its seccomp filter: a system call off its allow-list (the kernel log has an audit record naming it)' };
    }
    if (killRequested || (exit.signal !== 'SIGKILL' && exit.signal !== null && exit.signal !== undefined)) return exit;
    if (exit.reason !== 'crashed' && exit.reason !== 'killed') return exit;
    if (!this.oomKilled()) return exit;
    const mib = Math.round(this.record.limits.memoryBytes / MIB);
    return { ...exit, reason: 'crashed', detail: `killed by the kernel: memory limit of ${mib} MiB exceeded` };
  }

  grant(readFiles: string[], writeFiles: string[]): void {
    const r = this.record;
    const ctx = accessContext(vmGroupGid(), r.uid, r.runDir);
    for (const f of readFiles) grantRead(f, ctx);
    for (const f of writeFiles) {
      if (r.lent.some((l) => l.path === f)) continue;
      const rec = lend(f, r.uid, ctx);
      if (rec) r.lent.push(rec);
    }
    this.save();
  }

  revoke(files: string[]): void {
    const r = this.record;
    const back = r.lent.filter((l) => files.includes(l.path));
    giveBack(back);
    r.lent = r.lent.filter((l) => !files.includes(l.path));
    this.save();
  }

  private save(): void {
    fs.writeFileSync(path.join(this.record.runDir, RECORD_FILE), JSON.stringify(this.record, null, 2), { mode: 0o600 });
  }

  cleanup(): void {
    // Once: a second call could release a uid another VM has claimed meanwhile.
    if (this.cleaned) return;
    this.cleaned = true;
    const r = this.record;
    removeCgroup(r.cgroup);
    giveBack(r.lent);
    closeRunDir(r.runDir);
    releaseUid(r.uid, r.runDir);
    try { fs.unlinkSync(path.join(r.runDir, RECORD_FILE)); } catch { /* gone */ }
  }
}

/** The daemon re-permissions folders only inside its data directory (above vms/<name>) and image directory. */
function accessContext(groupGid: number, uid: number, runDir: string): AccessContext {
  return { groupGid, vmGid: uid, trees: [path.dirname(path.dirname(runDir)), imageDir()] };
}

/**
 * Prepares everything for one confined VM process: uid, cgroup with limits,
 * file access. What an earlier run of this VM left behind is cleaned up
 * first. On failure nothing is left half-made.
 */
export function prepareVmSandbox(req: SandboxRequest): VmSandbox {
  loadVmSandbox(req.runDir)?.cleanup();
  setprivPath();
  const groupGid = vmGroupGid();
  const limits = limitsFor(req);
  const layout = detectCgroupLayout(process.env.HANGAR_CGROUP_PARENT || undefined);
  const uid = claimUid(req.vmId, req.runDir, { base: envInt('HANGAR_VM_UID_BASE', DEFAULT_UID_BASE, 1000), count: envInt('HANGAR_VM_UID_COUNT', DEFAULT_UID_COUNT, 1) });
  const lent: OwnerRecord[] = [];
  let cgroup: CgroupSet | null = null;
  try {
    const ctx = accessContext(groupGid, uid, req.runDir);
    prepareRunDir(req.runDir, ctx);
    for (const f of req.readFiles) grantRead(f, ctx);
    for (const f of req.writeFiles) {
      const rec = lend(f, uid, ctx);
      if (rec) lent.push(rec);
    }
    cgroup = createCgroup(layout, `vm-${req.vmId.replace(/[^A-Za-z0-9_-]/g, '_')}`, limits);
    const record: SandboxRecord = { uid, gid: uid, groups: [groupGid, ...(req.extraGroups ?? [])], runDir: req.runDir, cgroup, limits, lent };
    fs.writeFileSync(path.join(req.runDir, RECORD_FILE), JSON.stringify(record, null, 2), { mode: 0o600 });
    return new Sandbox(record);
  } catch (e) {
    if (cgroup) removeCgroup(cgroup);
    giveBack(lent);
    closeRunDir(req.runDir);
    releaseUid(uid, req.runDir);
    throw e;
  }
}

/** The sandbox a VM in `runDir` was started in, from its record; null when there is none (or it is not root's). */
export function loadVmSandbox(runDir: string): VmSandbox | null {
  const file = path.join(runDir, RECORD_FILE);
  try {
    const st = fs.lstatSync(file);
    // Only a record the daemon wrote counts: the VM cannot write root-owned files.
    if (!st.isFile() || st.uid !== 0) return null;
    const rec = JSON.parse(fs.readFileSync(file, 'utf8')) as SandboxRecord;
    if (rec.runDir !== runDir || !rec.cgroup || !Array.isArray(rec.cgroup.dirs) || !Array.isArray(rec.lent)) return null;
    return new Sandbox(rec);
  } catch {
    return null;
  }
}

/** Cleans up what a VM that no longer runs left behind (a daemon finding it dead). */
export function cleanupStaleSandbox(runDir: string): void {
  loadVmSandbox(runDir)?.cleanup();
}

/** For QEMU with KVM: the group that opens /dev/kvm for the VM user, [] when anyone may, or an error. */
export function kvmGroups(): number[] {
  let st: fs.Stats;
  try {
    st = fs.statSync('/dev/kvm');
  } catch {
    throw new HangarError('UNAVAILABLE', '/dev/kvm does not exist');
  }
  if ((st.mode & 0o006) === 0o006) return [];
  if (st.gid !== 0 && (st.mode & 0o060) === 0o060) return [st.gid];
  throw new HangarError('UNAVAILABLE', `a confined QEMU cannot open /dev/kvm (mode ${(st.mode & 0o777).toString(8)}, group ${st.gid}): make it group kvm, mode 0660 (Debian's udev rule does), or use accel tcg`);
}

/**
 * The engines' entry point: the sandbox for this VM config, or null when
 * confinement is off. Kernel, initrd and read-only disks are read; writable
 * disks, the console log and a UEFI variable store are lent to the VM's uid.
 */
/** `extraReadFiles`: files this run reads besides the config's (a snapshot being restored). */
export function sandboxFor(engine: 'qemu' | 'micro', config: EngineVmConfig, extraReadFiles: string[] = []): VmSandbox | null {
  if (!sandboxEnabled()) return null;
  // Backing files of overlays (an image's base disk) are read, never written, whatever the disk is.
  const ro = [...config.disks.filter((d) => d.readOnly).map((d) => d.path), ...config.disks.flatMap((d) => d.backingFiles ?? [])];
  const rw = config.disks.filter((d) => !d.readOnly).map((d) => d.path);
  // Rotated console logs beside the log are the VM's to rename and replace too.
  let rotated: string[] = [];
  try {
    const base = path.basename(config.consoleLog);
    rotated = fs.readdirSync(path.dirname(config.consoleLog)).filter((f) => f.startsWith(`${base}.`)).map((f) => path.join(path.dirname(config.consoleLog), f));
  } catch { /* no folder yet */ }
  return prepareVmSandbox({
    engine,
    accel: config.accel,
    vmId: config.id,
    runDir: config.runDir,
    cpus: config.cpus,
    memoryBytes: config.memoryBytes,
    // A firmware-booted VM reads no kernel; its CD-ROM comes as a descriptor the engine opened.
    readFiles: [...(config.boot && !config.firmware ? [config.boot.kernel, ...(config.boot.initrd ? [config.boot.initrd] : [])] : []), ...ro, ...extraReadFiles],
    // A UEFI VM writes its own variable store (boot entries the guest saves).
    writeFiles: [...rw, config.consoleLog, ...rotated, ...(config.firmware?.varsFile ? [config.firmware.varsFile] : [])],
    // QEMU opens /dev/kvm itself; hangar-vmm gets it as an inherited descriptor.
    ...(engine === 'qemu' && config.accel === 'kvm' ? { extraGroups: kvmGroups() } : {}),
  });
}
