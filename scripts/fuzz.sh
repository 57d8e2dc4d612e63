#!/usr/bin/env bash
# The operation fuzzer: random days of cluster administration on the real
# multi-host testbed (3-5 hosts, real Docker engines, real tenetd), checked
# against a model after every step. See e2e/fuzz/README.md.
#
#   scripts/fuzz.sh                          CI: a fresh seed, 60 steps, at most ~10 minutes
#   scripts/fuzz.sh --seed S --steps N       replay run S exactly (add the --hosts, --weights,
#                                            --tolerate its report prints)
#   scripts/fuzz.sh --replay DIR/ops.json    replay the steps a failed run saved
#   scripts/fuzz.sh --soak                   the soak: fresh seeds in runs of 100 steps, until 2,000
#                                            steps or 75 minutes; writes e2e/fuzz/SOAK.md
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
  args=(--soak 2000 --soak-run 100 --soak-time 75m --soak-report e2e/fuzz/SOAK.md "${args[@]}")
elif [ ${#args[@]} -eq 0 ]; then
  # CI: bounded steps and time, a fresh seed (printed first).
  args=(--steps 60 --budget 8m)
fi
# Built once per version of the sources, like scripts/testbed.sh.
cache=/var/tmp/tenet-testbed-bin
key=$(find . -path ./.git -prune -o -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 |
  LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
bin="$cache/$key/fuzz"
if [ ! -x "$bin" ]; then
  mkdir -p "$cache/$key"
  tmp=$(mktemp -d "$cache/build.XXXXXX")
  go build -o "$tmp/fuzz" ./e2e/cmd/fuzz
  mv -f "$tmp/fuzz" "$bin"
  rm -rf "$tmp"
fi
if [ -n "${TENET_HEAVY_LOCKED:-}" ]; then
  exec "$bin" "${args[@]}" # the caller holds the lock already (flock -x around scripts/test.sh)
fi
echo "fuzz: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+changes'), waiting for /tmp/tenet-heavy.lock (shared)"
exec flock -s /tmp/tenet-heavy.lock "$bin" "${args[@]}"
