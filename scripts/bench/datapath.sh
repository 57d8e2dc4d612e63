#!/usr/bin/env bash
# Datapath benchmarks, as root, on simulated hosts of this machine:
#  - TCP throughput between two hosts' endpoints over Tenet's datapath, over a
#    hand-built kernel VXLAN and over the bare underlay, measured in one run,
#    with the ratios (target: Tenet >= 0.95x the hand-built VXLAN);
#  - the time one Reconcile takes to program 10,000 remote endpoints
#    (target: under 0.5 s).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/deps.sh
tenet_deps
go test -run '^$' -bench 'BenchmarkThroughput|BenchmarkProgram10000Remotes' -benchtime 1x ./overlay/ |
  grep -v '^ *testbed.go'
