#!/usr/bin/env bash
# Tenet's multi-host demo on this one machine. For now (foundation): three
# simulated hosts, each with its own real Docker engine running a container,
# joined by an underlay network. Everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
tenet_deps
bin=$(mktemp -d)
go build -o "$bin/testbed" ./e2e/cmd/testbed
tb="$bin/testbed"
cleanup() {
  echo
  echo "== tearing down"
  "$tb" down
  rm -rf "$bin"
}
trap cleanup EXIT

if "$tb" ls | grep -q ' up '; then
  echo "a testbed is already up (scripts/testbed.sh ls); bring it down first: scripts/testbed.sh down" >&2
  trap - EXIT
  rm -rf "$bin"
  exit 1
fi

echo "== bringing up 3 hosts"
"$tb" up 3

for h in h0 h1 h2; do
  echo
  echo "== $h: start a container on its own engine"
  "$tb" docker "$h" run -d --name "demo-$h" --hostname "demo-$h" --network none tenet-test:latest sleep 3600 >/dev/null
  "$tb" docker "$h" ps --format 'table {{.Names}}\t{{.Image}}\t{{.Status}}'
  "$tb" docker "$h" exec "demo-$h" sh -c 'echo "inside $(hostname): $(ip -o link show lo | cut -d" " -f2-3)"'
done

echo
echo "== the hosts reach each other over the underlay (198.51.100.0/24)"
for pair in "h0 198.51.100.11" "h1 198.51.100.12" "h2 198.51.100.10"; do
  set -- $pair
  printf '%s -> %s: ' "$1" "$2"
  "$tb" exec "$1" ping -c1 -W2 "$2" | grep -o 'time=[0-9.]* ms'
done
