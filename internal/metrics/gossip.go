package metrics

import "github.com/tenet-net/tenet/gossip"

// GossipStats is what the metrics show of the gossip ring.
type GossipStats struct {
	// Members counts the hosts gossip knows by state: "alive", "failed"
	// (declared dead by the failure detector), "left" (left the ring
	// gracefully; see gossip.Stats.MembersLeft).
	Members                    map[string]int
	Sent, Received, SendErrors uint64
	Dropped                    map[string]uint64 // by reason
	Applied, Stale, Unscoped   uint64            // entries received
	Queues                     map[string]int    // depth by queue: send, stream, streams_out
}

// FromGossip reads a node's statistics: members by state (alive, failed
// by the failure detector, left), messages, drops by reason, entries
// received and the depths of its send queues.
func FromGossip(n *gossip.Node) GossipStats {
	st := n.Stats()
	return GossipStats{
		Members: map[string]int{"alive": st.MembersAlive, "failed": st.MembersFailed, "left": st.MembersLeft},
		Sent:    st.MessagesSent, Received: st.MessagesReceived, SendErrors: st.SendErrors, Dropped: st.Dropped,
		Applied: st.EntriesApplied, Stale: st.EntriesStale, Unscoped: st.EntriesUnscoped,
		Queues: map[string]int{"send": st.SendQueue, "stream": st.StreamQueue, "streams_out": st.StreamsOut},
	}
}
