#!/usr/bin/env bash
# Hangar's KVM lab: runs one command against a /dev/kvm with real
# hardware-virtualization semantics, on any x86-64 host that has QEMU.
#
#   scripts/kvm-lab.sh [--timeout SECS] [--stall SECS] [--with-qemu] [--with-debian] [--rebuild] [--build-only] [--quiet] [--] COMMAND [ARG...]
#
# QEMU's TCG emulates AMD SVM with nested paging, so a Linux guest ("L1")
# booted with `-accel tcg -cpu max` loads kvm-amd and gets a /dev/kvm whose
# guests run kernel code like on hardware. L1 is built from Debian packages
# (the cloud kernel and its modules, busybox-static) and an ext4 image holding
# node, the daemon's host tools (qemu-img, mkfs.fat, mtools, iproute2's ip),
# the built project (package.json, dist/, runtime node_modules) and the
# tiny guest image; COMMAND runs inside L1 in a chroot of that image, from the
# project's root (/hangar). Its output and a final line
#   HANGAR-LAB-RESULT: PASS exit=0      (or FAIL exit=N)
# come back over L1's serial console; this script exits with N, with 124 when
# L1 ran longer than the timeout (default 1200 s; building the cache is not
# counted), with 125 when L1 ended without reporting, and with 126 when L1
# stalled: L1 prints a heartbeat line every 30 s, so a console quiet for the
# stall limit (default 180 s) means L1 itself stopped; the script then prints
# what QEMU says about L1's CPU (registers, local APIC, PIC, IRQ counts,
# scripts/lab/l1-qmp.mjs) and ends it. Before that, QEMU 7.2's TCG can lose
# the wake-up for L1's LAPIC timer (a race when L1 enters its guest), which
# leaves L1 halted for good: so a console quiet for 20 s gets L1 a key press
# every 20 s (HANGAR_LAB_DOORBELL; a device interrupt makes QEMU deliver what
# waits in the APIC), and one quiet for 60 s the dump and an NMI
# (HANGAR_LAB_NUDGE, at most 3 times a run); 0 turns either off. The output
# says when either got L1 going again.
#
# Everything is cached under .cache/kvm-lab/ (HANGAR_LAB_CACHE): the L1 kernel
# and initramfs keyed by the package versions, the root image keyed by node's
# version and a hash of dist/, package-lock.json and the guest image. Runs never
# change the cache (the disk is attached with snapshot=on), so several may run
# at once. Build the project first (npx tsc -p tsconfig.json).
#
# --with-qemu also gives L1 the host's QEMU (for side-by-side benchmarks such as
# bench/lab-start-bench.ts): the binary, its libraries and the firmware it boots
# with, on a second cached disk mounted at /opt/qemu, run as /opt/qemu/bin/qemu;
# and the host's iperf3, as /opt/qemu/bin/iperf3 (bench/lab-guest-io-bench.ts).
# --with-debian gives L1 the debian-12 image (kernel, initramfs, image.json and a raw
# copy of its disk) on a cached disk mounted read/write at /data/debian-12 (QEMU's
# snapshot overlay takes the writes), with cidata.img, a cloud-init NoCloud seed that
# lets root log in on the serial console (password hangar-lab) and gives eth0 the
# lab's guest address. HANGAR_LAB_DEBIAN_IMAGE=DIR takes the image from DIR instead
# of $HANGAR_IMAGE_DIR/debian-12 (a variant with more packages, for benchmarks).
set -euo pipefail
# The whole script is one compound command, read before it runs: editing this file
# while a lab runs (bash otherwise reads scripts as it goes) cannot derail that run.
{
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${HANGAR_LAB_CACHE:-$ROOT/.cache/kvm-lab}
IMAGES=${HANGAR_IMAGE_DIR:-$ROOT/.cache/images}
TIMEOUT=${HANGAR_LAB_TIMEOUT:-1200}
STALL=${HANGAR_LAB_STALL:-180}
# A quiet console gets L1 a key press every DOORBELL seconds, and an NMI once quiet for NUDGE
# (at most NUDGES times a run); 0 turns either off. See the watch loop at the end.
DOORBELL=${HANGAR_LAB_DOORBELL:-20}
NUDGE=${HANGAR_LAB_NUDGE:-60}
NUDGES=3
L1_MEM_MIB=${HANGAR_LAB_MEM_MIB:-3072}
ROOT_IMAGE_SIZE=1G
MARKER=HANGAR-LAB-RESULT
# L1's modules (their dependencies are found and loaded first): KVM for AMD (TCG emulates SVM),
# the virtio disk and entropy source, ext4 for the root image, TAP/bridge for guest networking.
L1_MODULES=(kvm_amd virtio_pci virtio_blk virtio_rng ext4 crc32c_generic tun bridge)
# Modules the L2 guests need beyond the tiny image's own (virtio, virtio-blk, virtio-net), with
# their dependencies: they ride in an archive appended to its initramfs (see build_l2).
L2_MODULES=(virtio_rng)
L2_ROOT_SIZE=32M

rebuild=0 build_only=0 quiet=0 with_qemu=0 with_debian=0
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
while (($#)); do
  case "$1" in
    --timeout) TIMEOUT=${2:?}; shift 2 ;;
    --stall) STALL=${2:?}; shift 2 ;;
    --rebuild) rebuild=1; shift ;;
    --with-qemu) with_qemu=1; shift ;;
    --with-debian) with_debian=1; shift ;;
    --build-only) build_only=1; shift ;;
    --quiet) quiet=1; shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*) echo "kvm-lab: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
if ((!build_only && $# == 0)); then echo "kvm-lab: no command given" >&2; usage; fi
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || { echo "kvm-lab: --timeout wants seconds" >&2; exit 2; }
[[ "$STALL" =~ ^[0-9]+$ ]] || { echo "kvm-lab: --stall wants seconds" >&2; exit 2; }
[[ "$DOORBELL" =~ ^[0-9]+$ ]] || { echo "kvm-lab: HANGAR_LAB_DOORBELL wants seconds" >&2; exit 2; }
[[ "$NUDGE" =~ ^[0-9]+$ ]] || { echo "kvm-lab: HANGAR_LAB_NUDGE wants seconds" >&2; exit 2; }

say() { echo "kvm-lab: $*" >&2; }
die() { say "$*"; exit 125; }
for tool in qemu-system-x86_64 mke2fs cpio apt-get apt-cache dpkg-deb ldd sha256sum node; do
  command -v "$tool" >/dev/null || die "needs $tool (Debian packages: qemu-system-x86 e2fsprogs cpio apt dpkg libc-bin coreutils)"
done
[ -f "$ROOT/dist/src/vmm/main.js" ] || die "the project is not built: run npx tsc -p tsconfig.json first"
if [ ! -f "$IMAGES/tiny/vmlinuz" ]; then
  say "building the tiny guest image into $IMAGES"
  HANGAR_IMAGE_DIR="$IMAGES" HANGAR_TEST_IMAGES=tiny node "$ROOT/scripts/build-images.mjs" >&2
fi
mkdir -p "$CACHE"
started=$SECONDS

# ---- cache keys ------------------------------------------------------------
script_hash=$(sha256sum "$0" | cut -c1-16)
pkg_version() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}'; }
kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9].*-cloud-amd64/ {print $2; exit}')
if [ -z "$kernel_pkg" ]; then
  say "apt lists missing: apt-get update"
  apt-get update -qq >&2 || true
  kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9].*-cloud-amd64/ {print $2; exit}')
fi
[ -n "$kernel_pkg" ] || die "cannot resolve linux-image-cloud-amd64 (no apt lists?)"
l1_key="$kernel_pkg=$(pkg_version "$kernel_pkg") busybox-static=$(pkg_version busybox-static) script=$script_hash"
tree_hash() { (cd "$1" && find . -type f ! -name .build-stamp -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16); }
# What hangard needs of the host besides node (build_root copies them in): qemu-img, mkfs.fat, mtools,
# and iproute2's ip (the daemon reads `ip -j`; busybox's ip, in /bin, comes after /usr/bin on L1's PATH).
DAEMON_TOOLS="/usr/bin/qemu-img /usr/sbin/mkfs.fat /usr/bin/mtools /usr/bin/ip"
for t in $DAEMON_TOOLS; do
  [ -x "$t" ] && [ ! -L "$t" ] || die "needs $t (Debian packages qemu-utils dosfstools mtools iproute2): the daemon in L1 uses it"
done
GCONV_DIR=/usr/lib/x86_64-linux-gnu/gconv
[ -f "$GCONV_DIR/IBM850.so" ] || die "needs glibc's gconv modules in $GCONV_DIR (Debian package libc6): mcopy in L1 uses them"
root_key="tools=$(cat $DAEMON_TOOLS "$GCONV_DIR/IBM850.so" | sha256sum | cut -c1-16) node=$(node --version) dist=$(tree_hash "$ROOT/dist") lock=$(sha256sum "$ROOT/package-lock.json" | cut -c1-16) images=$(tree_hash "$IMAGES/tiny") script=$script_hash"

# ---- L1 kernel and initramfs -----------------------------------------------
L1=$CACHE/l1
modname() { local b=${1##*/}; b=${b%%.ko*}; echo "${b//-/_}"; }
# A module's bytes, whatever the package compressed it with.
ko_cat() {
  case "$1" in
    *.ko.xz) xz -dc "$1" ;;
    *.ko.zst) zstd -dcq "$1" ;;
    *.ko.gz) gzip -dc "$1" ;;
    *) cat "$1" ;;
  esac
}

build_l1() {
  say "building L1 from $kernel_pkg and busybox-static"
  local work=$CACHE/l1.work
  rm -rf "$work" && mkdir -p "$work/debs" "$work/kernel" "$work/busybox" "$work/initramfs"
  cp "$CACHE"/debs/"$kernel_pkg"_*.deb "$CACHE"/debs/busybox-static_*.deb "$work/debs/" 2>/dev/null || true
  ls "$work"/debs/"$kernel_pkg"_*.deb "$work"/debs/busybox-static_*.deb >/dev/null 2>&1 \
    || (cd "$work/debs" && apt-get download "$kernel_pkg" busybox-static >&2) \
    || { apt-get update -qq >&2; (cd "$work/debs" && apt-get download "$kernel_pkg" busybox-static >&2); } \
    || die "apt-get download $kernel_pkg busybox-static failed"
  dpkg-deb -x "$work"/debs/"$kernel_pkg"_*.deb "$work/kernel"
  dpkg-deb -x "$work"/debs/busybox-static_*.deb "$work/busybox"
  local ver=${kernel_pkg#linux-image-}
  local moddir=$work/kernel/lib/modules/$ver
  [ -d "$moddir" ] || die "$kernel_pkg has no lib/modules/$ver"

  # Load order: every module after the modules it depends on, depth first over the
  # "depends=" field of each module's .modinfo (the package leaves modules.dep to depmod
  # at install time; this way the host needs no kmod).
  declare -A file_of=() seen=()
  local f
  while IFS= read -r f; do file_of[$(modname "$f")]=$f; done < <(find "$moddir" -name '*.ko*')
  local order=()
  visit() {
    local m=$1 dep
    [ -n "${seen[$m]:-}" ] && return
    seen[$m]=1
    if [ -z "${file_of[$m]:-}" ]; then
      grep -q "/${m//_/[-_]}\.ko" "$moddir/modules.builtin" 2>/dev/null && return   # built into the kernel
      die "$kernel_pkg has no module $m"
    fi
    for dep in $(ko_cat "${file_of[$m]}" | tr '\0' '\n' | grep -a -m1 '^depends=' | cut -d= -f2 | tr ',' ' '); do
      visit "${dep//-/_}"
    done
    order+=("$m")
  }
  local m
  for m in "${L1_MODULES[@]}"; do visit "$m"; done
  local l1_order=("${order[@]}")
  # The L2 guests' extra modules (the same kernel as the tiny image's): a walk of their own.
  order=()
  seen=()
  for m in "${L2_MODULES[@]}"; do visit "$m"; done
  local l2_order=("${order[@]}")
  order=("${l1_order[@]}")

  local ir=$work/initramfs
  mkdir -p "$ir"/{bin,dev,proc,sys,mnt,lib/modules,lab}
  cp "$work/busybox/bin/busybox" "$ir/bin/busybox"
  ln -s busybox "$ir/bin/sh"
  : > "$ir/lib/modules/load-order"
  for m in "${order[@]}"; do
    # busybox insmod takes plain .ko files: decompressed here.
    ko_cat "${file_of[$m]}" > "$ir/lib/modules/$m.ko"
    echo "$m" >> "$ir/lib/modules/load-order"
  done
  cat > "$ir/init" <<'EOF'
#!/bin/sh
# L1's init: load KVM and the disk, mount the lab's root image, run the job in a chroot of it,
# report over the serial console, power off. PID 1 must not exit: every path ends in poweroff.
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
report() { echo "HANGAR-LAB-RESULT: $1 exit=$2"; sync; poweroff -f; sleep 60; }
for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m.ko" || echo "kvm-lab: module $m did not load"
done
[ -c /dev/kvm ] || { echo "kvm-lab: L1 has no /dev/kvm (does QEMU's -cpu offer svm?)"; report FAIL 125; }
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 /dev/vda /mnt || { echo "kvm-lab: cannot mount the root image"; report FAIL 125; }
mount -o bind /dev /mnt/dev
mount -t devpts devpts /mnt/dev/pts 2>/dev/null
mount -t proc proc /mnt/proc
mount -t sysfs sysfs /mnt/sys
mount -t tmpfs -o mode=1777 tmpfs /mnt/tmp
# Extra disks (--with-qemu, --with-debian), found by their ext4 label (superblock at 1024, label 120 in).
for d in /dev/vd[b-z]; do
  [ -b "$d" ] || continue
  case "$(dd if="$d" bs=1 skip=1144 count=16 2>/dev/null | tr -d '\000')" in
    hangar-lab-qemu) mkdir -p /mnt/opt/qemu && mount -t ext4 -o ro "$d" /mnt/opt/qemu ;;
    hangar-lab-data) mkdir -p /mnt/data && mount -t ext4 "$d" /mnt/data ;;
  esac
done
cp /lab/job.sh /mnt/tmp/job.sh
# The heartbeat: the script on the host takes a console quiet for minutes as L1 stalled.
(while sleep 30; do echo "kvm-lab: L1 heartbeat: up $(cut -d' ' -f1 /proc/uptime)s, load $(cut -d' ' -f1-3 /proc/loadavg)"; done) &
echo "kvm-lab: L1 ready after $(cut -d' ' -f1 /proc/uptime)s (kernel $(uname -r)); running the job"
chroot /mnt /bin/busybox env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root TMPDIR=/tmp HANGAR_LAB=1 \
  HANGAR_IMAGE_DIR=/hangar/.cache/images /bin/sh -c 'cd /hangar && exec /bin/sh /tmp/job.sh' < /dev/null
rc=$?
echo "kvm-lab: job ended after $(cut -d' ' -f1 /proc/uptime)s of L1 uptime"
if [ "$rc" = 0 ]; then report PASS 0; else report FAIL "$rc"; fi
EOF
  chmod 755 "$ir/init"
  local stage=$CACHE/l1.new
  rm -rf "$stage" && mkdir -p "$stage"
  cp "$work/kernel/boot/vmlinuz-$ver" "$stage/vmlinuz"
  (cd "$ir" && find . -mindepth 1 ! -path './lab/*' | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$stage/initramfs.cpio"
  mkdir -p "$stage/l2-modules"
  : > "$stage/l2-modules/load-order"
  for m in "${l2_order[@]}"; do
    ko_cat "${file_of[$m]}" > "$stage/l2-modules/$m.ko"
    echo "$m" >> "$stage/l2-modules/load-order"
  done
  echo "$ver" > "$stage/l2-modules/kernel-version"
  echo "$l1_key" > "$stage/key"
  rm -rf "$L1" && mv "$stage" "$L1"
  # Keep the .debs (a rebuild after a script change needs no download); drop the unpacked tree.
  mkdir -p "$CACHE/debs" && mv "$work"/debs/*.deb "$CACHE/debs/" 2>/dev/null || true
  rm -rf "$work"
  say "L1 built: ${#order[@]} modules (${order[*]})"
}

# ---- what L2 guests boot besides the tiny image --------------------------------
# Into the folder $1 (inside the root image), with busybox from the .deb $2:
#  overlay.cpio  appended to the tiny image's initramfs: the extra modules and /lab-init, which a
#                guest runs with rdinit=/lab-init: it loads every module and, given
#                hangar.root=DEV, mounts that ext4 disk and switches root to it;
#  root.ext4     that disk: busybox, with busybox init as PID 1 (a shell on the console,
#                acpid for the power button), prompt "lab# ".
build_l2() {
  local out=$1 bbdeb=$2
  [ -n "$out" ] && [ -d "$out" ] && [ -f "$bbdeb" ] || die "build_l2: bad arguments"
  local ver tiny_ver
  ver=$(cat "$L1/l2-modules/kernel-version")
  tiny_ver=$(sed -n 's/.*"kernelVersion": *"\([^"]*\)".*/\1/p' "$IMAGES/tiny/image.json")
  [ "$tiny_ver" = "$ver" ] || die "the tiny image's kernel ($tiny_ver) is not L1's ($ver): rebuild it (HANGAR_TEST_IMAGES=tiny node scripts/build-images.mjs)"

  local ov=$CACHE/l2-overlay.stage
  rm -rf "$ov" && mkdir -p "$ov/lib/modules/lab"
  cp "$L1"/l2-modules/*.ko "$L1/l2-modules/load-order" "$ov/lib/modules/lab/"
  cat > "$ov/lab-init" <<'LABINIT'
#!/bin/sh
# The lab's rdinit: load the tiny image's modules and the lab's, then switch to the ext4 root
# disk named by hangar.root= (without one, go on with the tiny image's own /init).
# First of all a marker (a shell built-in: nothing to exec): bench/lab-start-bench.ts times it.
echo "lab-init: start"
export PATH=/sbin:/bin
/bin/busybox --install -s /bin 2>/dev/null
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
echo "lab-init: up $(cut -d' ' -f1 /proc/uptime)s"
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
root=''
for arg in $(cat /proc/cmdline); do case "$arg" in hangar.root=*) root=${arg#hangar.root=} ;; esac; done
for m in $(cat /lib/modules/load-order /lib/modules/lab/load-order); do
  grep -q "^$m " /proc/modules && continue
  f=/lib/modules/$m.ko
  [ -f "$f" ] || f=/lib/modules/lab/$m.ko
  insmod "$f" || echo "lab-init: module $m did not load"
done
if [ -n "$root" ]; then
  i=0
  while [ ! -b "$root" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  if mount -t ext4 "$root" /newroot; then
    mount --move /dev /newroot/dev
    mount --move /proc /newroot/proc
    mount --move /sys /newroot/sys
    exec switch_root /newroot /init
  fi
  echo "lab-init: cannot mount $root; going on with the initramfs"
fi
umount /proc /sys /dev 2>/dev/null
exec /init
LABINIT
  chmod 755 "$ov/lab-init"
  (cd "$ov" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$out/overlay.cpio"
  rm -rf "$ov"

  local rs=$CACHE/l2-root.stage
  rm -rf "$rs" && mkdir -p "$rs"/{bin,sbin,dev,proc,sys,tmp,run,root,etc/acpi/PWRF,var/log,var/run}
  dpkg-deb -x "$bbdeb" "$rs/bb"
  mv "$rs/bb/bin/busybox" "$rs/bin/busybox" && rm -rf "$rs/bb"
  local a
  for a in $("$rs/bin/busybox" --list); do [ -e "$rs/bin/$a" ] || ln -s busybox "$rs/bin/$a"; done
  # PID 1 is busybox init: its children start with default signal handling (a shell started
  # with & by a script would ignore SIGINT for good, and Ctrl-C would do nothing), it handles
  # poweroff/reboot (SIGUSR2/SIGTERM) and Ctrl-Alt-Del (it sets kernel.ctrl-alt-del to 0).
  ln -s bin/busybox "$rs/init"
  cat > "$rs/etc/inittab" <<'INITTAB'
::sysinit:/etc/rc.lab
::respawn:/bin/cttyhack /bin/sh -l
::ctrlaltdel:/bin/busybox reboot
::shutdown:/bin/sync
INITTAB
  cat > "$rs/etc/rc.lab" <<'RCLAB'
#!/bin/sh
# lab-init moved /dev, /proc and /sys here already.
export PATH=/sbin:/bin
grep -q ' /proc ' /proc/mounts 2>/dev/null || mount -t proc proc /proc
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
hostname lab
ip link set lo up 2>/dev/null
acpid -c /etc/acpi
echo "Hangar lab root: user space is up ($(grep ' / ' /proc/mounts | cut -d' ' -f1-4), uptime $(cut -d' ' -f1 /proc/uptime)s)"
RCLAB
  chmod 755 "$rs/etc/rc.lab"
  printf "export PS1='lab# ' HOME=/root\ncd /root\n" > "$rs/etc/profile"
  printf '#!/bin/sh\necho "lab: power button pressed, powering off" > /dev/console\nexec /bin/busybox poweroff\n' > "$rs/etc/acpi/PWRF/00000080"
  chmod 755 "$rs/etc/acpi/PWRF/00000080"
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$rs/etc/passwd"
  printf '127.0.0.1 localhost\n' > "$rs/etc/hosts"
  mke2fs -q -t ext4 -L hangar-l2-root -E root_owner=0:0 -d "$rs" "$out/root.ext4" "$L2_ROOT_SIZE" >&2
  rm -rf "$rs"
}

# ---- the root image: node, its libraries, the project, the guest image -----
build_root() {
  say "building the lab's root image (node, dist/, runtime node_modules, tiny image)"
  local bbdeb
  bbdeb=$(ls "$CACHE"/debs/busybox-static_*.deb 2>/dev/null | head -1)
  [ -n "$bbdeb" ] || die "busybox-static .deb missing from the cache; run with --rebuild"
  local st=$CACHE/root.stage
  rm -rf "$st" && mkdir -p "$st"/{bin,usr/bin,dev,proc,sys,tmp,run,root,etc,hangar/.cache/images}
  dpkg-deb -x "$bbdeb" "$st/bb"
  mv "$st/bb/bin/busybox" "$st/bin/busybox" && rm -rf "$st/bb"
  local a
  for a in $("$st/bin/busybox" --list); do [ -e "$st/bin/$a" ] || ln -s busybox "$st/bin/$a"; done
  local nodebin
  nodebin=$(readlink -f "$(command -v node)")
  cp "$nodebin" "$st/usr/bin/node"
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$st/etc/passwd"
  printf 'root:x:0:\n' > "$st/etc/group"
  printf '127.0.0.1 localhost\n' > "$st/etc/hosts"

  # The project: package.json (it says "type": "module"), dist/, runtime dependencies only.
  cp "$ROOT/package.json" "$st/hangar/"
  cp -a "$ROOT/dist" "$st/hangar/dist"
  local dep rel
  while IFS= read -r dep; do
    rel=${dep#"$ROOT"/}
    [ "$rel" = "$dep" ] && continue
    case "$rel" in node_modules/*) ;; *) continue ;; esac
    mkdir -p "$st/hangar/$(dirname "$rel")"
    [ -e "$st/hangar/$rel" ] || cp -a "$ROOT/$rel" "$st/hangar/$rel"
  done < <(cd "$ROOT" && npm ls --omit=dev --all --parseable 2>/dev/null)
  [ -d "$st/hangar/node_modules/koffi" ] || die "runtime node_modules missing (npm ls --omit=dev found no koffi)"
  cp -a "$IMAGES/tiny" "$st/hangar/.cache/images/tiny"
  # The daemon's host tools (hangard runs in L1 for test/lab/debian-daemon.ts): qemu-img makes a
  # micro VM's raw root disk from an image's base disk, mkfs.vfat and mcopy its cloud-init seed,
  # ip lists and makes links. mcopy is a name of the mtools binary (it reads its own argv[0]).
  mkdir -p "$st/usr/sbin"
  local t
  for t in $DAEMON_TOOLS; do cp "$t" "$st$t"; done
  ln -s mkfs.fat "$st/usr/sbin/mkfs.vfat"
  ln -s mtools "$st/usr/bin/mcopy"
  # mtools converts names through iconv (code page 850): without glibc's gconv modules mcopy
  # fails with "Error setting code page".
  mkdir -p "$st$GCONV_DIR"
  cp -a "$GCONV_DIR/." "$st$GCONV_DIR/"
  mkdir -p "$st/hangar/.cache/lab-l2"
  build_l2 "$st/hangar/.cache/lab-l2" "$bbdeb"

  # Shared libraries of node and of the native add-ons, as ldd names them.
  local libs
  libs=$( { ldd "$nodebin"; find "$st/hangar/node_modules" -name '*.node' -path '*linux*x64*' -exec ldd {} \; 2>/dev/null; \
            find "$st/hangar/node_modules" -name '*.node' ! -path '*linux*' -exec ldd {} \; 2>/dev/null; \
            for t in $DAEMON_TOOLS; do ldd "$t"; done; } \
          | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
  local l
  for l in $libs; do
    mkdir -p "$st$(dirname "$l")"
    cp -L "$l" "$st$l"
  done
  [ -e "$st/lib64/ld-linux-x86-64.so.2" ] || die "ldd named no dynamic loader for node"

  rm -f "$CACHE/root.ext4.new"
  mke2fs -q -t ext4 -L hangar-lab -E root_owner=0:0 -d "$st" "$CACHE/root.ext4.new" "$ROOT_IMAGE_SIZE" >&2
  echo "$root_key" > "$CACHE/root.key.new"
  mv "$CACHE/root.ext4.new" "$CACHE/root.ext4"
  mv "$CACHE/root.key.new" "$CACHE/root.key"
  rm -rf "$st"
  say "root image built ($(du -h "$CACHE/root.ext4" | cut -f1) used)"
}

# ---- the host's QEMU for L1 (--with-qemu) -------------------------------------
# A disk of its own (the root image stays as the suite uses it): bin/qemu-system-x86_64,
# lib/ with every library ldd names and the dynamic loader, share/ with the firmware
# (SeaBIOS for q35, qboot for microvm, the option ROMs for -kernel), modules/ (accel-tcg),
# and bin/qemu, which runs the binary through that loader with -L share.
qemu_key() { echo "qemu=$(qemu-system-x86_64 --version | head -1) iperf3=$(command -v iperf3 >/dev/null && iperf3 --version 2>/dev/null | head -1) script=$script_hash"; }
build_qemu() {
  say "building the QEMU disk for L1"
  local st=$CACHE/qemu.stage bin
  bin=$(readlink -f "$(command -v qemu-system-x86_64)")
  rm -rf "$st" && mkdir -p "$st"/{bin,lib,share}
  cp "$bin" "$st/bin/qemu-system-x86_64"
  local l
  for l in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u); do cp -L "$l" "$st/lib/"; done
  [ -e "$st/lib/ld-linux-x86-64.so.2" ] || die "ldd named no dynamic loader for QEMU"
  local f
  for f in /usr/share/seabios/bios-256k.bin /usr/share/qemu/qboot.rom /usr/share/qemu/linuxboot_dma.bin /usr/share/qemu/kvmvapic.bin /usr/share/qemu/pvh.bin /usr/share/qemu/multiboot_dma.bin; do
    [ -e "$f" ] && cp -L "$f" "$st/share/"
  done
  [ -e "$st/share/qboot.rom" ] && cp "$st/share/qboot.rom" "$st/share/bios-microvm.bin"
  # Debian builds TCG as a loadable module; KVM is built in. The modules folder comes along.
  mkdir -p "$st/modules"
  cp /usr/lib/x86_64-linux-gnu/qemu/accel-*.so "$st/modules/" 2>/dev/null || true
  printf '#!/bin/sh\nQEMU_MODULE_DIR=/opt/qemu/modules exec /opt/qemu/lib/ld-linux-x86-64.so.2 --library-path /opt/qemu/lib /opt/qemu/bin/qemu-system-x86_64 -L /opt/qemu/share "$@"\n' > "$st/bin/qemu"
  chmod 755 "$st/bin/qemu"
  # The host's iperf3 too (L1's end of guest network benchmarks), run the same way, as bin/iperf3.
  if command -v iperf3 >/dev/null; then
    bin=$(readlink -f "$(command -v iperf3)")
    cp "$bin" "$st/bin/iperf3-bin"
    for l in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u); do [ -e "$st/lib/${l##*/}" ] || cp -L "$l" "$st/lib/"; done
    printf '#!/bin/sh\nexec /opt/qemu/lib/ld-linux-x86-64.so.2 --library-path /opt/qemu/lib /opt/qemu/bin/iperf3-bin "$@"\n' > "$st/bin/iperf3"
    chmod 755 "$st/bin/iperf3"
  else
    say "no iperf3 on the host (Debian package iperf3): L1 gets none"
  fi
  rm -f "$CACHE/qemu.ext4"
  mke2fs -q -t ext4 -L hangar-lab-qemu -E root_owner=0:0 -d "$st" "$CACHE/qemu.ext4" 256M >&2
  qemu_key > "$CACHE/qemu.key"
  rm -rf "$st"
}

# ---- the debian-12 image for L1 (--with-debian) --------------------------------
DEBIAN_SRC=${HANGAR_LAB_DEBIAN_IMAGE:-$IMAGES/debian-12}
# The shared image's disk keeps its old name; a variant gets a cache file of its own.
if [ -n "${HANGAR_LAB_DEBIAN_IMAGE:-}" ]; then
  DEBIAN_DISK=$CACHE/debian-$(echo "$DEBIAN_SRC" | sha256sum | cut -c1-8).ext4
else
  DEBIAN_DISK=$CACHE/debian.ext4
fi
debian_key() { echo "debian=$(cat "$DEBIAN_SRC/image.json" 2>/dev/null | sha256sum | cut -c1-16) script=$script_hash"; }
# The lab's NoCloud seed: root's password (set at every boot, before any login prompt, by
# bootcmd in cloud-init's init stage) and a static address for a NIC with the lab's MAC
# (without one cloud-init would ask DHCP, and ifupdown would hold the boot for a minute).
build_debian_seed() {
  local dir=$1 img=$2
  printf 'instance-id: hangar-lab-debian\nlocal-hostname: debian\n' > "$dir/meta-data"
  printf '%s\n' '#cloud-config' '# scripts/kvm-lab.sh: root logs in on the serial console (the lab has no SSH).' \
    'bootcmd:' '  - [sh, -c, "echo root:hangar-lab | chpasswd"]' 'ssh_pwauth: false' > "$dir/user-data"
  printf '%s\n' 'version: 1' 'config:' '  - type: physical' '    name: eth0' '    mac_address: "02:00:00:0a:00:02"' \
    '    subnets:' '      - type: static' '        address: 10.0.2.2/24' > "$dir/network-config"
  local mkfs
  mkfs=$(command -v mkfs.vfat || echo /usr/sbin/mkfs.vfat)
  [ -x "$mkfs" ] && command -v mcopy >/dev/null || die "needs mkfs.vfat and mcopy (Debian packages dosfstools mtools)"
  "$mkfs" -C -n CIDATA "$img" 1024 >/dev/null
  MTOOLS_SKIP_CHECK=1 mcopy -i "$img" "$dir/meta-data" "$dir/user-data" "$dir/network-config" ::/
}
build_debian() {
  say "building the debian-12 disk for L1 from $DEBIAN_SRC (a raw copy of the image's disk, a seed)"
  local src=$DEBIAN_SRC st=$CACHE/debian.stage
  [ -f "$src/image.json" ] && [ -f "$src/vmlinuz" ] && [ -f "$src/initrd.img" ] || die "no debian-12 image in $src (node scripts/build-images.mjs)"
  command -v qemu-img >/dev/null || die "needs qemu-img (Debian package qemu-utils)"
  rm -rf "$st" && mkdir -p "$st/debian-12" "$st/seed"
  cp "$src/vmlinuz" "$src/initrd.img" "$src/image.json" "$st/debian-12/"
  qemu-img convert -O raw "$src/$(sed -n 's/.*"disk": *"\([^"]*\)".*/\1/p' "$src/image.json")" "$st/debian-12/disk.raw"
  build_debian_seed "$st/seed" "$st/debian-12/cidata.img"
  rm -rf "$st/seed"
  rm -f "$DEBIAN_DISK"
  mke2fs -q -t ext4 -L hangar-lab-data -E root_owner=0:0 -d "$st" "$DEBIAN_DISK" 4G >&2
  debian_key > "${DEBIAN_DISK%.ext4}.key"
  rm -rf "$st"
}

# One builder at a time; runs only read what is built.
exec 9>"$CACHE/lock"
flock 9
if ((rebuild)) || [ "$(cat "$L1/key" 2>/dev/null)" != "$l1_key" ]; then build_l1; fi
if ((rebuild)) || [ "$(cat "$CACHE/root.key" 2>/dev/null)" != "$root_key" ] || [ ! -f "$CACHE/root.ext4" ]; then build_root; fi
if ((with_qemu)) && { ((rebuild)) || [ "$(cat "$CACHE/qemu.key" 2>/dev/null)" != "$(qemu_key)" ]; }; then build_qemu; fi
if ((with_debian)) && { ((rebuild)) || [ "$(cat "${DEBIAN_DISK%.ext4}.key" 2>/dev/null)" != "$(debian_key)" ]; }; then build_debian; fi
flock -u 9
say "cache ready after $((SECONDS - started))s"
((build_only)) && exit 0

# ---- one run ------------------------------------------------------------------
run=$(mktemp -d "${TMPDIR:-/tmp}/hangar-kvm-lab.XXXXXX")
qpid=''
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
    kill "$qpid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
  fi
  rm -rf "$run"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# The job: the arguments, each single-quoted, appended to L1's initramfs as a second archive.
mkdir -p "$run/job/lab"
{
  echo '# written by scripts/kvm-lab.sh'
  printf 'exec'
  for a in "$@"; do printf " '%s'" "${a//\'/\'\\\'\'}"; done
  echo
} > "$run/job/lab/job.sh"
(cd "$run/job" && printf 'lab\nlab/job.sh\n' | cpio -o -H newc -R 0:0 --quiet) > "$run/job.cpio"
cat "$L1/initramfs.cpio" "$run/job.cpio" > "$run/initrd"

log=$run/console.log
: > "$log"
qemu_drive=()
((with_qemu)) && qemu_drive=(-drive "file=$CACHE/qemu.ext4,if=virtio,format=raw,readonly=on")
((with_debian)) && qemu_drive+=(-drive "file=$DEBIAN_DISK,if=virtio,format=raw,snapshot=on")
# snapshot=on: the run's writes go to a temporary overlay (in TMPDIR, i.e. $run), never to the cache.
TMPDIR=$run qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m "$L1_MEM_MIB" \
  -display none -monitor none -no-reboot \
  -serial "file:$log" \
  -kernel "$L1/vmlinuz" -initrd "$run/initrd" \
  -append "console=ttyS0 quiet panic=-1" \
  -drive "file=$CACHE/root.ext4,if=virtio,format=raw,snapshot=on" \
  "${qemu_drive[@]}" \
  -device virtio-rng-pci \
  -qmp "unix:$run/qmp.sock,server=on,wait=off" \
  -net none </dev/null >"$run/qemu.out" 2>&1 &
qpid=$!
boot_at=$SECONDS
say "L1 started (qemu pid $qpid, timeout ${TIMEOUT}s)"

printed=0
show_new() {
  local size
  size=$(stat -c %s "$log")
  if ((size > printed)); then
    ((quiet)) || tail -c +$((printed + 1)) "$log" | head -c $((size - printed)) | tr -d '\r'
    printed=$size
  fi
}
timed_out=0 stalled=0 reported_at='' last_size=0 last_progress=$SECONDS
nudged_at='' nudges=0 rang_at=0 rang=0
while kill -0 "$qpid" 2>/dev/null; do
  show_new
  if ((printed != last_size)); then
    silent=$((SECONDS - last_progress))
    if [ -n "$nudged_at" ]; then
      say "L1's console went on $((SECONDS - nudged_at))s after the NMI"
    elif ((rang && silent > 40)); then
      say "L1's console was quiet for ${silent}s (heartbeat due every 30 s) and went on after the doorbell (a key press)"
    fi
    last_size=$printed last_progress=$SECONDS nudged_at='' rang=0
  fi
  if [ -z "$reported_at" ]; then
    silent=$((SECONDS - last_progress))
    # The doorbell: a quiet console gets L1 a key press every DOORBELL seconds. An interrupt
    # from a device makes QEMU 7.2 look at L1's APIC again — the cure for the wake-up its TCG
    # can lose (scripts/lab/l1-qmp.mjs). Nothing in L1 reads the keyboard; an L1 that is
    # merely quiet does not notice.
    if ((DOORBELL > 0 && silent >= DOORBELL && SECONDS - rang_at >= DOORBELL)); then
      node "$ROOT/scripts/lab/l1-qmp.mjs" "$run/qmp.sock" key >&2 || true
      rang_at=$SECONDS rang=1
    fi
    # Still quiet at NUDGE: QEMU's view of L1 (kept in the output), then an NMI. At most
    # NUDGES per run, so a dead L1 still ends as stalled below.
    if [ -z "$nudged_at" ] && ((NUDGE > 0 && NUDGE < STALL && nudges < NUDGES && silent > NUDGE)); then
      nudges=$((nudges + 1)) nudged_at=$SECONDS
      say "L1's console showed nothing for ${silent}s (heartbeat every 30 s, doorbell rung); what QEMU says about it, then an NMI (nudge $nudges of $NUDGES):"
      node "$ROOT/scripts/lab/l1-qmp.mjs" "$run/qmp.sock" dump >&2 || true
      node "$ROOT/scripts/lab/l1-qmp.mjs" "$run/qmp.sock" nmi >&2 || true
    fi
  fi
  if [ -z "$reported_at" ] && ((SECONDS - last_progress > STALL)); then
    stalled=1
    say "L1 stalled: its console (heartbeat every 30 s) showed nothing for $((SECONDS - last_progress))s; what QEMU says about it:"
    node "$ROOT/scripts/lab/l1-qmp.mjs" "$run/qmp.sock" dump >&2 || true
    say "last console lines:"
    tail -n 20 "$log" | tr -d '\r' | sed 's/^/  /' >&2
    break
  fi
  if [ -z "$reported_at" ] && grep -qa "^$MARKER: " "$log"; then reported_at=$SECONDS; fi
  # L1 powers off right after reporting; give it a moment, then end it.
  if [ -n "$reported_at" ] && ((SECONDS - reported_at > 20)); then break; fi
  if ((SECONDS - boot_at > TIMEOUT)); then timed_out=1; say "timeout: L1 ran ${TIMEOUT}s; ending it"; break; fi
  sleep 0.5
done
if kill -0 "$qpid" 2>/dev/null; then kill "$qpid" 2>/dev/null || true; fi
wait "$qpid" 2>/dev/null || true
qpid=''
show_new

result=$(grep -a "^$MARKER: " "$log" | tail -1 | tr -d '\r' || true)
if [[ "$result" =~ exit=([0-9]+) ]]; then
  code=${BASH_REMATCH[1]}
  say "${result#"$MARKER: "} (L1 ran $((SECONDS - boot_at))s, $((SECONDS - started))s in all)"
  exit "$code"
fi
if ((stalled)); then say "FAIL: L1 stalled (exit 126)"; exit 126; fi
if ((timed_out)); then exit 124; fi
say "L1 ended without reporting a result; QEMU said:"
sed 's/^/  /' "$run/qemu.out" >&2
exit 125
}
