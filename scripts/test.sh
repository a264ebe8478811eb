#!/usr/bin/env bash
# The whole test suite, as README.md gives it (`npm test`): set-up where
# needed, then every unit test and every end-to-end test, compiled, through
# node's test runner. Extra arguments narrow the run to files whose path
# contains them: `npm test -- qmp daemon-lifecycle`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# Tests share one cache of built images (guest kernel, initramfs) and test guests.
export HANGAR_IMAGE_DIR="${HANGAR_IMAGE_DIR:-$PWD/.cache/images}"
node scripts/build-images.mjs

mapfile -t files < <(ls dist/test/unit/*.test.js dist/test/e2e/*.test.js dist/test/security/*.test.js 2>/dev/null)
if (($#)); then
  sel=()
  for f in "${files[@]}"; do for pat in "$@"; do [[ "$f" == *"$pat"* ]] && { sel+=("$f"); break; }; done; done
  files=("${sel[@]}")
fi
if ((${#files[@]} == 0)); then echo "no test files found" >&2; exit 1; fi

# One run of node's test runner, one file at a time: the end-to-end files boot
# real VMs, and these hosts have two cores. Its closing lines count everything.
exec node --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
