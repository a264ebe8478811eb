/**
 * Which kinds of network this host offers the daemon (`hangar host check`):
 * nat and isolated networks need CAP_NET_ADMIN in the daemon's namespace
 * (bridges, TAPs, nftables), iproute2, nft and dnsmasq; bridged networks the
 * capability and iproute2 (a TAP on someone else's bridge); `user` needs
 * only QEMU with its user-mode (slirp) netdev, so it is the fallback of a
 * daemon without privileges.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { qemuBinary } from '../../engines/qemu/version.js';

export interface NetworkModeInfo {
  mode: 'nat' | 'isolated' | 'bridged' | 'user';
  available: boolean;
  detail: string;
}

const CAP_NET_ADMIN = 12;

/** Whether this process holds CAP_NET_ADMIN (effective set). */
export function hasNetAdmin(): boolean {
  try {
    const m = /^CapEff:\s+([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return m !== null && ((BigInt(`0x${m[1]}`) >> BigInt(CAP_NET_ADMIN)) & 1n) === 1n;
  } catch {
    return false;
  }
}

/** An executable by name on PATH (and the sbin folders a daemon started by a user may lack). */
export function findTool(name: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), '/usr/sbin', '/sbin'];
  for (const d of dirs) {
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch { /* next */ }
  }
  return null;
}

let userNetdev: boolean | null = null;

/** QEMU lists `user` among its netdev backends (built with libslirp). Asked once per daemon. */
export function qemuHasUserNetdev(): boolean {
  if (userNetdev === null) {
    const r = spawnSync(qemuBinary(), ['-netdev', 'help'], { encoding: 'utf8', timeout: 10_000 });
    userNetdev = r.status === 0 && /^user$/m.test(r.stdout);
  }
  return userNetdev;
}

export function networkModes(): NetworkModeInfo[] {
  const admin = hasNetAdmin();
  const missing = (tools: string[]): string[] => tools.filter((t) => findTool(t) === null);
  const why = (needs: string[]): string => {
    const lacks = [...(admin ? [] : ['CAP_NET_ADMIN']), ...missing(needs)];
    return lacks.length ? `needs ${lacks.join(', ')}` : `CAP_NET_ADMIN, ${needs.join(', ')}`;
  };
  const routed = why(['ip', 'nft', 'dnsmasq']);
  const routedOk = admin && missing(['ip', 'nft', 'dnsmasq']).length === 0;
  const bridged = why(['ip']);
  const bridgedOk = admin && missing(['ip']).length === 0;
  const user = qemuHasUserNetdev();
  return [
    { mode: 'nat', available: routedOk, detail: routed },
    { mode: 'isolated', available: routedOk, detail: routed },
    { mode: 'bridged', available: bridgedOk, detail: bridged },
    { mode: 'user', available: user, detail: user ? 'QEMU user-mode networking (QEMU VMs only; outbound and hostfwd forwards, no privileges)' : 'needs QEMU with its user netdev (libslirp)' },
  ];
}
