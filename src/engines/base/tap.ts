/**
 * Opens a TAP for a VM process to inherit. The daemon (root) made the TAP
 * and put it on its bridge (src/host/network); a confined VM process may
 * not open /dev/net/tun itself, so the engine opens the TAP here, passes
 * the descriptor to the VM process, and closes its own copy: from then on
 * the VM process holds the only one.
 */
import { openTapFd as openTap } from '../../kvm/tap.js';

/** A descriptor attached to the existing TAP `name` (with virtio-net headers when `vnetHdr`). */
export function openTapFd(name: string, vnetHdr: boolean): number {
  return openTap(name, { vnetHdr }).fd;
}
