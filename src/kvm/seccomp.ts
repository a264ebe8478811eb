/**
 * hangar-vmm's seccomp filter: once the VM runs (vCPU threads created,
 * devices open, sockets listening), the process may only make the system
 * calls on VMM_SYSCALLS; any other call kills the whole process
 * (SECCOMP_RET_KILL_PROCESS), so a guest that takes over the VMM through a
 * device-model bug cannot open new files outside what the list allows,
 * start programs, trace others or load kernel modules.
 *
 * The filter is classic BPF built here: check the architecture first (an
 * x32 or i386 call could otherwise smuggle a different number past the
 * list), then compare the call number with each allowed one. It is
 * installed with SECCOMP_FILTER_FLAG_TSYNC so every thread that exists
 * (vCPU workers, libuv's pool, V8's helpers) gets it; threads started later
 * inherit it.
 *
 * How the list was found (docs/vmm.md, "seccomp"): the e2e tests of
 * hangar-vmm (vmm-*, virtio-*) and the daemon tests ran under `strace -f`
 * with HANGAR_VMM_SECCOMP=trace (a filter that allows everything, so the
 * seccomp() call marks the point), and every call any thread of a VMM made
 * after it was taken.
 *
 * HANGAR_VMM_SECCOMP=0 (or --no-seccomp) turns it off for debugging;
 * =trace installs the allow-everything marker filter.
 */
import koffi from 'koffi';
import type { SeccompMode } from './seccomp-mode.js';

export { seccompModeFromEnv, type SeccompMode } from './seccomp-mode.js';

/** x86-64 system call numbers (asm/unistd_64.h) of every call on the list. */
export const X86_64_SYSCALLS: Readonly<Record<string, number>> = {
  read: 0, write: 1, open: 2, close: 3, stat: 4, fstat: 5, lstat: 6, poll: 7, lseek: 8, mmap: 9, mprotect: 10, munmap: 11, brk: 12,
  rt_sigaction: 13, rt_sigprocmask: 14, rt_sigreturn: 15, ioctl: 16, pread64: 17, pwrite64: 18, readv: 19, writev: 20, access: 21,
  pipe: 22, sched_yield: 24, mremap: 25, madvise: 28, dup: 32, dup2: 33, nanosleep: 35, getpid: 39, sendfile: 40, socket: 41,
  connect: 42, accept: 43, sendto: 44, recvfrom: 45, sendmsg: 46, recvmsg: 47, shutdown: 48, bind: 49, listen: 50,
  getsockname: 51, getpeername: 52, socketpair: 53, setsockopt: 54, getsockopt: 55, clone: 56, exit: 60, wait4: 61, kill: 62,
  uname: 63, fcntl: 72, flock: 73, fsync: 74, fdatasync: 75, ftruncate: 77, getcwd: 79, rename: 82, mkdir: 83, unlink: 87,
  readlink: 89, fchmod: 91, umask: 95, gettimeofday: 96, getrlimit: 97, getrusage: 98, sysinfo: 99, getuid: 102, getgid: 104,
  geteuid: 107, getegid: 108, getppid: 110, sigaltstack: 131, prctl: 157, arch_prctl: 158, setrlimit: 160, gettid: 186,
  tkill: 200, futex: 202, sched_setaffinity: 203, sched_getaffinity: 204, epoll_create: 213, getdents64: 217,
  set_tid_address: 218, fadvise64: 221, timer_create: 222, timer_settime: 223, timer_delete: 226, clock_gettime: 228,
  clock_getres: 229, clock_nanosleep: 230, exit_group: 231, epoll_wait: 232, epoll_ctl: 233, tgkill: 234, openat: 257,
  mkdirat: 258, newfstatat: 262, unlinkat: 263, renameat: 264, readlinkat: 267, faccessat: 269, pselect6: 270, ppoll: 271,
  set_robust_list: 273, get_robust_list: 274, epoll_pwait: 281, timerfd_create: 283, eventfd: 284, fallocate: 285,
  timerfd_settime: 286, timerfd_gettime: 287, accept4: 288, signalfd4: 289, eventfd2: 290, epoll_create1: 291, dup3: 292,
  pipe2: 293, preadv: 295, pwritev: 296, prlimit64: 302, sendmmsg: 307, getcpu: 309, renameat2: 316, seccomp: 317,
  getrandom: 318, memfd_create: 319, membarrier: 324, copy_file_range: 326, preadv2: 327, pwritev2: 328, statx: 332,
  rseq: 334, clone3: 435, mincore: 27, capget: 125, faccessat2: 439, epoll_pwait2: 441,
};

/**
 * What hangar-vmm (Node.js, libuv, V8, koffi, the KVM ioctls) calls once
 * the VM runs. Grouped by purpose; see the header for how it was derived.
 */
export const VMM_SYSCALLS: readonly string[] = [
  // memory: V8's heap, guest RAM views, worker stacks
  'mmap', 'munmap', 'mprotect', 'madvise', 'mincore', 'brk', 'mremap',
  // threads and their synchronisation (vCPU workers, libuv pool, V8 platform); clone only with
  // CLONE_THREAD, clone3 answers ENOSYS (see buildFilter); Node checks capget when a worker starts
  'futex', 'clone', 'clone3', 'capget', 'set_robust_list', 'rseq', 'sched_yield', 'gettid', 'sched_getaffinity', 'membarrier',
  'exit', 'exit_group',
  // signals: Node's handlers, vCPU kicks (pthread_kill → tgkill), SIGTERM/SIGINT handling
  'rt_sigaction', 'rt_sigprocmask', 'rt_sigreturn', 'sigaltstack', 'tgkill', 'getpid',
  // the event loop and timers
  'epoll_wait', 'epoll_pwait', 'epoll_ctl', 'epoll_create1', 'eventfd2', 'clock_gettime', 'clock_nanosleep', 'nanosleep',
  'timerfd_create', 'timerfd_settime', 'poll', 'ppoll', 'pipe2',
  // file and socket I/O on descriptors: disks, TAP, console log, control and console sockets
  'read', 'write', 'readv', 'writev', 'pread64', 'pwrite64', 'preadv', 'pwritev', 'close', 'fstat', 'newfstatat', 'statx',
  'lseek', 'fcntl', 'ioctl', 'fsync', 'fdatasync', 'fallocate',
  // a snapshot's memory file is sized (sparse) with ftruncate (src/vmm/snapshot/memory-file.ts)
  'ftruncate',
  'accept4', 'recvfrom', 'sendto', 'recvmsg', 'sendmsg', 'shutdown', 'getsockopt', 'setsockopt', 'getsockname', 'getpeername',
  // files it still opens by itself: the exit record, a reopened console log; Node's lazy module loads
  'openat', 'unlink', 'rename', 'readlink', 'getdents64',
  // process information Node asks for (process.memoryUsage, cpuUsage, hrtime)
  'getrusage', 'getrandom', 'prlimit64', 'uname', 'getuid', 'geteuid', 'getgid', 'getegid', 'getcwd', 'sysinfo',
];

const AUDIT_ARCH_X86_64 = 0xc000003e;
const X32_SYSCALL_BIT = 0x40000000;
const CLONE_THREAD = 0x00010000;
const ENOSYS = 38;
export const SECCOMP_RET_KILL_PROCESS = 0x80000000;
export const SECCOMP_RET_ALLOW = 0x7fff0000;
const SECCOMP_RET_ERRNO = 0x00050000;
const SECCOMP_SET_MODE_FILTER = 1;
const SECCOMP_FILTER_FLAG_TSYNC = 1;
const SYS_SECCOMP = 317;
const PR_SET_NO_NEW_PRIVS = 38;

// Classic BPF opcodes.
const BPF_LD_W_ABS = 0x20;
const BPF_JEQ_K = 0x15;
const BPF_JGE_K = 0x35;
const BPF_JSET_K = 0x45;
const BPF_RET_K = 0x06;
/** Offsets into struct seccomp_data: nr, arch, then args[0] (its low 32 bits, little-endian). */
const OFF_NR = 0;
const OFF_ARCH = 4;
const OFF_ARG0 = 16;

export interface BpfInsn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

/** Numbers for names; an unknown name is a programming error and throws. */
export function syscallNumbers(names: readonly string[]): number[] {
  return [...new Set(names.map((n) => {
    const nr = X86_64_SYSCALLS[n];
    if (nr === undefined) throw new Error(`seccomp: unknown x86-64 system call "${n}"`);
    return nr;
  }))].sort((a, b) => a - b);
}

/** An instruction whose jumps name labels, resolved by assemble(). */
type Asm = { code: number; k: number; jt?: string; jf?: string } | { label: string };

function assemble(src: Asm[]): BpfInsn[] {
  const at = new Map<string, number>();
  const code: Array<Exclude<Asm, { label: string }>> = [];
  for (const a of src) {
    if ('label' in a) at.set(a.label, code.length);
    else code.push(a);
  }
  return code.map((a, pc) => {
    const off = (l?: string): number => {
      if (l === undefined) return 0;
      const target = at.get(l);
      if (target === undefined) throw new Error(`seccomp: no label ${l}`);
      const d = target - pc - 1;
      // Classic BPF jumps forward only, at most 255 instructions.
      if (d < 0 || d > 255) throw new Error(`seccomp: jump to ${l} out of range (${d}); too many calls for one linear filter`);
      return d;
    };
    return { code: a.code, jt: off(a.jt), jf: off(a.jf), k: a.k >>> 0 };
  });
}

/**
 * The filter program. Kill unless the architecture is x86-64 (a 32-bit or
 * x32 call would carry different numbers); `clone3` answers ENOSYS, so that
 * glibc falls back to `clone`, whose flags a filter can see: `clone` is
 * allowed only with CLONE_THREAD (new threads, never new processes) when it
 * is on the list; the listed numbers are allowed; `defaultAction` for the rest.
 */
export function buildFilter(allowed: readonly number[], defaultAction = SECCOMP_RET_KILL_PROCESS): BpfInsn[] {
  const cloneNr = X86_64_SYSCALLS.clone!;
  const clone3Nr = X86_64_SYSCALLS.clone3!;
  const checkClone = allowed.includes(cloneNr);
  const plain = allowed.filter((nr) => nr !== cloneNr && nr !== clone3Nr);
  return assemble([
    { code: BPF_LD_W_ABS, k: OFF_ARCH },
    { code: BPF_JEQ_K, k: AUDIT_ARCH_X86_64, jt: 'nr', jf: 'kill' },
    { label: 'kill' },
    { code: BPF_RET_K, k: SECCOMP_RET_KILL_PROCESS },
    { label: 'nr' },
    { code: BPF_LD_W_ABS, k: OFF_NR },
    // x32 calls (bit 30 set) go to the default action, past the list.
    { code: BPF_JGE_K, k: X32_SYSCALL_BIT, jt: 'default' },
    ...(checkClone ? [{ code: BPF_JEQ_K, k: clone3Nr, jt: 'enosys' }, { code: BPF_JEQ_K, k: cloneNr, jt: 'clone' }] : []),
    ...plain.map((nr) => ({ code: BPF_JEQ_K, k: nr, jt: 'allow' })),
    { label: 'default' },
    { code: BPF_RET_K, k: defaultAction },
    ...(checkClone ? [
      { label: 'clone' },
      { code: BPF_LD_W_ABS, k: OFF_ARG0 },
      { code: BPF_JSET_K, k: CLONE_THREAD, jt: 'allow' },
      { code: BPF_RET_K, k: defaultAction },
      { label: 'enosys' },
      { code: BPF_RET_K, k: SECCOMP_RET_ERRNO | ENOSYS },
    ] : []),
    { label: 'allow' },
    { code: BPF_RET_K, k: SECCOMP_RET_ALLOW },
  ]);
}

/**
 * A reference interpreter of the programs buildFilter makes (word loads from
 * seccomp_data, JEQ/JGE/JSET with constants, RET), for unit tests: what the
 * kernel would answer for a call.
 */
export function runFilter(prog: readonly BpfInsn[], nr: number, arch = AUDIT_ARCH_X86_64, arg0 = 0): number {
  let a = 0;
  for (let pc = 0; pc < prog.length; pc++) {
    const i = prog[pc]!;
    switch (i.code) {
      case BPF_LD_W_ABS: a = i.k === OFF_NR ? nr >>> 0 : i.k === OFF_ARCH ? arch >>> 0 : i.k === OFF_ARG0 ? arg0 >>> 0 : 0; break;
      case BPF_JEQ_K: pc += a === i.k ? i.jt : i.jf; break;
      case BPF_JGE_K: pc += a >= i.k ? i.jt : i.jf; break;
      case BPF_JSET_K: pc += (a & i.k) !== 0 ? i.jt : i.jf; break;
      case BPF_RET_K: return i.k >>> 0;
      default: throw new Error(`unexpected opcode ${i.code}`);
    }
  }
  throw new Error('filter fell off its end');
}

/**
 * Installs the filter on every thread of this process (no_new_privs first,
 * which seccomp requires of a process without CAP_SYS_ADMIN). Throws when
 * the kernel refuses, so a VMM never runs believing it is filtered.
 */
export function installSeccomp(mode: SeccompMode = 'enforce'): void {
  if (mode === 'off') return;
  const lib = koffi.load('libc.so.6');
  const prctl = lib.func('int prctl(int op, unsigned long a, unsigned long b, unsigned long c, unsigned long d)') as (...a: number[]) => number;
  const syscall = lib.func('long syscall(long nr, ...)') as (...a: unknown[]) => number;
  const SockFilter = koffi.struct('hangar_sock_filter', { code: 'uint16', jt: 'uint8', jf: 'uint8', k: 'uint32' });
  const SockFprog = koffi.struct('hangar_sock_fprog', { len: 'uint16', filter: koffi.pointer(SockFilter) });
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) !== 0) throw new Error(`prctl(PR_SET_NO_NEW_PRIVS) failed: errno ${koffi.errno()}`);
  const prog = mode === 'trace' ? buildFilter([], SECCOMP_RET_ALLOW) : buildFilter(syscallNumbers(VMM_SYSCALLS));
  const r = syscall(SYS_SECCOMP, 'uint', SECCOMP_SET_MODE_FILTER, 'uint', SECCOMP_FILTER_FLAG_TSYNC, koffi.pointer(SockFprog), { len: prog.length, filter: prog });
  if (r !== 0) throw new Error(r > 0 ? `seccomp: thread ${r} could not be synchronised` : `seccomp(SET_MODE_FILTER) failed: errno ${koffi.errno()}`);
}
