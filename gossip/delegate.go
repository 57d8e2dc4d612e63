package gossip

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate receives memberlist's data callbacks. They run on memberlist's
// goroutines, sometimes with its locks held, so they never call back into
// memberlist; they decode (copying what they keep) and merge into the
// store, which only takes the store's lock.
type delegate Node

func (d *delegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}

func (d *delegate) NotifyMsg(b []byte) { (*Node)(d).handle(b) }

// GetBroadcasts returns nothing: changes are sent directly to the hosts
// that need them (see publish), which is faster and more reliable than
// piggybacking on memberlist's gossip.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

func (d *delegate) LocalState(join bool) []byte {
	n := (*Node)(d)
	return encodeMessage(nil, &message{typ: msgState, sender: n.cfg.NodeName, entries: n.store.globalState()})
}

func (d *delegate) MergeRemoteState(b []byte, join bool) { (*Node)(d).handle(b) }

// events receives memberlist's membership callbacks (called with
// memberlist's node lock held; they only touch our own state).
type events Node

func (e *events) NotifyJoin(m *memberlist.Node) {
	n := (*Node)(e)
	n.mu.Lock()
	delete(n.failed, m.Name)
	n.members[m.Name] = copyNode(m)
	n.mu.Unlock()
	n.store.setAlive(m.Name, true)
	n.unpark(m.Name)
	if m.Name != n.cfg.NodeName {
		n.log.Info("host up", "peer", m.Name, "addr", m.Address())
	}
}

func (e *events) NotifyLeave(m *memberlist.Node) {
	n := (*Node)(e)
	n.mu.Lock()
	delete(n.members, m.Name)
	delete(n.parked, m.Name)
	if m.State == memberlist.StateDead {
		n.failed[m.Name] = failed{addr: m.Address(), since: time.Now()}
	}
	n.mu.Unlock()
	n.store.setAlive(m.Name, false)
	n.log.Info("host down; its entries are hidden", "peer", m.Name, "addr", m.Address())
}

func (e *events) NotifyUpdate(m *memberlist.Node) {
	n := (*Node)(e)
	n.mu.Lock()
	n.members[m.Name] = copyNode(m)
	n.mu.Unlock()
	n.log.Info("host updated", "peer", m.Name, "addr", m.Address(), "vtep", decodeMeta(m.Meta))
}

// copyNode copies what we keep of a memberlist node; callbacks run with
// memberlist's lock held, so this is the one safe moment to read it.
func copyNode(m *memberlist.Node) *memberlist.Node {
	c := *m
	c.Addr = append([]byte(nil), m.Addr...)
	c.Meta = append([]byte(nil), m.Meta...)
	return &c
}
