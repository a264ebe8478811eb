/**
 * A /dev/kvm descriptor handed to hangar-vmm by whoever spawned it
 * (`--kvm-fd N`): a VMM running as an unprivileged user cannot open
 * /dev/kvm itself, so the daemon opens it and passes it on. Kept apart
 * from kvm.ts so main.ts can set it without loading the FFI.
 */
let inherited: number | null = null;

export function setInheritedKvmFd(fd: number): void {
  inherited = fd;
}

/** The inherited descriptor, once: the first Kvm.open() takes it. */
export function takeInheritedKvmFd(): number | null {
  const fd = inherited;
  inherited = null;
  return fd;
}
