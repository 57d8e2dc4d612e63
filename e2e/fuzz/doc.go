// Package fuzz is the operation fuzzer: it draws random, reproducible days
// of cluster administration and runs them against the real multi-host
// testbed (3-5 hosts, real Docker engines, real tenetd), checking the
// cluster against a model after every step, in the spirit of Jepsen and of
// model-based testing. scripts/fuzz.sh runs it; README.md in this directory
// says how, what it found, and how to read a failure.
//
// # What it owns, what it never does
//
// It owns the generator (gen.go: weighted ops drawn from a seed and from
// what it intended so far, never from what the cluster answered, so a seed
// replays the same ops), the model (model.go: tenants, networks, containers,
// hosts; before each command it predicts "must succeed", "must be refused"
// or "either", and it folds each outcome in), the checks (check.go), and the
// runner (run.go, cluster.go). It drives the cluster only through what a
// user has: the docker CLI of each engine, tenetctl and its --json fields
// (tenant ls, network ls, endpoint ls, host ls; network inspect's
// docker_name when there is one), pings from containers' network
// namespaces, and the testbed's fault primitives (e2e.Testbed.Cut, Heal,
// KillHost, RestartTenetd, RestartEngine). It never reads tenetd's state
// files or gossip, never changes product code, and never runs outside the
// testbed's namespaces.
//
// # Checks
//
// After each step, polling until a deadline: containers and their addresses
// match the model at once (and addresses are unique per tenant); each
// engine's tenet networks, and each host's tenetctl listings (what that host
// can see), within 15 s (20 s after a cut, kill or crash, 45 s after a heal);
// every pair of running containers that share a network and whose hosts can
// reach each other answers pings both ways within 2 s of the step's end (45 s
// after a heal), for every pair involving what the step touched and a sample
// of the others; sampled addresses a container must never reach (other
// networks and tenants, across a cut, released addresses) never answer. At
// the end: the whole reachability matrix once; the workload removed as an
// admin would; each host back to the kernel objects (links, tenant
// namespaces, nftables tables) it had when tenetd started (within 20 s and
// core.Config.AbandonedKeep: a network creation given up on is kept that
// long for a retry); tenetd and
// dockerd PIDs unchanged unless a step restarted them; no panic in any log
// and no ERROR line in tenetd's but those errorAllowed explains; nothing of
// the testbed left after teardown.
//
// # Concurrency
//
// A run is sequential, one step at a time; within a step, commands that
// happen "at once" (run-many, burst, rm-many) run concurrently, and
// observations of all hosts run concurrently. Gen and Model are not safe
// for concurrent use. Runs on one machine may go on at the same time (each
// has its own testbed).
package fuzz
