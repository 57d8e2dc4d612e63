#!/usr/bin/env bash
# Datapath benchmarks, as root, on simulated hosts of this machine (run the
# figures you record under `flock -x /tmp/tenet-heavy.lock`, so that nothing
# else runs beside them):
#  - TCP throughput between two hosts' endpoints over Tenet's datapath (with
#    egress, so NAT and conntrack are on), over a hand-built kernel VXLAN, and
#    over the bare underlay with Tenet's host rules and without, interleaved
#    for TENET_BENCH_ROUNDS rounds (default 10), each ratio as a mean with a
#    95% confidence interval (targets: Tenet >= 0.97x the hand-built VXLAN,
#    the underlay with Tenet's rules >= 0.98x without);
#  - the time one Reconcile takes to program 10,000 remote endpoints
#    (target: under 0.5 s);
#  - adding the 1,000th network of one tenant (with egress) and the 1,000th
#    endpoint on one host vs the 1st, one scoped reconcile each
#    (target: at most 1.5x);
#  - adding one endpoint to a network with 0 and with 10,000 remote
#    endpoints programmed, interleaved (target: no growth).
# About eight minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/deps.sh
tenet_deps
go test -run '^$' -bench 'BenchmarkThroughput|BenchmarkProgram10000Remotes|BenchmarkThousandth|BenchmarkEndpointWithRemotes' \
  -benchtime 1x -timeout 30m ./overlay/ |
  grep -v '^ *testbed.go'
