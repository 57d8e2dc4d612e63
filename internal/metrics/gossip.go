package metrics

import "github.com/tenet-net/tenet/gossip"

// GossipStats is what the metrics show of the gossip ring.
type GossipStats struct {
	// Members counts the hosts gossip knows by state ("alive", "down";
	// finer states such as "suspect" once gossip reports them).
	Members                    map[string]int
	Sent, Received, SendErrors uint64
	Dropped                    map[string]uint64 // by reason
	Applied, Stale, Unscoped   uint64            // entries received
	Queues                     map[string]int    // depth by queue; empty until gossip reports them
}

// FromGossip reads a node's statistics. The hook for what gossip.Stats
// gains (members by state, messages by kind, queue depths): map each new
// field here, once, and the metric appears.
func FromGossip(n *gossip.Node) GossipStats {
	st := n.Stats()
	g := GossipStats{Members: map[string]int{"alive": 0, "down": 0}, Sent: st.MessagesSent, Received: st.MessagesReceived,
		SendErrors: st.SendErrors, Dropped: st.Dropped, Applied: st.EntriesApplied, Stale: st.EntriesStale,
		Unscoped: st.EntriesUnscoped}
	for _, h := range n.Hosts() {
		if h.Alive {
			g.Members["alive"]++
		} else {
			g.Members["down"]++
		}
	}
	return g
}
