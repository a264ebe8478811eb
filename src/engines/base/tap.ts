/**
 * Opens a TAP for a VM process to inherit. The daemon (root) made the TAP
 * and put it on its bridge (src/host/network); a confined VM process may
 * not open /dev/net/tun itself, so the engine opens the TAP here, passes
 * the descriptor to the VM process, and closes its own copy: from then on
 * the VM process holds the only one.
 */
import fs from 'node:fs';
import { HangarError } from '../../common/errors.js';
import { TAP_NAME_RULE, isTapName } from '../../api/names.js';
import { errno, libc } from '../../kvm/libc.js';

const TUNSETIFF = 0x400454ca; // _IOW('T', 202, int)
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
/** Frames carry a virtio-net header (checksum and segmentation offload), as QEMU's virtio-net wants. */
const IFF_VNET_HDR = 0x4000;
const IFNAMSIZ = 16;
const IFREQ_SIZE = 40;

/** A descriptor attached to the existing TAP `name` (with virtio-net headers when `vnetHdr`). */
export function openTapFd(name: string, vnetHdr: boolean): number {
  if (!isTapName(name)) throw new HangarError('INVALID_ARGUMENT', `"${name}" is not a valid interface name (${TAP_NAME_RULE})`);
  let fd: number;
  try {
    // Non-blocking, as both VMMs read it (QEMU would set it itself; hangar-vmm relies on it).
    fd = fs.openSync('/dev/net/tun', fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw new HangarError('UNAVAILABLE', `cannot open /dev/net/tun: ${(e as Error).message}`);
  }
  const ifr = Buffer.alloc(IFREQ_SIZE);
  ifr.write(name, 0, IFNAMSIZ - 1, 'ascii');
  ifr.writeUInt16LE(IFF_TAP | IFF_NO_PI | (vnetHdr ? IFF_VNET_HDR : 0), IFNAMSIZ);
  if (libc.ioctlPtr(fd, TUNSETIFF, ifr) < 0) {
    const e = errno();
    fs.closeSync(fd);
    throw new HangarError('UNAVAILABLE', `cannot attach to TAP ${name} (errno ${e})`, { tap: name, errno: e });
  }
  return fd;
}
