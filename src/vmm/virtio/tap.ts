/**
 * Opens a TAP interface for virtio-net: /dev/net/tun, TUNSETIFF with
 * IFF_TAP | IFF_NO_PI, non-blocking. Frames are then plain read()/write()
 * calls on the fd, one Ethernet frame each.
 *
 * If an interface of that name already exists (made with `ip tuntap add`),
 * we attach to it; otherwise the kernel creates one that disappears when the
 * fd closes. The fd belongs to the network namespace the interface was in
 * when it was opened and keeps working after `ip link set NAME netns NS`.
 */
import fs from 'node:fs';
import { TAP_NAME_RULE, isTapName } from '../../api/name-rules.js';
import { HangarError } from '../../common/errors.js';
import { errno, libc } from '../../kvm/libc.js';
import { takeInheritedTap } from './inherited-taps.js';

const TUNSETIFF = 0x400454ca; // _IOW('T', 202, int)
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFNAMSIZ = 16;
const IFREQ_SIZE = 40;

export interface Tap {
  readonly name: string;
  readonly fd: number;
}

/** A valid TAP name by the one rule in src/api/names.ts (what Linux takes, minus the awkward characters). */
function checkIfName(name: string): void {
  if (!isTapName(name)) throw new HangarError('INVALID_ARGUMENT', `"${name}" is not a valid interface name (${TAP_NAME_RULE})`);
}

export function openTap(name: string): Tap {
  checkIfName(name);
  // A TAP the daemon opened for us (--tap-fd): a confined hangar-vmm cannot open /dev/net/tun.
  const inherited = takeInheritedTap(name);
  if (inherited !== undefined) return { name, fd: inherited };
  let fd: number;
  try {
    fd = fs.openSync('/dev/net/tun', fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw new HangarError('UNAVAILABLE', `cannot open /dev/net/tun: ${(e as Error).message}`);
  }
  const ifr = Buffer.alloc(IFREQ_SIZE);
  ifr.write(name, 0, IFNAMSIZ - 1, 'ascii');
  ifr.writeUInt16LE(IFF_TAP | IFF_NO_PI, IFNAMSIZ);
  const rc = libc.ioctlPtr(fd, TUNSETIFF, ifr);
  if (rc < 0) {
    const e = errno();
    fs.closeSync(fd);
    throw new HangarError(e === 1 ? 'UNAUTHORIZED' : 'UNAVAILABLE', `TUNSETIFF ${name} failed (errno ${e})`, { errno: e, tap: name });
  }
  const actual = ifr.toString('ascii', 0, IFNAMSIZ).replace(/\0.*$/s, '');
  return { name: actual, fd };
}
