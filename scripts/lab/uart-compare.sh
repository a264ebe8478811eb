#!/bin/sh
# A lab job (scripts/kvm-lab.sh -- sh -c "$(cat scripts/lab/uart-compare.sh)"):
# the `uart` scenario of test/lab/linux-guest.ts twice — with the UART fast
# path as built, then without it (a copy of dist/ whose Machine does not give
# the fast path to its vCPU threads) — for the numbers in docs/vmm.md.
set -e
node dist/test/lab/linux-guest.js uart
p=/tmp/no-fast-path
mkdir -p "$p"
cp -a dist package.json "$p/"
ln -s /hangar/node_modules "$p/node_modules"
sed -i 's/serialFast: this.serial.fastPath(),//' "$p/dist/src/vmm/machine.js"
if grep -q serialFast "$p/dist/src/vmm/machine.js"; then echo "uart-compare: could not turn the fast path off"; exit 1; fi
echo "uart-compare: now without the fast path"
node "$p/dist/test/lab/linux-guest.js" uart
