#!/usr/bin/env bash
# Driver benchmarks, as root, on 3 simulated hosts with real Docker engines:
# docker run -d wall time on a Tenet network against --network none, and the
# time from docker run returning on one host until a container on another
# host gets its first ping reply.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/deps.sh
tenet_deps
go test -run '^$' -bench 'BenchmarkDockerRun' -benchtime 1x ./e2e/ | grep -v '^ *\(cluster\|testbed\)\.go'
