package gossip

import (
	"net/netip"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate receives memberlist's data callbacks. They run on memberlist's
// goroutines, sometimes with its locks held, so they never call back into
// memberlist; they decode (copying what they keep) and merge into the
// store, which only takes the store's lock, and queue any answer for the
// sender.
type delegate Node

func (d *delegate) NodeMeta(limit int) []byte {
	m := d.meta
	if d.leaving.Load() {
		m = append(slices.Clip(m), metaLeaving)
	}
	if len(m) > limit {
		return nil
	}
	return m
}

// NotifyMsg handles a message that came through memberlist rather than our
// own frames: nothing of ours is sent that way, but a key holder may, and
// it gets the same checks.
func (d *delegate) NotifyMsg(b []byte) { (*Node)(d).handle(b, netip.AddrPort{}) }

// GetBroadcasts returns nothing: changes are sent directly to the hosts
// that need them (see send.go), which is faster and more reliable than
// piggybacking on memberlist's gossip.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState is the global tables at a join (either side's), so a new host
// has them in the join's own round trip; the periodic push/pull carries
// none (anti-entropy repairs them by digest, see sync.go).
func (d *delegate) LocalState(join bool) []byte {
	if !join {
		return nil
	}
	n := (*Node)(d)
	entries, _ := n.store.scopeEntries([]string{""}, false)
	return encodeMessage(nil, &message{typ: msgState, sender: n.cfg.NodeName, scopes: []string{""}, entries: entries})
}

func (d *delegate) MergeRemoteState(b []byte, join bool) {
	if len(b) > 0 {
		(*Node)(d).handle(b, netip.AddrPort{})
	}
}

// events receives memberlist's membership callbacks (called with
// memberlist's node lock held; they only touch our own state).
type events Node

func (e *events) NotifyJoin(m *memberlist.Node) {
	n := (*Node)(e)
	n.member(m, true, false)
	n.mu.Lock()
	delete(n.failed, m.Name)
	n.mu.Unlock()
	if m.Name != n.cfg.NodeName {
		n.log.Info("host up", "peer", m.Name, "addr", m.Address())
	}
}

func (e *events) NotifyLeave(m *memberlist.Node) {
	n := (*Node)(e)
	// memberlist (v0.7) passes the Node embedded in its node state, whose
	// own State field shadows Node.State: it is never set, and reads
	// StateAlive for a failure and a leave alike. Testing it for
	// StateDead left every failed peer out of the rejoins, so a partition
	// healed only if one side counted a seed down (a seed the other side
	// was cut off from): otherwise not until some other traffic crossed,
	// seconds to minutes later (TestPartitionWithoutSeedsHeals). A leave
	// is told by the flag a leaving host puts in its meta first (stop);
	// every other host down is a failure, and a rejoin target (within
	// rejoinFailed's bounds).
	left := metaLeft(m.Meta)
	n.member(m, false, left)
	if !left {
		n.mu.Lock()
		n.failed[m.Name] = failed{addr: m.Address(), since: time.Now()}
		n.mu.Unlock()
	}
	n.log.Info("host down; its entries are hidden", "peer", m.Name, "addr", m.Address())
}

func (e *events) NotifyUpdate(m *memberlist.Node) {
	n := (*Node)(e)
	vtep, _ := n.member(m, true, false)
	if metaLeft(m.Meta) {
		n.log.Info("host leaving", "peer", m.Name, "addr", m.Address())
		return
	}
	n.log.Info("host updated", "peer", m.Name, "addr", m.Address(), "vtep", vtep)
}

// member records a memberlist node's state in the store; callbacks run
// with memberlist's lock held, so this is the one safe moment to read it.
func (n *Node) member(m *memberlist.Node, alive, left bool) (netip.Addr, uint8) {
	vtep, wire := decodeMeta(m.Meta)
	var addr netip.AddrPort
	if a, ok := netip.AddrFromSlice(m.Addr); ok && alive {
		addr = netip.AddrPortFrom(a.Unmap(), m.Port)
	}
	back, first := n.store.setMemberFirst(m.Name, addr, vtep, wire, alive, left)
	if m.Name == n.cfg.NodeName {
		return vtep, wire
	}
	if alive && wire != wireVersion {
		n.mu.Lock()
		warn := !n.warned[m.Name]
		n.warned[m.Name] = true
		n.mu.Unlock()
		if warn {
			n.log.Warn("host speaks another gossip wire version; no tables are exchanged with it until both run the same version",
				"peer", m.Name, "its_version", wire, "ours", wireVersion)
		}
	}
	// A host seen for the first time gets one heal exchange, without the
	// repeats of healAgain: in a ring that hundreds of hosts join at once
	// every host meets every other, and four packets and three timers a
	// pair (a million packets at 500 hosts) kept the CPU saturated while
	// the ring formed (issue 12). The repeats are for healed partitions,
	// whose first exchange is the one most likely lost.
	switch {
	case back && first:
		select {
		case n.firstCh <- m.Name:
		default:
		}
	case back:
		select {
		case n.healCh <- m.Name:
		default:
		}
	}
	if alive {
		n.kickNow() // a host to sync with, if a scope still waits
	}
	return vtep, wire
}

// metaVersion is the version of the node metadata: the VTEP, then the wire
// version the host speaks (absent before wire version 2; version 1
// decoders ignore it), then, only while the host leaves the ring, a flags
// byte with metaLeaving (decoders before it ignore it too).
const metaVersion = 1

// metaLeaving flags a host leaving the ring gracefully.
const metaLeaving = 1

// nodeMeta is the metadata a host advertises.
func nodeMeta(vtep netip.Addr) []byte {
	return append(appendAddr([]byte{metaVersion}, vtep), wireVersion)
}

// metaLeft says whether meta b carries the leaving flag.
func metaLeft(b []byte) bool {
	r := reader{b: b}
	if r.byte() != metaVersion {
		return false
	}
	r.addr()
	r.byte() // the wire version
	return r.err == nil && len(r.b) > 0 && r.b[0]&metaLeaving != 0
}

func decodeMeta(b []byte) (vtep netip.Addr, wire uint8) {
	r := reader{b: b}
	if r.byte() != metaVersion {
		return netip.Addr{}, 0
	}
	vtep = r.addr()
	if r.err != nil {
		return netip.Addr{}, 0
	}
	wire = 1
	if len(r.b) > 0 {
		wire = r.byte()
	}
	return vtep, wire
}
