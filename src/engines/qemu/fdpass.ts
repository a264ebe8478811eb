/**
 * Handing a file descriptor to a running QEMU over its QMP socket. QEMU takes
 * descriptors that arrive as SCM_RIGHTS ancillary data with a message and
 * keeps them for the `getfd`/`add-fd` command in that message. Node's
 * net.Socket cannot send ancillary data, so the message goes out through
 * sendmsg(2) on the socket's own descriptor (bound once through koffi). The
 * caller makes sure nothing else of ours is queued on the socket first, so
 * the bytes stay in order.
 */
import koffi from 'koffi';
import { HangarError } from '../../common/errors.js';

const lib = koffi.load('libc.so.6');
koffi.struct('hangar_iovec', { base: 'void *', len: 'size_t' });
koffi.struct('hangar_msghdr', {
  name: 'void *', namelen: 'uint32_t', iov: 'hangar_iovec *', iovlen: 'size_t', control: 'void *', controllen: 'size_t', flags: 'int',
});
const sendmsg = lib.func('long sendmsg(int fd, const hangar_msghdr *msg, int flags)') as (fd: number, msg: unknown, flags: number) => number;

const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const MSG_NOSIGNAL = 0x4000;
const EAGAIN = 11;
const EINTR = 4;
/** struct cmsghdr (len: size_t, level: int, type: int) followed by one int, padded to 8 bytes. */
const CMSG_HEADER = 16;
const CMSG_LEN_ONE_FD = CMSG_HEADER + 4;
const CMSG_SPACE_ONE_FD = 24;

/**
 * Sends `data` with `fd` attached on the connected Unix socket `socketFd`.
 * Returns how many bytes of `data` went out (the descriptor travels with the
 * first byte; the caller writes any rest normally). Retries while the socket
 * buffer is full.
 */
export async function sendWithFd(socketFd: number, data: Buffer, fd: number): Promise<number> {
  const control = Buffer.alloc(CMSG_SPACE_ONE_FD);
  control.writeBigUInt64LE(BigInt(CMSG_LEN_ONE_FD), 0);
  control.writeInt32LE(SOL_SOCKET, 8);
  control.writeInt32LE(SCM_RIGHTS, 12);
  control.writeInt32LE(fd, CMSG_HEADER);
  for (let attempt = 0; ; attempt++) {
    const n = Number(sendmsg(socketFd, { name: null, namelen: 0, iov: { base: data, len: data.length }, iovlen: 1, control, controllen: control.length, flags: 0 }, MSG_NOSIGNAL));
    if (n >= 0) return n;
    const e = koffi.errno();
    if ((e !== EAGAIN && e !== EINTR) || attempt > 200) throw new HangarError('UNAVAILABLE', `could not pass a descriptor to QEMU (sendmsg errno ${e})`, { errno: e });
    await new Promise((r) => setTimeout(r, 10));
  }
}
