// Package metrics is tenetd's window for operators: Prometheus metrics
// (/metrics), and liveness and readiness (/healthz, /readyz) for a systemd
// watchdog or a load balancer, on one HTTP listener.
//
// What it owns: its own Prometheus registry (never the process-wide
// default one), the instruments that front ends and the core feed (plugin
// call latency, writer passes, convergence, through core.Observer), and a
// one-minute window of convergence samples for tenetctl status. Everything
// else it reads when scraped, from its owners: the core's networks,
// endpoints and writer, gossip's counters, IPAM's pool statistics. It keeps
// no copy of anyone's state and changes nothing.
//
// memberlist's own metrics reach it through hashicorp/go-metrics, whose
// sink is a process-wide global: the one exception to "no package-level
// state" in Tenet, forced by that library. The global is set once, to a
// router that hands each metric to the Metrics attached under the metric's
// "node" label (gossip labels memberlist's metrics with its node name), so
// two nodes in one process (tests) never see each other's metrics, and a
// detached Metrics receives nothing more.
//
// Concurrency: a Metrics is safe for concurrent use; observations take a
// short lock or are atomic, and scrapes read their sources without holding
// one.
package metrics
