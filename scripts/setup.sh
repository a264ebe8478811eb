#!/usr/bin/env bash
# Brings a fresh Debian 12 host (as root) to the point where Hangar builds,
# runs and tests: Debian packages, npm dependencies, the TypeScript build.
# Idempotent: every step checks first and does nothing when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages Hangar uses at run time and in its tests.
DEBS=(qemu-system-x86 qemu-utils busybox-static lz4 cpio gcc make libc6-dev iproute2 linux-libc-dev openssl util-linux passwd e2fsprogs mmdebstrap mtools dosfstools syslinux syslinux-common systemd-boot-efi fdisk dnsmasq-base nftables ovmf grub-pc-bin grub-efi-amd64-bin xorriso chromium)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "hangar setup: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "hangar setup: installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# npm dependencies: install when node_modules is missing or older than the lock file.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "hangar setup: installing npm dependencies (npm ci)" >&2
  npm ci --no-audit --no-fund >&2
fi

# Build: tsc into dist/ when any source is newer than the last build.
stamp=dist/.build-stamp
if [ ! -f "$stamp" ] || [ -n "$(find src test bench tsconfig.json package.json -newer "$stamp" -print -quit 2>/dev/null)" ]; then
  echo "hangar setup: building (tsc)" >&2
  npx tsc -p tsconfig.json
  touch "$stamp"
fi

# The web UI (web/, React + Vite): type-checked, then built into dist/web, which hangard serves under /ui/.
webstamp=dist/web/.build-stamp
if [ ! -f "$webstamp" ] || [ -n "$(find web package.json -newer "$webstamp" -print -quit 2>/dev/null)" ]; then
  echo "hangar setup: building the web UI (vite)" >&2
  npx tsc -p web/tsconfig.json
  npx vite build --config web/vite.config.ts --logLevel warn >&2
  touch "$webstamp"
fi

# The console log writer QEMU's VMs log through (native/hangar-conlog.c, see docs/engines.md).
if [ ! -x dist/native/hangar-conlog ] || [ native/hangar-conlog.c -nt dist/native/hangar-conlog ]; then
  mkdir -p dist/native && gcc -O2 -Wall -o dist/native/hangar-conlog native/hangar-conlog.c
fi
