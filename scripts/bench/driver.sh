#!/usr/bin/env bash
# Driver and core benchmarks, as root, on simulated hosts with real Docker
# engines (figures printed, never asserted):
# - docker run -d on a Tenet network against --network none and Docker's
#   own bridge, interleaved, 20 each; and the time from docker run returning
#   on one host until a container on another host gets its first ping reply;
# - docker run -d with 0, then 10,000, then 0 remote endpoints programmed;
# - the plugin calls of the 1,000th endpoint on a host against the 1st, side
#   by side in interleaved rounds (and, noisier, the last 10 of 1,000 made in
#   a row against the first 10), and their p99 with one peer blackholed
#   against without.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/deps.sh
tenet_deps
go test -run '^$' -bench 'BenchmarkDockerRun|BenchmarkPluginCalls' -benchtime 1x ./e2e/ | grep -v '^ *\(cluster\|testbed\)\.go'
