/**
 * TAPs the daemon opened for hangar-vmm (`--tap-fd NAME=FD`): a confined
 * hangar-vmm cannot open /dev/net/tun, so openTap() (tap.ts) takes the
 * descriptor it inherited instead. Kept apart from tap.ts, with no imports,
 * so main.ts can record them without loading the FFI (koffi) or the name
 * schemas (TypeBox) on the way to answering its control API.
 */
const inherited = new Map<string, number>();

/** Records descriptor `fd` for TAP `name`; the caller has checked both. */
export function setInheritedTap(name: string, fd: number): void {
  inherited.set(name, fd);
}

/** The descriptor inherited for `name`, once: a second NIC on the same TAP would share one queue. */
export function takeInheritedTap(name: string): number | undefined {
  const fd = inherited.get(name);
  inherited.delete(name);
  return fd;
}
