/**
 * eventfds on the device thread's event loop: created non-blocking, watched
 * through libc.ts's event-loop poll, drained (8-byte counter read) before the
 * callback runs so one wake-up covers every signal that arrived before it.
 */
import { check } from './errors.js';
import { EFD_CLOEXEC, EFD_NONBLOCK, libc, watchReadable } from './libc.js';

export interface WatchedEventFd {
  readonly fd: number;
  close(): void;
}

export function createEventFd(): number {
  return check('eventfd', libc.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
}

/** Calls `onEvent` on this thread's event loop each time the eventfd is signalled. */
export function watchEventFd(fd: number, onEvent: () => void): WatchedEventFd {
  const buf = Buffer.alloc(8);
  // The fd is non-blocking: a read that finds nothing just returns EAGAIN.
  const watch = watchReadable(fd, () => {
    if (libc.read(fd, buf, 8) === 8) onEvent();
  });
  return { fd, close: () => watch.close() };
}

/** Signals an eventfd (adds 1 to its counter). */
export function signalEventFd(fd: number): void {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(1n);
  libc.write(fd, b, 8);
}
