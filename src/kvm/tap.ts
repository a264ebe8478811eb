/**
 * A descriptor on a TAP interface: /dev/net/tun, then the TUNSETIFF ioctl
 * with a `struct ifreq` (the interface name, then the flags), non-blocking,
 * as both VMMs read it (QEMU would set that itself; hangar-vmm relies on it).
 * One Ethernet frame per read() or write() on the descriptor.
 *
 * If an interface of that name exists (the daemon made it, or `ip tuntap
 * add`), the descriptor is attached to it; otherwise the kernel makes one
 * that disappears when the descriptor closes. The descriptor belongs to the
 * network namespace the interface was in when it was opened and keeps
 * working after `ip link set NAME netns NS`.
 *
 * Used by the engines (the daemon opens the TAP and passes it to a confined
 * VM process) and by hangar-vmm (when it opens one itself).
 */
import fs from 'node:fs';
import { HangarError } from '../common/errors.js';
// The rules alone: names.js would load TypeBox into hangar-vmm's machine model.
import { TAP_NAME_RULE, isTapName } from '../api/name-rules.js';
import { errno, errnoName, libc } from './libc.js';

const TUNSETIFF = 0x400454ca; // _IOW('T', 202, int)
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
/** Frames carry a virtio-net header (checksum and segmentation offload), as QEMU's virtio-net wants. */
const IFF_VNET_HDR = 0x4000;
const IFNAMSIZ = 16;
/** sizeof(struct ifreq) on x86-64: the name, then a 24-byte union whose first member here is the flags. */
const IFREQ_SIZE = 40;

export interface TapFd {
  /** The interface's name as the kernel reports it. */
  readonly name: string;
  readonly fd: number;
}

/** Refuses what is not a TAP name by the one rule in src/api/name-rules.ts (what Linux takes, minus the awkward characters). */
export function checkTapName(name: string): void {
  if (!isTapName(name)) throw new HangarError('INVALID_ARGUMENT', `"${name}" is not a valid interface name (${TAP_NAME_RULE})`);
}

/**
 * A new descriptor on the TAP `name`, with virtio-net headers when `vnetHdr`.
 * Errors: INVALID_ARGUMENT (not a TAP name), UNAVAILABLE (no /dev/net/tun,
 * or the kernel refused the interface; `details.errno` says why, EPERM when
 * the TAP belongs to someone else or the caller may not make one).
 */
export function openTapFd(name: string, options: { vnetHdr: boolean }): TapFd {
  checkTapName(name);
  let fd: number;
  try {
    fd = fs.openSync('/dev/net/tun', fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw new HangarError('UNAVAILABLE', `cannot open /dev/net/tun: ${(e as Error).message}`);
  }
  const ifr = Buffer.alloc(IFREQ_SIZE);
  ifr.write(name, 0, IFNAMSIZ - 1, 'ascii');
  ifr.writeUInt16LE(IFF_TAP | IFF_NO_PI | (options.vnetHdr ? IFF_VNET_HDR : 0), IFNAMSIZ);
  if (libc.ioctlPtr(fd, TUNSETIFF, ifr) < 0) {
    const e = errno();
    fs.closeSync(fd);
    throw new HangarError('UNAVAILABLE', `cannot attach to TAP ${name}: TUNSETIFF failed with ${errnoName(e)} (errno ${e})`, { tap: name, errno: e });
  }
  return { name: ifr.toString('ascii', 0, IFNAMSIZ).replace(/\0.*$/s, ''), fd };
}

const TUNGETIFF = 0x800454d2; // _IOR('T', 210, unsigned int); fills a struct ifreq
const TUNSETOFFLOAD = 0x400454d0; // _IOW('T', 208, unsigned int); the flags are the argument itself
const TUNSETVNETHDRSZ = 0x400454d8; // _IOW('T', 216, int); a pointer to the size
/** TUNSETOFFLOAD flags: what the TAP may hand us unfinished (partial checksum, TCP segments up to 64 KiB). */
export const TUN_F = { CSUM: 0x01, TSO4: 0x02, TSO6: 0x04, TSO_ECN: 0x08 } as const;

/** Whether frames on this TAP descriptor carry a virtio-net header (IFF_VNET_HDR: whoever opened it chose). */
export function tapHasVnetHdr(fd: number): boolean {
  const ifr = Buffer.alloc(IFREQ_SIZE);
  if (libc.ioctlPtr(fd, TUNGETIFF, ifr) < 0) return false;
  return (ifr.readUInt16LE(IFNAMSIZ) & IFF_VNET_HDR) !== 0;
}

/** The virtio-net header length on this TAP: 12 for virtio 1.x (the kernel's default is the legacy 10). */
export function setTapVnetHdrSize(fd: number, size: number): void {
  const b = Buffer.alloc(4);
  b.writeInt32LE(size, 0);
  if (libc.ioctlPtr(fd, TUNSETVNETHDRSZ, b) < 0) {
    const e = errno();
    throw new HangarError('UNAVAILABLE', `TUNSETVNETHDRSZ ${size} failed with ${errnoName(e)} (errno ${e})`, { errno: e });
  }
}

/** Which offloads the reader of this TAP takes (TUN_F bits); 0 makes the kernel finish every frame itself. */
export function setTapOffload(fd: number, flags: number): void {
  if (libc.ioctlScalar(fd, TUNSETOFFLOAD, flags) < 0) {
    const e = errno();
    throw new HangarError('UNAVAILABLE', `TUNSETOFFLOAD 0x${flags.toString(16)} failed with ${errnoName(e)} (errno ${e})`, { errno: e });
  }
}
