#!/usr/bin/env bash
# Benchmarks: measure and write the numbers into docs/benchmarks.md (each
# benchmark owns a section). `npm run bench -- vmm` runs only matching files.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HANGAR_IMAGE_DIR="${HANGAR_IMAGE_DIR:-$PWD/.cache/images}"
node scripts/build-images.mjs
mapfile -t files < <(ls dist/bench/*-bench.js 2>/dev/null)
for f in "${files[@]}"; do
  if (($#)); then m=0; for pat in "$@"; do [[ "$f" == *"$pat"* ]] && m=1; done; ((m)) || continue; fi
  echo "== $f" >&2
  node "$f"
done
