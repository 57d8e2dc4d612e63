package gossip

// The typed table API. Writes go to this host's own entries only; reads
// see every alive host's entries. When two hosts hold an entry with the
// same key (two claims of one address block, say), Get returns the claim
// with the lowest version, then the lowest host name: the same answer on
// every host once they have converged.

import (
	"fmt"
	"net/netip"
	"sort"
)

// Networks is the networks table.
type Networks struct{ n *Node }

// Endpoints is the endpoints table.
type Endpoints struct{ n *Node }

// Blocks is the IPAM block ownership table.
type Blocks struct{ n *Node }

// Attachments is the table of which hosts have which networks.
type Attachments struct{ n *Node }

// Networks returns the networks table.
func (n *Node) Networks() Networks { return Networks{n} }

// Endpoints returns the endpoints table.
func (n *Node) Endpoints() Endpoints { return Endpoints{n} }

// Blocks returns the IPAM block ownership table.
func (n *Node) Blocks() Blocks { return Blocks{n} }

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
	t.n.put(tableNetworks, nw.ID, encodeNetwork(&nw), "")
	return nil
}

// Delete deletes this host's network id; no-op if it has none.
func (t Networks) Delete(id string) { t.n.del(tableNetworks, id) }

// Get returns network id.
func (t Networks) Get(id string) (Network, bool) {
	es := t.n.store.visible(tableNetworks, id, true)
	if len(es) == 0 {
		return Network{}, false
	}
	nw, _ := decodeNetwork(es[0].value)
	nw.Host = es[0].owner
	return nw, true
}

// List returns every network, one per ID, sorted by ID.
func (t Networks) List() []Network {
	var out []Network
	for _, e := range firstPerKey(t.n.store.visible(tableNetworks, "", false)) {
		nw, _ := decodeNetwork(e.value)
		nw.Host = e.owner
		out = append(out, nw)
	}
	return out
}

// Put creates or replaces endpoint ep on this host. Its VTEP is set to
// this host's. A host with an endpoint on a network has that network, so
// Put attaches the network first if needed: the host then takes part in
// the network's sync, which repairs its endpoints on the other hosts.
func (t Endpoints) Put(ep Endpoint) error {
	ep.VTEP = t.n.cfg.VTEP
	if err := ep.validate(); err != nil {
		return fmt.Errorf("put endpoint: %w", err)
	}
	if !t.n.store.isAttached(ep.Network) {
		if err := t.n.Attachments().Attach(ep.Network); err != nil {
			return fmt.Errorf("put endpoint %q: %w", ep.ID, err)
		}
	}
	t.n.put(tableEndpoints, ep.ID, encodeEndpoint(&ep), ep.Network)
	return nil
}

// Delete deletes this host's endpoint id; no-op if it has none.
func (t Endpoints) Delete(id string) { t.n.del(tableEndpoints, id) }

// Get returns endpoint id.
func (t Endpoints) Get(id string) (Endpoint, bool) {
	es := t.n.store.visible(tableEndpoints, id, true)
	if len(es) == 0 {
		return Endpoint{}, false
	}
	ep, _ := decodeEndpoint(es[0].key, es[0].value)
	ep.Host = es[0].owner
	return ep, true
}

// List returns the endpoints of network, or of every network if network is
// empty, one per ID, sorted by ID.
func (t Endpoints) List(network string) []Endpoint {
	var out []Endpoint
	for _, e := range firstPerKey(t.n.store.visible(tableEndpoints, "", false)) {
		if network != "" && endpointNetwork(e.value) != network {
			continue
		}
		ep, _ := decodeEndpoint(e.key, e.value)
		ep.Host = e.owner
		out = append(out, ep)
	}
	return out
}

// Claim records that this host owns block b. Check Get afterwards (once
// the claim has had time to spread) to learn whether another host claimed
// it first.
func (t Blocks) Claim(b Block) error {
	if err := b.validate(); err != nil {
		return fmt.Errorf("claim block: %w", err)
	}
	t.n.put(tableBlocks, b.Prefix.String(), encodeBlock(&b), "")
	return nil
}

// Release deletes this host's claim on prefix; no-op if it has none.
func (t Blocks) Release(prefix netip.Prefix) { t.n.del(tableBlocks, prefix.String()) }

// Get returns the winning claim on prefix: the earliest.
func (t Blocks) Get(prefix netip.Prefix) (Block, bool) {
	es := t.n.store.visible(tableBlocks, prefix.String(), true)
	if len(es) == 0 {
		return Block{}, false
	}
	b, _ := decodeBlock(es[0].value)
	b.Host = es[0].owner
	return b, true
}

// List returns every claim, the losing ones too, sorted by prefix, then
// by precedence.
func (t Blocks) List() []Block {
	var out []Block
	for _, e := range t.n.store.visible(tableBlocks, "", false) {
		b, _ := decodeBlock(e.value)
		b.Host = e.owner
		out = append(out, b)
	}
	return out
}

// Attach records that this host has network: from now on it keeps the
// network's endpoints, they are sent here directly, and it fetches the
// current ones from a peer that has the network.
func (t Attachments) Attach(network string) error {
	if err := checkID("network", network); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	t.n.put(tableAttachments, network, nil, "")
	t.n.wantSync(network)
	return nil
}

// Detach deletes this host's attachment to network and forgets the other
// hosts' endpoints on it (reported as hidden deletes).
func (t Attachments) Detach(network string) {
	t.n.del(tableAttachments, network)
	t.n.synced(network)
	t.n.store.dropNetwork(network)
}

// Hosts returns the alive hosts attached to network, this one included.
func (t Attachments) Hosts(network string) []string {
	var out []string
	for _, e := range t.n.store.visible(tableAttachments, network, true) {
		out = append(out, e.owner)
	}
	return out
}

func (n *Node) put(t tableID, key string, value []byte, network string) {
	if e, ok := n.store.put(t, key, value); ok {
		n.publish(e, network)
	}
}

func (n *Node) del(t tableID, key string) {
	if e, _, ok := n.store.del(t, key); ok {
		network := ""
		if t == tableEndpoints {
			network = endpointNetwork(e.value)
		}
		n.publish(e, network)
	}
}

// firstPerKey keeps the first entry of each run of equal keys in a list
// sorted by (key, version, owner).
func firstPerKey(es []entry) []entry {
	out := es[:0]
	for i := range es {
		if i == 0 || es[i].key != es[i-1].key {
			out = append(out, es[i])
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
	if len(value) > maxValueLen {
		return fmt.Errorf("put kv %q: value of %d bytes: must be at most %d", key, len(value), maxValueLen)
	}
	t.n.put(tableKV, key, append([]byte(nil), value...), "")
	return nil
}

// Delete deletes this host's entry under key; no-op if it has none.
func (t KV) Delete(key string) { t.n.del(tableKV, key) }

// List returns every host's entries whose key starts with prefix,
// including those of hosts currently down (hidden from other tables'
// readers), sorted by key, then host.
func (t KV) List(prefix string) []KVEntry {
	var out []KVEntry
	for _, e := range t.n.store.withPrefix(tableKV, prefix) {
		out = append(out, KVEntry{Key: e.key, Host: e.owner, Value: e.value, Version: e.version})
	}
	return out
}

// HostState is a host the store has heard of.
type HostState struct {
	Name  string
	Alive bool
}

// Hosts returns every host this node has heard of, alive or not, itself
// included, sorted by name.
func (n *Node) Hosts() []HostState {
	var out []HostState
	for name, alive := range n.store.hosts() {
		out = append(out, HostState{Name: name, Alive: alive})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
