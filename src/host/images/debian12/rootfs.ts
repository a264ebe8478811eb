/**
 * The debian-12 root filesystem: Debian bookworm installed into a folder by
 * mmdebstrap (as root, so maintainer scripts run for real and the kernel's
 * initramfs is generated), then shaped into a cloud server by the hooks below.
 *
 * What the hooks do and why:
 * - cloud-init looks only for the NoCloud seed (the per-VM `cidata` disk) and
 *   then None: its default list probes a dozen clouds' metadata services,
 *   which under TCG costs minutes of timeouts for nothing;
 * - fstab mounts by label (rootfs, ESP) so the same image works on any disk bus;
 * - the serial getty on ttyS0 (the console Hangar records and tests read);
 * - no root password; the `debian` user comes from cloud-init's Debian defaults;
 * - ssh host keys are removed: every VM makes its own on first boot
 *   (cloud-init, and `ssh-keygen -A` before sshd as a fallback);
 * - /etc/machine-id is empty so each VM gets its own id on first boot;
 * - apt's daily timers are off: at boot they would download package lists and
 *   run dpkg under emulation, minutes of CPU that delay everything else, and
 *   reach out to the internet from tests; the user can turn them on;
 * - e2scrub (ext4 checks of LVM volumes through snapshots) is off: there is
 *   no LVM, and its boot-time cleanup ate minutes of the one vCPU;
 * - systemd waits 600 s instead of 90 s for devices: under TCG on a busy host
 *   udev's coldplug can take longer than 90 s, and the serial getty (which
 *   waits for /dev/ttyS0) then fails, leaving no login prompt;
 * - systemd-timesyncd is not installed for the same reason (and the guest
 *   clock comes from the host's RTC and kvm-clock anyway);
 * - the initramfs has the virtio drivers (MODULES=most plus an explicit list)
 *   and does not wait for a resume device (RESUME=none);
 * - a kernel/initramfs hook copies a new kernel onto the ESP, where both
 *   boot loaders load it from.
 */
import fs from 'node:fs';
import path from 'node:path';
import { runTool } from './exec.js';

export const SUITE = 'bookworm';
export const DEFAULT_MIRROR = 'http://deb.debian.org/debian';
export const DEFAULT_SECURITY_MIRROR = 'http://deb.debian.org/debian-security';

/** What a small cloud server needs on top of Debian's minimal base. */
export const PACKAGES = [
  'systemd-sysv', 'udev', 'dbus', 'linux-image-cloud-amd64', 'initramfs-tools', 'zstd',
  'openssh-server', 'openssh-sftp-server', 'cloud-init', 'cloud-guest-utils', 'qemu-guest-agent',
  'ifupdown', 'isc-dhcp-client', 'iproute2', 'iputils-ping', 'netbase',
  'sudo', 'ca-certificates', 'less', 'nano', 'procps', 'python3-minimal',
] as const;

/**
 * dpkg leaves out manuals, documentation (but not the copyright files) and
 * translations, now and for packages the user installs later: about 60 MB
 * less to copy into every image.
 */
export const DPKG_OPTIONS = [
  'force-unsafe-io',
  'path-exclude=/usr/share/man/*',
  'path-exclude=/usr/share/info/*',
  'path-exclude=/usr/share/doc/*',
  'path-include=/usr/share/doc/*/copyright',
  'path-exclude=/usr/share/locale/*',
  'path-include=/usr/share/locale/locale.alias',
];

/** Runs before any package is installed: the initramfs settings the kernel's postinst will read. */
export const SETUP_HOOK = `set -eu
root="$1"
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/usr/share/initramfs-tools/modules.d"
# No swap, so no resume device: without this the initramfs may wait for one.
echo RESUME=none > "$root/etc/initramfs-tools/conf.d/hangar-resume"
# MODULES=most (the default) has these already; named anyway so that the root
# disk is found even if someone switches to MODULES=dep.
printf '%s\\n' virtio_pci virtio_blk virtio_scsi virtio_net > "$root/usr/share/initramfs-tools/modules.d/hangar-virtio"
`;

/** Keeps the kernel and initrd the boot loaders load from the ESP in step with the installed ones. */
export const ESP_KERNEL_HOOK = `#!/bin/sh
# Hangar: the boot loaders (syslinux for BIOS, systemd-boot for UEFI) load
# /vmlinuz and /initrd.img from the EFI system partition, mounted on /boot/efi.
# Called by kernel postinst (and initramfs updates) with the kernel version.
set -e
version="$1"
[ -n "$version" ] || exit 0
[ -f "/boot/vmlinuz-$version" ] && [ -f "/boot/initrd.img-$version" ] || exit 0
newest=$(ls /boot/vmlinuz-* | sed 's|^/boot/vmlinuz-||' | sort -V | tail -n 1)
[ "$newest" = "$version" ] || exit 0
if ! mountpoint -q /boot/efi; then
  echo "hangar-esp: /boot/efi is not mounted: the ESP keeps its kernel" >&2
  exit 0
fi
cp "/boot/vmlinuz-$version" /boot/efi/vmlinuz.new
cp "/boot/initrd.img-$version" /boot/efi/initrd.img.new
mv /boot/efi/vmlinuz.new /boot/efi/vmlinuz
mv /boot/efi/initrd.img.new /boot/efi/initrd.img
sync
`;

/** Runs after all packages are installed; $1 is the root folder (the host's shell runs it). */
export const CUSTOMIZE_HOOK = `set -eu
root="$1"

echo debian > "$root/etc/hostname"
printf '127.0.0.1\\tlocalhost\\n127.0.1.1\\tdebian\\n::1\\t\\tlocalhost ip6-localhost ip6-loopback\\nff02::1\\t\\tip6-allnodes\\nff02::2\\t\\tip6-allrouters\\n' > "$root/etc/hosts"
# mmdebstrap copied the build host's resolver; the VM's comes from DHCP.
rm -f "$root/etc/resolv.conf"
: > "$root/etc/resolv.conf"

cat > "$root/etc/fstab" <<'FSTAB'
# Hangar debian-12: filesystems by label, so any disk bus works.
LABEL=rootfs  /          ext4  rw,discard,errors=remount-ro  0 1
LABEL=ESP     /boot/efi  vfat  umask=0077,nofail  0 2
FSTAB
mkdir -p "$root/boot/efi"

# cloud-init: the NoCloud seed (a cidata disk) or nothing; see rootfs.ts.
cat > "$root/etc/cloud/cloud.cfg.d/90_hangar.cfg" <<'CLOUD'
# Hangar: the seed is a per-VM disk labelled cidata; no metadata services to probe.
datasource_list: [ NoCloud, None ]
# No DSA host key: OpenSSH 9 does not use it, and making it costs boot time under emulation.
ssh_genkeytypes: [ rsa, ecdsa, ed25519 ]
# C.UTF-8 is built into the C library; Debian's default (en_US.UTF-8) would have to be generated
# first, and cloud-init's locale module fails on that (cloud-config.service failed).
locale: C.UTF-8
CLOUD

# Serial console login (also started by systemd when console=ttyS0 is given).
mkdir -p "$root/etc/systemd/system/getty.target.wants"
ln -sf /lib/systemd/system/serial-getty@.service "$root/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"

# No root password (locked); log in as debian with an ssh key.
chroot "$root" usermod -p '*' root

# Host keys are per VM: made on first boot, never shipped in the image.
rm -f "$root"/etc/ssh/ssh_host_*
mkdir -p "$root/etc/systemd/system/ssh.service.d"
cat > "$root/etc/systemd/system/ssh.service.d/hangar-host-keys.conf" <<'UNIT'
# Hangar: cloud-init makes the host keys; if it did not, make the missing ones.
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT

# Under emulation on a busy host udev can take minutes to announce devices (it
# coldplugs everything on a slow vCPU). systemd's default 90 s device timeout then
# fails the units waiting for one, e.g. the serial getty on ttyS0: no login prompt
# at all. Waiting longer costs nothing when devices come quickly.
mkdir -p "$root/etc/systemd/system.conf.d"
printf '# Hangar: see src/host/images/debian12/rootfs.ts\n[Manager]\nDefaultDeviceTimeoutSec=600s\n' > "$root/etc/systemd/system.conf.d/hangar-device-timeout.conf"

# Each VM gets its own machine id on first boot.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

# Slow under TCG and not needed to serve: see rootfs.ts.
for t in apt-daily.timer apt-daily-upgrade.timer; do
  rm -f "$root/etc/systemd/system/timers.target.wants/$t"
done
# e2scrub checks ext4 filesystems on LVM through snapshots; there is no LVM here, yet
# its boot-time cleanup took 3 minutes of the one vCPU under TCG, alongside cloud-init.
rm -f "$root/etc/systemd/system/multi-user.target.wants/e2scrub_reap.service" "$root/etc/systemd/system/timers.target.wants/e2scrub_all.timer"

# New kernels go onto the ESP too.
install -m 0755 /dev/stdin "$root/etc/kernel/postinst.d/zz-hangar-esp" < "$2"
mkdir -p "$root/etc/initramfs/post-update.d"
ln -sf /etc/kernel/postinst.d/zz-hangar-esp "$root/etc/initramfs/post-update.d/hangar-esp"

echo "Hangar debian-12" > "$root/etc/hangar-image"
`;

export interface RootfsOptions {
  /** The folder to install into (must not exist or be empty). */
  tree: string;
  /** Scratch space for the hook scripts. */
  workDir: string;
  /** Exact `name=version` list to install instead of PACKAGES (a rebuild from packages.txt). */
  pinned?: string[];
  mirror?: string;
  securityMirror?: string;
  sourceDateEpoch: number;
  onLine?: (line: string) => void;
}

/** The mmdebstrap command line (without the tool name), for the build and for docs/tests. */
export function mmdebstrapArgs(o: RootfsOptions, hooks: { setup: string; customize: string; espHook: string }): string[] {
  const mirror = o.mirror ?? DEFAULT_MIRROR;
  const security = o.securityMirror ?? DEFAULT_SECURITY_MIRROR;
  return [
    '--mode=root',
    // custom: exactly the pinned list (it includes the essential packages); minbase: essential + apt + ours.
    `--variant=${o.pinned ? 'custom' : 'minbase'}`,
    ...DPKG_OPTIONS.map((d) => `--dpkgopt=${d}`),
    `--include=${(o.pinned ?? [...PACKAGES]).join(',')}`,
    `--setup-hook=sh ${hooks.setup} "$1"`,
    `--customize-hook=sh ${hooks.customize} "$1" ${hooks.espHook}`,
    SUITE,
    o.tree,
    `deb ${mirror} ${SUITE} main`,
    `deb ${mirror} ${SUITE}-updates main`,
    `deb ${security} ${SUITE}-security main`,
  ];
}

/** Installs the root filesystem into o.tree. */
export async function buildRootfs(o: RootfsOptions): Promise<void> {
  fs.mkdirSync(o.workDir, { recursive: true });
  const hooks = {
    setup: path.join(o.workDir, 'setup-hook.sh'),
    customize: path.join(o.workDir, 'customize-hook.sh'),
    espHook: path.join(o.workDir, 'zz-hangar-esp'),
  };
  fs.writeFileSync(hooks.setup, SETUP_HOOK);
  fs.writeFileSync(hooks.customize, CUSTOMIZE_HOOK);
  fs.writeFileSync(hooks.espHook, ESP_KERNEL_HOOK);
  await runTool('mmdebstrap', mmdebstrapArgs(o, hooks), {
    env: { SOURCE_DATE_EPOCH: String(o.sourceDateEpoch), DEBIAN_FRONTEND: 'noninteractive' },
    timeoutMs: 30 * 60_000,
    ...(o.onLine ? { onLine: o.onLine } : {}),
  });
}

/** The installed packages as sorted `name=version` lines (what packages.txt holds). */
export async function installedPackages(tree: string): Promise<string[]> {
  const out = await runTool('dpkg-query', [`--admindir=${path.join(tree, 'var/lib/dpkg')}`, '-W', '-f', '${db:Status-Abbrev}${Package}=${Version}\\n']);
  return out.split('\n').filter((l) => l.startsWith('ii ')).map((l) => l.slice(3).trim()).sort();
}
