/**
 * The few libc functions Hangar's KVM layer needs (and flock(2), for the
 * image build lock), bound once through koffi.
 * Pointers travel as plain numbers (user-space addresses on x86-64 fit in 47
 * bits, so they are safe integers); `ioctl` is declared twice because koffi
 * needs a fixed signature per call shape: one for scalar arguments, one for a
 * Buffer holding a struct.
 */
import koffi from 'koffi';

const lib = koffi.load('libc.so.6');

export const O_RDWR = 0o2;
export const O_CLOEXEC = 0o2000000;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MAP_FAILED = 2 ** 64 - 1;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const EAGAIN = 11;
export const POLLIN = 0x1;
const EINTR = 4;

const ioctlScalarOnce = lib.func('int ioctl(int fd, unsigned long req, unsigned long arg)') as (fd: number, req: number, arg: number | bigint) => number;
const ioctlPtrOnce = lib.func('int ioctl(int fd, unsigned long req, void *arg)') as (fd: number, req: number, arg: Buffer | null) => number;

/**
 * The call again while the kernel says a signal interrupted it (EINTR): any
 * thread of ours may take one (V8's profiler sends SIGPROF; vCPU threads are
 * kicked with a signal), and an ioctl such as KVM_CREATE_VM that was
 * interrupted did nothing, so it is only to be repeated.
 */
export function retryingEintr<A extends unknown[]>(call: (...a: A) => number): (...a: A) => number {
  return (...a: A): number => {
    for (;;) {
      const r = call(...a);
      if (r !== -1 || koffi.errno() !== EINTR) return r;
    }
  };
}

export const libc = {
  open: lib.func('int open(const char *path, int flags)') as (path: string, flags: number) => number,
  close: lib.func('int close(int fd)') as (fd: number) => number,
  ioctlScalar: retryingEintr(ioctlScalarOnce),
  ioctlPtr: retryingEintr(ioctlPtrOnce),
  /** ioctl that reports EINTR (KVM_RUN: a kick must get the vCPU thread back). */
  ioctlScalarOnce,
  mmap: lib.func('uintptr_t mmap(uintptr_t addr, size_t len, int prot, int flags, int fd, long off)') as (
    addr: number, len: number, prot: number, flags: number, fd: number, off: number) => number | bigint,
  munmap: lib.func('int munmap(uintptr_t addr, size_t len)') as (addr: number, len: number) => number,
  mincore: lib.func('int mincore(uintptr_t addr, size_t len, _Out_ uint8_t *vec)') as (addr: number, len: number, vec: Buffer) => number,
  madvise: lib.func('int madvise(uintptr_t addr, size_t len, int advice)') as (addr: number, len: number, advice: number) => number,
  flock: lib.func('int flock(int fd, int op)') as (fd: number, op: number) => number,
  eventfd: lib.func('int eventfd(unsigned int initval, int flags)') as (initval: number, flags: number) => number,
  read: lib.func('long read(int fd, void *buf, size_t n)') as (fd: number, buf: Buffer, n: number) => number,
  write: lib.func('long write(int fd, const void *buf, size_t n)') as (fd: number, buf: Buffer, n: number) => number,
  /** poll(2) over a Buffer of `struct pollfd` (8 bytes each: int fd, short events, short revents). */
  poll: lib.func('int poll(void *fds, unsigned long nfds, int timeout)') as (fds: Buffer, nfds: number, timeout: number) => number,
  pthreadSelf: lib.func('uint64_t pthread_self()') as () => number | bigint,
  pthreadKill: lib.func('int pthread_kill(uint64_t thread, int sig)') as (thread: number | bigint, sig: number) => number,
};

export function errno(): number {
  return koffi.errno();
}

const ERRNO_NAMES: Map<number, string> = new Map(Object.entries(koffi.os.errno as Record<string, number>).map(([k, v]) => [v, k]));

/** The symbolic name of an errno value ("EINTR"), or "E<number>" when unknown. */
export function errnoName(n: number): string {
  return ERRNO_NAMES.get(n) ?? `E${n}`;
}

/** A live view of `len` bytes of process memory at `addr` (≤ 4 GiB per view). */
export function viewOf(addr: number, len: number): ArrayBuffer {
  return koffi.view(addr, len) as ArrayBuffer;
}

/** A watch on one fd from this thread's event loop (libuv poll): start/stop it, close it for good. */
export interface FdWatch {
  /** (Re)starts watching; `onReadable` replaces the callback when given. */
  start(onReadable?: () => void): void;
  stop(): void;
  close(): void;
}

/**
 * Calls `onReadable` on this thread's event loop whenever `fd` may be readable. The watch
 * never keeps the process alive by itself. koffi hands its callback (status, events) rather
 * than the (events) its typings declare; a wake-up only means "try reading", so neither is
 * passed on.
 */
export function watchReadable(fd: number, onReadable: () => void): FdWatch {
  let cb = onReadable;
  const handler = (): void => cb();
  const handle = koffi.node.poll(fd, { readable: true }, handler);
  handle.unref();
  let closed = false;
  return {
    start(next) {
      if (closed) return;
      if (next) cb = next;
      handle.start({ readable: true }, handler);
    },
    stop() { if (!closed) handle.stop(); },
    close() {
      if (closed) return;
      closed = true;
      handle.stop();
      handle.close();
    },
  };
}

/** mmap's result as a number, or null when it failed. */
export function mapResult(r: number | bigint): number | null {
  const n = typeof r === 'bigint' ? Number(r) : r;
  return n === MAP_FAILED || n === -1 || r === 0xffffffffffffffffn ? null : n;
}
