package gossip

// The typed table API. Writes go to this host's own entries only and
// return once the change is stored: a sender goroutine does the network
// work (send.go), so a write never waits on another host. Reads see every
// alive host's entries (and, where asked, those of hosts currently down).
// When two hosts hold an entry with the same key, Get returns the one with
// the lowest version, then the lowest host name: the same answer on every
// host once they have converged.

import (
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Networks is the networks table.
type Networks struct{ n *Node }

// Endpoints is the endpoints table.
type Endpoints struct{ n *Node }

// Attachments is the table of which hosts have which networks.
type Attachments struct{ n *Node }

// Networks returns the networks table.
func (n *Node) Networks() Networks { return Networks{n} }

// Endpoints returns the endpoints table.
func (n *Node) Endpoints() Endpoints { return Endpoints{n} }

// Attachments returns the attachments table.
func (n *Node) Attachments() Attachments { return Attachments{n} }

// Put creates or replaces this host's network nw.
func (t Networks) Put(nw Network) error {
	if err := nw.validate(); err != nil {
		return fmt.Errorf("put network: %w", err)
	}
	if nw.VNI > 1<<24-1 {
		return fmt.Errorf("put network %q: VNI %d: must fit in 24 bits", nw.ID, nw.VNI)
	}
	t.n.put(tableNetworks, nw.ID, encodeNetwork(&nw))
	return nil
}

// Delete deletes this host's network id; no-op if it has none.
func (t Networks) Delete(id string) { t.n.del(tableNetworks, id) }

// Get returns network id.
func (t Networks) Get(id string) (Network, bool) {
	fs := t.n.store.get(tableNetworks, id, false)
	if len(fs) == 0 {
		return Network{}, false
	}
	nw, _ := decodeNetwork(fs[0].value)
	nw.Host = fs[0].owner
	return nw, true
}

// List returns every network, one per ID, sorted by ID.
func (t Networks) List() []Network {
	var out []Network
	for _, f := range firstPerKey(t.n.store.list(tableNetworks, "", false)) {
		nw, _ := decodeNetwork(f.value)
		nw.Host = f.owner
		out = append(out, nw)
	}
	return out
}

// Put creates or replaces endpoint ep on this host. Its VTEP is set to
// this host's. A host with an endpoint on a network has that network, so
// Put attaches the network first if needed: the host then takes part in
// the network's repair, which brings its endpoints to the other hosts.
// An endpoint put on another network than before leaves the old one.
func (t Endpoints) Put(ep Endpoint) error {
	ep.VTEP = t.n.cfg.VTEP
	ep.Host, ep.DownSince = "", time.Time{}
	if err := ep.validate(); err != nil {
		return fmt.Errorf("put endpoint: %w", err)
	}
	if !t.n.store.isAttached(ep.Network) {
		if err := t.n.Attachments().Attach(ep.Network); err != nil {
			return fmt.Errorf("put endpoint %q: %w", ep.ID, err)
		}
	}
	t.n.put(tableEndpoints, ep.ID, encodeEndpoint(&ep))
	return nil
}

// Delete deletes this host's endpoint id; no-op if it has none.
func (t Endpoints) Delete(id string) { t.n.del(tableEndpoints, id) }

// Get returns endpoint id.
func (t Endpoints) Get(id string) (Endpoint, bool) {
	fs := t.n.store.get(tableEndpoints, id, false)
	if len(fs) == 0 {
		return Endpoint{}, false
	}
	return decodeFound(fs[0]), true
}

// List returns the endpoints of network, or of every network if network is
// empty, one per ID, sorted by ID. A host keeps the endpoints of the
// networks it has (and its own) only.
func (t Endpoints) List(network string) []Endpoint {
	scope := network
	if scope == "" {
		scope = "*"
	}
	var out []Endpoint
	for _, f := range firstPerKey(t.n.store.list(tableEndpoints, scope, false)) {
		out = append(out, decodeFound(f))
	}
	return out
}

// ListNetwork returns every host's endpoints on network as this host holds
// them, sorted by ID, then version, then host. With withHidden it includes
// the endpoints of hosts gossip reports down (until they are reaped), each
// with DownSince set to when its host went down; without, only those of
// hosts up. Unlike List it keeps every host's entry of an ID.
func (t Endpoints) ListNetwork(network string, withHidden bool) []Endpoint {
	var out []Endpoint
	for _, f := range t.n.store.list(tableEndpoints, network, withHidden) {
		out = append(out, decodeFound(f))
	}
	return out
}

// ListRemote is ListNetwork without this host's own endpoints (what other
// hosts have on network) and in no particular order: it is read for every
// remote change the datapath programs, and sorting was over half of its
// cost. A host with many endpoints of its own pays nothing for them here.
func (t Endpoints) ListRemote(network string, withHidden bool) []Endpoint {
	fs := t.n.store.listOf(tableEndpoints, network, withHidden, true)
	out := make([]Endpoint, 0, len(fs))
	for _, f := range fs {
		out = append(out, decodeFound(f))
	}
	return out
}

// RemoteClaims returns other hosts' endpoints on network, those of hosts
// reported down included (with DownSince set), whose MAC is one of macs,
// and those whose IP is the IP of one of these, in no particular order:
// what decides whether these MACs' entries may be programmed, read without
// decoding the network's other endpoints.
func (t Endpoints) RemoteClaims(network string, macs []net.HardwareAddr) []Endpoint {
	ms := make([][]byte, len(macs))
	for i, m := range macs {
		ms[i] = m
	}
	fs := t.n.store.claimsOf(network, ms, true)
	out := make([]Endpoint, 0, len(fs))
	for _, f := range fs {
		out = append(out, decodeFound(f))
	}
	return out
}

func decodeFound(f found) Endpoint {
	ep, _ := decodeEndpoint(f.key, f.value) // stored values were validated
	ep.Host, ep.DownSince, ep.Version = f.owner, f.downSince, f.version
	return ep
}

// Attach records that this host has network: from now on it keeps the
// network's endpoints, they are sent here directly, and it fetches the
// current ones from a host that has the network (see Synced). No-op if
// already attached.
func (t Attachments) Attach(network string) error {
	if err := checkID("network", network); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	if t.n.put(tableAttachments, network, nil) {
		t.n.wantSync(network)
	}
	return nil
}

// Detach deletes this host's attachment to network and forgets the other
// hosts' endpoints on it (reported as hidden deletes). Synced(network) is
// false from then on until the network is attached and synced again.
func (t Attachments) Detach(network string) {
	t.n.del(tableAttachments, network)
	t.n.store.dropNetwork(network)
	t.n.resetSync(network)
}

// Hosts returns the alive hosts attached to network, this one included,
// sorted by name.
func (t Attachments) Hosts(network string) []string {
	var out []string
	for _, a := range t.n.store.attachedHosts(network, false) {
		out = append(out, a.Host)
	}
	return out
}

// ListNetwork returns the hosts attached to network, this one included,
// sorted by host. With withHidden it includes hosts gossip reports down
// (until they are reaped), with DownSince set.
func (t Attachments) ListNetwork(network string, withHidden bool) []Attachment {
	return t.n.store.attachedHosts(network, withHidden)
}

// put stores a write of this host's and queues it for the sender; it
// reports whether anything changed.
func (n *Node) put(t tableID, key string, value []byte) bool {
	scope, moved, ok := n.store.put(t, key, value)
	if moved != "" {
		n.out.add(pendKey{moved, t, key})
	}
	if ok {
		n.out.add(pendKey{scope, t, key})
	}
	return ok
}

func (n *Node) del(t tableID, key string) {
	if scope, ok := n.store.del(t, key); ok {
		n.out.add(pendKey{scope, t, key})
	}
}

// firstPerKey keeps the first entry of each run of equal keys in a list
// sorted by (key, version, owner).
func firstPerKey(fs []found) []found {
	out := fs[:0]
	for i := range fs {
		if i == 0 || fs[i].key != fs[i-1].key {
			out = append(out, fs[i])
		}
	}
	return out
}

// KVEntry is one host's entry in the generic key-value table.
type KVEntry struct {
	Key     string
	Host    string // the writer; only it changes or deletes the entry
	Value   []byte // shared: do not modify
	Version uint64 // Lamport version of the write
}

// KV is a generic owner-writes-only table for other packages' replicated
// state (ipam keeps its block ownership here). Several hosts may hold an
// entry under one key; they are distinct entries.
type KV struct{ n *Node }

// KV returns the generic key-value table.
func (n *Node) KV() KV { return KV{n} }

// Put writes this host's entry under key.
func (t KV) Put(key string, value []byte) error {
	if err := checkID("key", key); err != nil {
		return fmt.Errorf("put kv: %w", err)
	}
	if len(value) > maxKVValueLen {
		return fmt.Errorf("put kv %q: value of %d bytes: must be at most %d", key, len(value), maxKVValueLen)
	}
	t.n.put(tableKV, key, append([]byte(nil), value...))
	return nil
}

// Delete deletes this host's entry under key; no-op if it has none.
func (t KV) Delete(key string) { t.n.del(tableKV, key) }

// List returns every host's entries whose key starts with prefix,
// including those of hosts currently down (hidden from other tables'
// readers), sorted by key, then host.
func (t KV) List(prefix string) []KVEntry {
	var out []KVEntry
	for _, e := range t.n.store.withPrefix(prefix) {
		out = append(out, KVEntry{Key: e.key, Host: e.owner, Value: e.value, Version: e.version})
	}
	return out
}

// HostState is a host this node has heard of.
type HostState struct {
	Name      string
	Alive     bool
	DownSince time.Time  // when gossip reported it down; zero while alive
	VTEP      netip.Addr // from its membership; zero if never seen up
}

// Hosts returns every host this node has heard of since it started, up or
// down (a host down past ReapDeadAfter, its entries reaped, is still
// listed), itself included, sorted by name.
func (n *Node) Hosts() []HostState { return n.store.hosts() }
