#!/usr/bin/env bash
# Simulated hosts with real Docker engines on this machine, from a shell:
#   scripts/testbed.sh up N                bring up N hosts (prints what it does)
#   scripts/testbed.sh docker h0 ps        the docker CLI against host h0's engine
#   scripts/testbed.sh exec h1 ip addr     a command on host h1
#   scripts/testbed.sh ls | down | reap | leaks
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
tenet_deps
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/testbed" ./e2e/cmd/testbed
"$bin/testbed" "$@"
