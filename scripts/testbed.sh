#!/usr/bin/env bash
# Simulated hosts with real Docker engines on this machine, from a shell:
#   scripts/testbed.sh up N [--tenet]      bring up N hosts (prints what it does)
#   scripts/testbed.sh docker h0 ps        the docker CLI against host h0's engine
#   scripts/testbed.sh tenetctl h0 status  tenetctl on h0 (its exit code is kept)
#   scripts/testbed.sh exec h1 ip addr     a command on host h1
#   scripts/testbed.sh restart-tenetd h1 [--kill] | restart-docker h1
#   scripts/testbed.sh cut h1 | heal h1    h1's underlay link down | up
#   scripts/testbed.sh kill h1             h1 dies for good (processes and link)
#   scripts/testbed.sh ls | down | reap | leaks
# The testbed binary is built once per version of the source and cached in
# /var/tmp/tenet-testbed-bin/<hash of the Go sources>/, so a call costs no
# build (keeps the 5 newest builds).
set -euo pipefail
cd "$(dirname "$0")/.."
cache=/var/tmp/tenet-testbed-bin
export PATH="/usr/local/go/bin:$PATH"
key=$(find . -path ./.git -prune -o -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 |
  LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
bin="$cache/$key/testbed"
if [ ! -x "$bin" ]; then
  source scripts/deps.sh
  tenet_deps
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  go build -o "$tmp/testbed" ./e2e/cmd/testbed
  mkdir -p "$cache/$key"
  mv -f "$tmp/testbed" "$bin" # atomic: a concurrent call sees all or nothing
  rm -rf "$tmp"
  trap - EXIT
  # Keep the 5 newest builds.
  ls -1dt "$cache"/*/ 2>/dev/null | grep -v '/build\.' | tail -n +6 | xargs -r rm -rf
fi
exec "$bin" "$@"
