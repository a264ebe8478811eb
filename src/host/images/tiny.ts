/**
 * The built-in `tiny` image: Debian's cloud kernel and a busybox initramfs
 * whose /init brings up a shell on the serial console. It boots in a couple
 * of seconds under TCG, which makes it the image for tests and demos.
 *
 * Guest side of the contract with the engines:
 * - prints TINY_BANNER once user space is up, then a shell with TINY_PROMPT;
 * - the ACPI power button (QEMU `system_powerdown`) powers the guest off
 *   (button + evdev modules, busybox acpid);
 * - `poweroff` / `reboot` typed at the prompt do what they say;
 * - virtio (PCI and MMIO), virtio-blk and virtio-net modules are loaded, so
 *   disks appear as /dev/vdX and NICs as ethN;
 * - `hangar.hostname=NAME` on the command line sets the host name (default tiny).
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { HangarError } from '../../common/errors.js';
import { buildCpio, type CpioEntry } from './cpio.js';
import { downloadPackages, resolveDependency, unpackDeb } from './debian.js';

export const TINY_PROMPT = 'tiny# ';
export const TINY_BANNER = 'Hangar tiny image: user space is up';
/**
 * quiet keeps boot fast on a slow (TCG) serial console; loglevel=4 still shows warnings and errors.
 * no_timer_check: the kernel's early check that the IO-APIC timer ticks in time fails on a loaded
 * host under TCG and panics the boot ("IO-APIC + timer doesn't work"); a virtual timer needs no check.
 */
export const TINY_CMDLINE = 'console=ttyS0 panic=-1 quiet loglevel=4 no_timer_check';
/** Kernel argument the tiny image's /init reads to set its host name. */
export const TINY_HOSTNAME_ARG = 'hangar.hostname';
export const TINY_DESCRIPTION = 'Debian cloud kernel with a busybox shell on the serial console (built locally)';

/**
 * Modules in load order (dependencies first): ACPI power button and the input
 * events acpid reads, then virtio transports (PCI for q35, MMIO for microvm),
 * then block and network drivers.
 */
export const TINY_MODULES = [
  'button',
  'evdev',
  'virtio_ring',
  'virtio',
  'virtio_pci_modern_dev',
  'virtio_pci_legacy_dev',
  'virtio_pci',
  'virtio_mmio',
  'virtio_blk',
  'failover',
  'net_failover',
  'virtio_net',
] as const;

const INIT = `#!/bin/sh
# Hangar tiny image: this script is PID 1 and must never return
# (the kernel panics when init exits).
export PATH=/sbin:/bin
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts

name=tiny
for arg in $(cat /proc/cmdline); do
  case "$arg" in ${TINY_HOSTNAME_ARG}=*) name="\${arg#${TINY_HOSTNAME_ARG}=}" ;; esac
done
hostname "$name"

for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m.ko" 2>/dev/null || echo "tiny: module $m did not load"
done
ip link set lo up 2>/dev/null

# The power button arrives as an input event; acpid runs /etc/acpi/PWRF/00000080.
acpid -f -c /etc/acpi &

echo "${TINY_BANNER} (kernel $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime)s)"
# busybox reboot/poweroff/halt (which the shell runs as built-in applets,
# whatever PATH says) signal PID 1: TERM, USR2, USR1. The shell runs in the
# background so that "wait" returns as soon as one of these arrives.
trap 'sync; /bin/busybox reboot -f' TERM
trap 'sync; /bin/busybox poweroff -f' USR2
trap 'sync; /bin/busybox poweroff -f' USR1
export HOME=/root PS1='${TINY_PROMPT}'
cd /root
while :; do
  # cttyhack makes the console the shell's controlling tty (and its stdio).
  setsid cttyhack sh &
  wait $!
  echo "tiny: shell ended, starting a new one"
done
`;

// acpid points its children's stdout at its log file, so speak to the console directly.
const POWER_BUTTON = `#!/bin/sh
echo "tiny: power button pressed, powering off" > /dev/console
exec /sbin/poweroff
`;

/** For scripts that name them by path (the power button action): act directly, no signal to PID 1. */
const POWEROFF = '#!/bin/sh\nsync\nexec /bin/busybox poweroff -f\n';
const REBOOT = '#!/bin/sh\nsync\nexec /bin/busybox reboot -f\n';

export interface TinyBuildResult {
  kernelVersion: string;
  kernelPackage: string;
  busyboxPackage: string;
}

function findFiles(root: string, wanted: Set<string>): Map<string, string> {
  const found = new Map<string, string>();
  const walk = (dir: string) => {
    for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, ent.name);
      if (ent.isDirectory()) walk(p);
      else if (wanted.has(ent.name) && !found.has(ent.name)) found.set(ent.name, p);
    }
  };
  walk(root);
  return found;
}

/** A Linux bzImage carries "HdrS" at offset 0x202 (the boot protocol header). */
export function isBzImage(buf: Buffer): boolean {
  return buf.length > 0x206 && buf.toString('ascii', 0x202, 0x206) === 'HdrS';
}

/**
 * Builds the tiny image into `outDir` (vmlinuz, initrd.img), using `workDir`
 * for downloads. Reports coarse progress.
 */
export async function buildTiny(workDir: string, outDir: string, onProgress: (stage: string, percent?: number) => void): Promise<TinyBuildResult> {
  onProgress('resolving packages', 5);
  const kernelPackage = await resolveDependency('linux-image-cloud-amd64', /^linux-image-\d.*-cloud-amd64$/);
  const busyboxPackage = 'busybox-static';

  onProgress('downloading packages', 10);
  const [kernelDeb, busyboxDeb] = await downloadPackages([kernelPackage, busyboxPackage], path.join(workDir, 'debs'));

  onProgress('unpacking packages', 50);
  const kroot = path.join(workDir, 'kernel');
  const broot = path.join(workDir, 'busybox');
  await unpackDeb(kernelDeb!, kroot);
  await unpackDeb(busyboxDeb!, broot);

  const vmlinuz = fs.readdirSync(path.join(kroot, 'boot')).find((f) => f.startsWith('vmlinuz-'));
  if (!vmlinuz) throw new HangarError('ENGINE_FAILED', `${kernelPackage} has no boot/vmlinuz-*`);
  const kernelVersion = vmlinuz.slice('vmlinuz-'.length);
  const kernel = fs.readFileSync(path.join(kroot, 'boot', vmlinuz));
  if (!isBzImage(kernel)) throw new HangarError('ENGINE_FAILED', `${vmlinuz} is not a bzImage`);
  const busybox = fs.readFileSync(path.join(broot, 'bin', 'busybox'));

  onProgress('building initramfs', 70);
  const modDir = path.join(kroot, 'lib', 'modules', kernelVersion);
  const modFiles = findFiles(modDir, new Set(TINY_MODULES.map((m) => `${m}.ko`)));
  const missing = TINY_MODULES.filter((m) => !modFiles.has(`${m}.ko`));
  if (missing.length) throw new HangarError('ENGINE_FAILED', `${kernelPackage} lacks modules: ${missing.join(', ')}`);

  const entries: CpioEntry[] = [
    ...['bin', 'sbin', 'dev', 'proc', 'sys', 'tmp', 'run', 'root', 'etc', 'etc/acpi', 'etc/acpi/PWRF', 'var', 'var/log', 'var/run', 'lib', 'lib/modules'].map(
      (d): CpioEntry => ({ type: 'dir', path: d, mode: d === 'tmp' ? 0o1777 : 0o755 }),
    ),
    // The kernel opens /dev/console for init's stdio before /init can mount devtmpfs.
    { type: 'chardev', path: 'dev/console', major: 5, minor: 1, mode: 0o600 },
    { type: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
    { type: 'symlink', path: 'bin/sh', target: 'busybox' },
    { type: 'file', path: 'init', data: Buffer.from(INIT), mode: 0o755 },
    { type: 'file', path: 'sbin/poweroff', data: Buffer.from(POWEROFF), mode: 0o755 },
    { type: 'file', path: 'sbin/reboot', data: Buffer.from(REBOOT), mode: 0o755 },
    { type: 'file', path: 'etc/acpi/PWRF/00000080', data: Buffer.from(POWER_BUTTON), mode: 0o755 },
    { type: 'file', path: 'etc/hostname', data: Buffer.from('tiny\n') },
    { type: 'file', path: 'etc/hangar-image', data: Buffer.from(`tiny\nkernel ${kernelVersion} (${kernelPackage})\n`) },
    { type: 'file', path: 'lib/modules/load-order', data: Buffer.from(TINY_MODULES.join('\n') + '\n') },
    ...TINY_MODULES.map((m): CpioEntry => ({ type: 'file', path: `lib/modules/${m}.ko`, data: fs.readFileSync(modFiles.get(`${m}.ko`)!) })),
  ];
  const initrd = zlib.gzipSync(buildCpio(entries), { level: 9 });

  onProgress('writing image', 90);
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'vmlinuz'), kernel);
  fs.writeFileSync(path.join(outDir, 'initrd.img'), initrd);
  return { kernelVersion, kernelPackage, busyboxPackage };
}
