package driver

import (
	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/ipam"
)

// GossipReplica adapts a gossip node's generic key-value table to
// ipam.Replica.
type GossipReplica struct{ Node *gossip.Node }

var _ ipam.Replica = GossipReplica{}

func (g GossipReplica) Put(key string, value []byte) error { return g.Node.KV().Put(key, value) }

func (g GossipReplica) Delete(key string) error {
	g.Node.KV().Delete(key)
	return nil
}

func (g GossipReplica) List(prefix string) []ipam.Entry {
	var out []ipam.Entry
	for _, e := range g.Node.KV().List(prefix) {
		out = append(out, ipam.Entry{Key: e.Key, Host: e.Host, Value: e.Value, Version: e.Version})
	}
	return out
}

// Subscribe forwards the key-value table's changes, dropping notices when
// buf is full (ipam rescans periodically, so that is allowed).
func (g GossipReplica) Subscribe(buf int) (<-chan ipam.Event, func()) {
	in, cancel := g.Node.Subscribe(buf)
	out := make(chan ipam.Event, buf)
	go func() {
		defer close(out)
		for ev := range in {
			if ev.Table != gossip.TableKV {
				continue
			}
			select {
			case out <- ipam.Event{Key: ev.Key, Host: ev.Host, Deleted: ev.Kind == gossip.EventDelete && !ev.Hidden}:
			default:
			}
		}
	}()
	return out, cancel
}

func (g GossipReplica) Members() []ipam.Member {
	var out []ipam.Member
	for _, h := range g.Node.Hosts() {
		out = append(out, ipam.Member{Name: h.Name, Alive: h.Alive})
	}
	return out
}
