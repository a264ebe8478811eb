#!/usr/bin/env bash
# Benchmarks: measure and write the numbers into docs/benchmarks.md (each
# benchmark owns a section). `npm run bench -- vmm` runs only matching files.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Host-side tools only the benchmarks use (the network benches run an iperf3
# server in their namespaces; the lab copies the host's iperf3 into L1).
BENCH_DEBS=(iperf3)
for p in "${BENCH_DEBS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    if [ "$(id -u)" != 0 ]; then echo "hangar bench: missing Debian package $p (sudo apt-get install $p)" >&2; exit 1; fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >&2
  fi
done
export HANGAR_IMAGE_DIR="${HANGAR_IMAGE_DIR:-$PWD/.cache/images}"
node scripts/build-images.mjs
mapfile -t files < <(ls dist/bench/*-bench.js 2>/dev/null)
for f in "${files[@]}"; do
  if (($#)); then m=0; for pat in "$@"; do [[ "$f" == *"$pat"* ]] && m=1; done; ((m)) || continue; fi
  echo "== $f" >&2
  node "$f"
done
