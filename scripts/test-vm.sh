#!/usr/bin/env bash
# Runs the VM suite, as root: for each Debian release (12 bookworm with
# docker.io 20.10, 13 trixie with docker.io 26.1), three QEMU VMs with Docker
# as `apt-get install docker.io` leaves it and Tenet installed from the
# project's package (scripts/package/deb.sh), then the end-to-end scenarios
# on them, reboot included. VM images are built first when their inputs
# changed (a few minutes each; cached in /var/cache/tenet-vm).
#   scripts/test-vm.sh                  both releases
#   scripts/test-vm.sh trixie           one of them
#   scripts/test-vm.sh ls|reap|leaks     VM runs on this machine; tear down those
#                                        of killed tests; list leftovers (exit 1)
# Everything lives in network namespaces named tenet-vm… and under
# /var/tmp/tenet-vm, removed when the run ends; the root namespace is never
# touched. QEMU uses KVM where the machine has a usable one, software
# emulation otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "test-vm: needs root (network namespaces, taps, QEMU)" >&2
  exit 1
fi
source scripts/deps.sh
tenet_pkgs+=(qemu-system-x86 qemu-utils mmdebstrap e2fsprogs openssh-client)
tenet_deps

case "${1:-}" in
  ls|reap|leaks) exec go run ./e2e/vm/cmd/vmtestbed "$1" ;;
esac
releases=bookworm,trixie
if [ $# -gt 0 ]; then
  releases=$(IFS=,; echo "$*")
fi
start=$(date +%s)
echo "== VM suite: $releases"
status=0
TENET_VM=1 TENET_VM_RELEASES="$releases" go test -count=1 -timeout 60m -v ./e2e/vm || status=$?
echo "== VM suite: exit $status after $(( $(date +%s) - start )) s"
exit $status
