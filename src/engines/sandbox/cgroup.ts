/**
 * One cgroup per VM process, with memory, pids and CPU limits, on either
 * cgroup layout a host may have:
 *
 * - v2 (unified, Debian 12's default): <mount>/hangar.slice/vm-<id>. The
 *   parent holds no processes (v2's "no internal processes" rule), and the
 *   controllers are switched on in the subtree_control of every ancestor.
 * - v1 (one hierarchy per controller): a vm-<id> folder under
 *   <controller mount>/<the daemon's own cgroup>/hangar in each of memory,
 *   pids and cpu, so whatever bounds the daemon also bounds its VMs (v1
 *   allows processes beside child cgroups).
 *
 * The folders are recorded (CgroupSet) so that cleanup and OOM checks use
 * exactly what was created, even after a daemon restart.
 */
import fs from 'node:fs';
import path from 'node:path';
import { HangarError } from '../../common/errors.js';

export type CgroupKind = 'v1' | 'v2';

export interface CgroupLimits {
  memoryBytes: number;
  pidsMax: number;
  /** CPU time per period, in CPUs (1 = one full CPU). */
  cpus: number;
}

/** The folders of one VM's cgroup: one on v2, one per controller on v1. */
export interface CgroupSet {
  kind: CgroupKind;
  /** v2: [leaf]; v1: the leaf in each controller hierarchy. */
  dirs: string[];
  /** The folder whose memory files tell about OOM kills. */
  memoryDir: string;
}

const CONTROLLERS = ['memory', 'pids', 'cpu'] as const;
const CPU_PERIOD_US = 100_000;
/** Something to block on for a few milliseconds while a cgroup empties. */
const PAUSE = new Int32Array(new SharedArrayBuffer(4));

interface Mount {
  dir: string;
  type: string;
  opts: string[];
}

function mounts(): Mount[] {
  return fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').filter(Boolean).map((l) => {
    const f = l.split(' ');
    return { dir: (f[1] ?? '').replace(/\\040/g, ' '), type: f[2] ?? '', opts: (f[3] ?? '').split(',') };
  });
}

/** This process's cgroup path in the v1 hierarchy whose controller list includes `ctrl`. */
function ownV1Path(ctrl: string): string {
  for (const line of fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
    const [, ctrls, p] = line.split(':');
    if (ctrls !== undefined && p !== undefined && ctrls.split(',').includes(ctrl)) return p;
  }
  return '/';
}

export interface CgroupLayout {
  kind: CgroupKind;
  /** v2: the parent folder (hangar.slice); v1: controller → parent folder. */
  parents: string[];
  /** v2 only: the mount point, whose descendants down to the parent need the controllers enabled. */
  root?: string;
}

/**
 * Where VM cgroups go on this host. `parent` overrides the default parent
 * path inside each hierarchy (e.g. "/hangar.slice"). Throws UNAVAILABLE when
 * neither a v2 hierarchy with the controllers nor v1 hierarchies for all
 * three controllers are mounted.
 */
export function detectCgroupLayout(parent?: string): CgroupLayout {
  const ms = mounts();
  const v2 = ms.find((m) => m.type === 'cgroup2' && hasV2Controllers(m.dir));
  if (v2) return { kind: 'v2', root: v2.dir, parents: [path.join(v2.dir, parent ?? '/hangar.slice')] };
  const parents: string[] = [];
  for (const c of CONTROLLERS) {
    const m = ms.find((x) => x.type === 'cgroup' && x.opts.includes(c));
    if (!m) throw new HangarError('UNAVAILABLE', `cannot confine VM processes: no cgroup v2 with memory, pids and cpu, and no cgroup v1 "${c}" hierarchy is mounted`);
    parents.push(path.join(m.dir, parent ?? path.join(ownV1Path(c), 'hangar')));
  }
  return { kind: 'v1', parents };
}

function hasV2Controllers(dir: string): boolean {
  try {
    const have = fs.readFileSync(path.join(dir, 'cgroup.controllers'), 'utf8').trim().split(/\s+/);
    return CONTROLLERS.every((c) => have.includes(c));
  } catch {
    return false;
  }
}

function write(file: string, value: string): void {
  try {
    fs.writeFileSync(file, value);
  } catch (e) {
    throw new HangarError('UNAVAILABLE', `cgroup: cannot write "${value}" to ${file}: ${(e as Error).message}`);
  }
}

function writeIfPresent(file: string, value: string): void {
  if (fs.existsSync(file)) write(file, value);
}

/**
 * Enables the controllers in the subtree_control of every folder from the v2
 * root down to the parent of `leaf`, creating the folders in between (not
 * the leaf itself).
 */
function enableV2Controllers(root: string, leaf: string): void {
  const rel = path.relative(root, leaf).split(path.sep).filter(Boolean);
  let cur = root;
  rel.forEach((part, i) => {
    const sc = path.join(cur, 'cgroup.subtree_control');
    let on: string[] = [];
    try { on = fs.readFileSync(sc, 'utf8').trim().split(/\s+/); } catch { /* written below */ }
    const missing = CONTROLLERS.filter((c) => !on.includes(c));
    if (missing.length) write(sc, missing.map((c) => `+${c}`).join(' '));
    cur = path.join(cur, part);
    if (i < rel.length - 1) fs.mkdirSync(cur, { recursive: true });
  });
}

/**
 * Creates the VM's cgroup named `leaf` with the limits. A leftover folder of
 * the same name (an earlier run that was not cleaned up) is removed first.
 */
export function createCgroup(layout: CgroupLayout, leaf: string, limits: CgroupLimits): CgroupSet {
  try {
    return createCgroupOnce(layout, leaf, limits);
  } catch (e) {
    // Another daemon's cleanup may have removed the shared parent between our mkdirs: once more.
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT' && !/ENOENT/.test(String(e))) throw e;
    return createCgroupOnce(layout, leaf, limits);
  }
}

function createCgroupOnce(layout: CgroupLayout, leaf: string, limits: CgroupLimits): CgroupSet {
  if (!/^[A-Za-z0-9_.-]{1,100}$/.test(leaf)) throw new HangarError('INVALID_ARGUMENT', `cgroup name ${JSON.stringify(leaf)} is not a plain name`);
  const dirs = layout.parents.map((p) => path.join(p, leaf));
  const set: CgroupSet = { kind: layout.kind, dirs, memoryDir: dirs[0]! };
  removeCgroup(set);
  const memBytes = String(Math.floor(limits.memoryBytes));
  const quota = String(Math.max(1000, Math.round(limits.cpus * CPU_PERIOD_US)));
  try {
    if (layout.kind === 'v2') {
      const dir = dirs[0]!;
      enableV2Controllers(layout.root!, dir);
      fs.mkdirSync(dir);
      write(path.join(dir, 'memory.max'), memBytes);
      // Guest memory must not escape the limit into swap.
      writeIfPresent(path.join(dir, 'memory.swap.max'), '0');
      // An OOM kill takes the whole VM (every process in its cgroup), not one thread's process at random.
      writeIfPresent(path.join(dir, 'memory.oom.group'), '1');
      write(path.join(dir, 'pids.max'), String(limits.pidsMax));
      write(path.join(dir, 'cpu.max'), `${quota} ${CPU_PERIOD_US}`);
    } else {
      const [mem, pids, cpu] = dirs as [string, string, string];
      for (const d of dirs) fs.mkdirSync(d, { recursive: true });
      write(path.join(mem, 'memory.limit_in_bytes'), memBytes);
      // memsw (memory + swap) must be at least the memory limit; equal means no swap.
      writeIfPresent(path.join(mem, 'memory.memsw.limit_in_bytes'), memBytes);
      write(path.join(pids, 'pids.max'), String(limits.pidsMax));
      write(path.join(cpu, 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
      write(path.join(cpu, 'cpu.cfs_quota_us'), quota);
    }
  } catch (e) {
    removeCgroup(set);
    throw e;
  }
  return set;
}

/** The files a process writes its pid to, to join the VM's cgroup (one per hierarchy on v1). */
export function procsFiles(set: CgroupSet): string[] {
  return set.dirs.map((d) => path.join(d, 'cgroup.procs'));
}

function readNumberField(file: string, key: string): number | null {
  try {
    for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
      const [k, v] = line.trim().split(/\s+/);
      if (k === key && v !== undefined) return Number(v);
    }
  } catch { /* gone */ }
  return null;
}

/** True when the kernel's OOM killer has killed a process of this cgroup. */
export function oomKilled(set: CgroupSet): boolean {
  if (set.kind === 'v2') return (readNumberField(path.join(set.memoryDir, 'memory.events'), 'oom_kill') ?? 0) > 0;
  const ctl = path.join(set.memoryDir, 'memory.oom_control');
  const kills = readNumberField(ctl, 'oom_kill');
  // Kernels before 4.13 have no oom_kill counter: under_oom is the best sign there is.
  if (kills !== null) return kills > 0;
  return (readNumberField(ctl, 'under_oom') ?? 0) > 0;
}

/** pids in the cgroup now. */
export function cgroupPids(set: CgroupSet): number[] {
  const out = new Set<number>();
  for (const f of procsFiles(set)) {
    try {
      for (const l of fs.readFileSync(f, 'utf8').split('\n')) if (l.trim()) out.add(Number(l));
    } catch { /* gone */ }
  }
  return [...out];
}

/**
 * Removes the cgroup folders. Anything still in them is the VM's own (a
 * leftover child, say) and is SIGKILLed first. Returns false if a folder
 * could not be removed (still busy).
 */
export function removeCgroup(set: CgroupSet): boolean {
  for (const pid of cgroupPids(set)) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
  }
  let ok = true;
  for (const d of set.dirs) {
    // A task SIGKILLed a moment ago leaves the cgroup once the kernel has torn it down: wait up to ~1 s.
    for (let tries = 0; ; tries++) {
      try {
        fs.rmdirSync(d);
        break;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') break;
        if (code !== 'EBUSY' || tries >= 100) { ok = false; break; }
        Atomics.wait(PAUSE, 0, 0, 10);
      }
    }
    // The shared parent goes too once the last VM's folder is gone (it fails, harmlessly, while others remain).
    try { fs.rmdirSync(path.dirname(d)); } catch { /* other VMs, or already gone */ }
  }
  return ok;
}
