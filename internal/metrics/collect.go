package metrics

import (
	"maps"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// state reads the core, gossip and IPAM when scraped.
type state struct {
	host string
	src  Sources
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descNetworks  = desc("tenet_networks", "Networks on this host, by tenant.", "tenant")
	descEndpoints = desc("tenet_endpoints", "Endpoints of this host's networks, by tenant and location (local: on this host; remote: other hosts', as gossip knows them).", "tenant", "location")
	descQueue     = desc("tenet_writer_queue", "Changes waiting for the core's datapath writer.")
	descBusy      = desc("tenet_writer_busy_seconds", "How long the writer's pass under way has run (0: idle).")
	descFailing   = desc("tenet_writer_failing", "1 if the last datapath pass failed or a retry is due, else 0.")

	descMembers  = desc("tenet_gossip_members", "Hosts gossip knows, by state.", "state")
	descSent     = desc("tenet_gossip_messages_sent_total", "Direct messages memberlist accepted for sending.")
	descReceived = desc("tenet_gossip_messages_received_total", "Messages received and decoded: updates, push/pull states, syncs.")
	descSendErr  = desc("tenet_gossip_send_errors_total", "Direct sends that failed.")
	descDropped  = desc("tenet_gossip_dropped_total", "Messages and entries refused, by reason.", "reason")
	descEntries  = desc("tenet_gossip_entries_total", "Entries received from other hosts, by result (applied, stale, unscoped).", "result")
	descQueues   = desc("tenet_gossip_queue_depth", "Items waiting in gossip's queues, by queue.", "queue")

	descBlocks    = desc("tenet_ipam_blocks_owned", "Address blocks this host owns all or part of, by pool.", "pool", "tenant")
	descAddrOwned = desc("tenet_ipam_addresses_owned", "Addresses of the pool this host owns.", "pool", "tenant")
	descAddrUsed  = desc("tenet_ipam_addresses_used", "Addresses allocated to containers on this host.", "pool", "tenant")
	descAddrFree  = desc("tenet_ipam_addresses_free", "Owned addresses neither allocated nor reserved.", "pool", "tenant")
	descHandover  = desc("tenet_ipam_handovers_total", "Parts of blocks handed over since start, by direction (received, given).", "pool", "tenant", "direction")
)

// Describe sends nothing: the collector is unchecked, because which
// series exist depends on the state.
func (s *state) Describe(chan<- *prometheus.Desc) {}

func (s *state) Collect(ch chan<- prometheus.Metric) {
	cfg := s.src
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	if cfg.Local != nil {
		nets := map[string]int{}
		local, remote := map[string]int{}, map[string]int{}
		for _, n := range cfg.Local.Networks() {
			nets[n.Tenant]++
			local[n.Tenant] += 0
			remote[n.Tenant] += 0
			if cfg.Cluster != nil {
				for _, r := range cfg.Cluster.Remotes(n.Key()) {
					if r.Host != s.host {
						remote[n.Tenant]++
					}
				}
			}
		}
		for _, e := range cfg.Local.Endpoints() {
			t, _, _ := strings.Cut(e.Network, "/")
			local[t]++
		}
		for _, t := range slices.Sorted(maps.Keys(local)) {
			gauge(descNetworks, float64(nets[t]), t)
			gauge(descEndpoints, float64(local[t]), t, "local")
			gauge(descEndpoints, float64(remote[t]), t, "remote")
		}
		w := cfg.Local.Writer()
		gauge(descQueue, float64(w.Queued))
		gauge(descBusy, w.Busy.Seconds())
		failing := 0.0
		if w.LastErr != nil || !w.RetryAt.IsZero() {
			failing = 1
		}
		gauge(descFailing, failing)
	}
	if cfg.Gossip != nil {
		g := cfg.Gossip()
		for st, n := range g.Members {
			gauge(descMembers, float64(n), st)
		}
		counter(descSent, g.Sent)
		counter(descReceived, g.Received)
		counter(descSendErr, g.SendErrors)
		for r, n := range g.Dropped {
			counter(descDropped, n, r)
		}
		counter(descEntries, g.Applied, "applied")
		counter(descEntries, g.Stale, "stale")
		counter(descEntries, g.Unscoped, "unscoped")
		for q, n := range g.Queues {
			gauge(descQueues, float64(n), q)
		}
	}
	if cfg.IPAM != nil {
		for _, p := range cfg.IPAM() {
			tenant, _, _ := strings.Cut(p.ID, "/")
			gauge(descBlocks, float64(p.Blocks), p.ID, tenant)
			gauge(descAddrOwned, float64(p.Owned), p.ID, tenant)
			gauge(descAddrUsed, float64(p.Used), p.ID, tenant)
			gauge(descAddrFree, float64(p.Free), p.ID, tenant)
			counter(descHandover, p.Received, p.ID, tenant, "received")
			counter(descHandover, p.Given, p.ID, tenant, "given")
		}
	}
}
