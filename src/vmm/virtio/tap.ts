/**
 * The TAP behind a virtio-net device: the descriptor the daemon passed
 * (`--tap-fd NAME=FD`), or one opened here (src/kvm/tap.ts: IFF_TAP |
 * IFF_NO_PI | IFF_VNET_HDR, non-blocking; HANGAR_VIRTIO_NET_OFFLOAD=0: no
 * header). Frames are then plain read()/write() calls on the fd, one
 * Ethernet frame each, behind a virtio-net header when the fd has one (net.ts).
 */
import { HangarError, isHangarError } from '../../common/errors.js';
import { checkTapName, openTapFd } from '../../kvm/tap.js';
import { takeInheritedTap } from './inherited-taps.js';

const EPERM = 1;

export interface Tap {
  readonly name: string;
  readonly fd: number;
}

export function openTap(name: string): Tap {
  checkTapName(name);
  // A TAP the daemon opened for us (--tap-fd, recorded by main.ts in inherited-taps.ts): a confined hangar-vmm cannot open /dev/net/tun.
  const inherited = takeInheritedTap(name);
  if (inherited !== undefined) return { name, fd: inherited };
  try {
    return openTapFd(name, { vnetHdr: process.env.HANGAR_VIRTIO_NET_OFFLOAD !== '0' });
  } catch (e) {
    // Run by hand without the right to the TAP: say so as such.
    if (isHangarError(e) && e.details?.errno === EPERM) throw new HangarError('UNAUTHORIZED', e.message, e.details);
    throw e;
  }
}
