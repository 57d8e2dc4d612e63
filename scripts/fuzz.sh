#!/usr/bin/env bash
# The operation fuzzer: random days of cluster administration on the real
# multi-host testbed (3-5 hosts, real Docker engines, real tenetd), checked
# against a model after every step. See e2e/fuzz/README.md.
#
#   scripts/fuzz.sh                          CI: a fresh seed, 60 steps, at most ~10 minutes
#   scripts/fuzz.sh --seed S --steps N       replay run S exactly (add the --hosts, --weights,
#                                            --tolerate its report prints)
#   scripts/fuzz.sh --replay DIR/ops.json    replay the steps a failed run saved
#   scripts/fuzz.sh --soak                   the soak: fresh seeds, 2,000 steps (about an hour);
#                                            writes e2e/fuzz/SOAK.md
#   scripts/fuzz.sh --shrink 30m ...         after a failure, look for a shorter failing sequence
# Any other flag goes to the fuzzer (go run ./e2e/cmd/fuzz --help). Runs hold
# /tmp/tenet-heavy.lock shared, and every run tears its testbed down.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
tenet_deps
args=()
soak=0
for a in "$@"; do
  if [ "$a" = "--soak" ]; then soak=1; else args+=("$a"); fi
done
if [ "$soak" = 1 ]; then
  args=(--soak 2000 --soak-run 100 --soak-report e2e/fuzz/SOAK.md "${args[@]}")
elif [ ${#args[@]} -eq 0 ]; then
  # CI: bounded steps and time, a fresh seed (printed first).
  args=(--steps 60 --budget 8m)
fi
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/fuzz" ./e2e/cmd/fuzz
flock -s /tmp/tenet-heavy.lock "$bin/fuzz" "${args[@]}"
