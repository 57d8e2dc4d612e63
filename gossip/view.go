package gossip

// Reads of the store: for the API (the host core and the driver read the
// remote view at planning time), for the sender (who keeps a scope), and
// for Stats.

import (
	"bytes"
	"cmp"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"
)

// peer is a host to send to.
type peer struct {
	name string
	addr netip.AddrPort
}

// audience returns the alive hosts other than this one that speak our wire
// version and keep scope: every such host for "", the hosts attached to
// the network otherwise.
func (s *store) audience(scopeName string) []peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []peer
	add := func(o *owner) {
		if o != s.self && o.alive && o.wire == wireVersion && o.addr.IsValid() {
			out = append(out, peer{o.name, o.addr})
		}
	}
	if scopeName == "" {
		for _, o := range s.owners {
			add(o)
		}
		return out
	}
	for o := range s.attached[scopeName] {
		add(o)
	}
	return out
}

// peerAddr returns the address of an alive host that speaks our wire
// version.
func (s *store) peerAddr(name string) (netip.AddrPort, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.owners[name]
	if o == nil || o == s.self || !o.alive || o.wire != wireVersion || !o.addr.IsValid() {
		return netip.AddrPort{}, false
	}
	return o.addr, true
}

// get returns the live entries of table t under key, of every owner alive
// (or of every owner, if hidden), sorted by (version, owner).
func (s *store) get(t tableID, key string, hidden bool) []found {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []found
	look := func(sc *scope) {
		for o := range sc.owners {
			if !o.alive && !hidden {
				continue
			}
			if r := sc.entries[ekey{o, t, key}]; r != nil && !r.deleted {
				out = append(out, found{entry{table: t, owner: o.name, key: key, version: r.version, value: r.value}, s.since(o.downAt)})
			}
		}
	}
	if t != tableEndpoints {
		look(s.scopes[""])
	} else {
		for name, sc := range s.scopes {
			if name != "" {
				look(sc)
			}
		}
	}
	sortFound(out)
	return out
}

// found is an entry read for the API, with when its owner went down.
type found struct {
	entry
	downSince time.Time // zero if the owner is up
}

// list returns the live entries of table t in scope (every endpoint scope
// if scopeName is "*"), of alive owners (every owner if hidden), sorted by
// (key, version, owner).
func (s *store) list(t tableID, scopeName string, hidden bool) []found {
	out := s.listOf(t, scopeName, hidden, false)
	sortFound(out)
	return out
}

// claimsOf returns the live endpoint entries of other hosts in network
// (those of owners down too, if hidden) whose MAC is one of macs, and the
// entries whose IP is the IP of one of those, in no particular order. It
// reads each entry's MAC and IP in place (claimOf) and copies only the
// entries it returns: a remote change's pass asks it instead of listing
// the whole network.
func (s *store) claimsOf(network string, macs [][]byte, hidden bool) []found {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.scopes[network]
	if sc == nil {
		return nil
	}
	var out []found
	took := map[ekey]bool{}
	ips := map[netip.Addr]bool{}
	live := func(k ekey, r *record) bool {
		return k.owner != s.self && k.table == tableEndpoints && !r.deleted && (k.owner.alive || hidden)
	}
	take := func(k ekey, r *record) {
		took[k] = true
		out = append(out, found{entry{table: tableEndpoints, owner: k.owner.name, key: k.key, version: r.version, value: r.value}, s.since(k.owner.downAt)})
	}
	for k, r := range sc.entries {
		if !live(k, r) {
			continue
		}
		mac, ip, ok := claimOf(r.value)
		if !ok {
			continue
		}
		for _, m := range macs {
			if bytes.Equal(mac, m) {
				take(k, r)
				if ip.IsValid() {
					ips[ip] = true
				}
				break
			}
		}
	}
	if len(ips) == 0 {
		return out
	}
	for k, r := range sc.entries {
		if took[k] || !live(k, r) {
			continue
		}
		if _, ip, ok := claimOf(r.value); ok && ips[ip] {
			take(k, r)
		}
	}
	return out
}

// listOf is list in no particular order (sorting 64-character keys was
// over half of its cost, and the datapath's planner sorts its own way),
// without this host's own entries if others is set (they are skipped
// before anything is copied).
func (s *store) listOf(t tableID, scopeName string, hidden, others bool) []found {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []found
	if sc := s.scopes[scopeName]; sc != nil {
		out = make([]found, 0, len(sc.entries))
	}
	add := func(sc *scope) {
		for k, r := range sc.entries {
			if others && k.owner == s.self {
				continue
			}
			if k.table == t && !r.deleted && (k.owner.alive || hidden) {
				out = append(out, found{entry{table: t, owner: k.owner.name, key: k.key, version: r.version, value: r.value}, s.since(k.owner.downAt)})
			}
		}
	}
	if scopeName == "*" {
		for name, sc := range s.scopes {
			if name != "" {
				add(sc)
			}
		}
	} else if sc := s.scopes[scopeName]; sc != nil {
		add(sc)
	}
	return out
}

func sortFound(out []found) {
	slices.SortFunc(out, func(a, b found) int {
		return cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.version, b.version), cmp.Compare(a.owner, b.owner))
	})
}

// withPrefix returns the live kv entries whose key starts with prefix, of
// every owner, up or down (reaped ones are gone), sorted by (key, owner).
func (s *store) withPrefix(prefix string) []entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []entry
	for k, r := range s.scopes[""].entries {
		if k.table == tableKV && !r.deleted && strings.HasPrefix(k.key, prefix) {
			out = append(out, entry{table: tableKV, owner: k.owner.name, key: k.key, version: r.version, value: r.value})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].key != out[j].key {
			return out[i].key < out[j].key
		}
		return out[i].owner < out[j].owner
	})
	return out
}

// attachedHosts returns the hosts attached to network (alive ones only,
// unless hidden), this one included, sorted by name.
func (s *store) attachedHosts(network string, hidden bool) []Attachment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Attachment
	for o := range s.attached[network] {
		if o.alive || hidden {
			out = append(out, Attachment{Network: network, Host: o.name, DownSince: s.since(o.downAt)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}

// hosts returns every host the store knows.
func (s *store) hosts() []HostState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]HostState, 0, len(s.owners))
	for _, o := range s.owners {
		out = append(out, HostState{Name: o.name, Alive: o.alive, DownSince: s.since(o.downAt), VTEP: o.vtep})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// members returns the alive hosts with a known address, this one included.
func (s *store) members() []Member {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Member
	for _, o := range s.owners {
		if o.alive && o.addr.IsValid() {
			out = append(out, Member{Name: o.name, Addr: o.addr, VTEP: o.vtep})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// memberCounts returns how many known hosts are up, failed and left.
func (s *store) memberCounts() (alive, failed, left int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.owners {
		switch {
		case o.alive:
			alive++
		case o.left:
			left++
		default:
			failed++
		}
	}
	return alive, failed, left
}

// tableStats returns per-table counts: live entries, those hidden (their
// host is down), and tombstones.
func (s *store) tableStats() map[Table]TableStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[Table]TableStats, len(knownTables))
	for _, t := range knownTables {
		ts := TableStats{Entries: s.counts[t].live, Tombstones: s.counts[t].tombs}
		for _, o := range s.owners {
			if !o.alive {
				ts.Hidden += int(o.live[t])
			}
		}
		out[t.name()] = ts
	}
	return out
}

// owned returns this host's live entries of table t.
func (s *store) owned(t tableID) []entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []entry
	for _, sc := range s.scopes {
		if _, ok := sc.owners[s.self]; !ok {
			continue
		}
		sc.ownerRecordsLocked(s.self, func(k ekey, r *record) {
			if k.table == t && !r.deleted {
				out = append(out, entry{table: t, owner: s.self.name, key: k.key, version: r.version, value: r.value})
			}
		})
	}
	return out
}

// attachedNetworks returns the networks this host has.
func (s *store) attachedNetworks() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for nw, hosts := range s.attached {
		if hosts[s.self] {
			out = append(out, nw)
		}
	}
	sort.Strings(out)
	return out
}

// keeps reports whether this host keeps scope and holds the entries of
// name there: a host up, not this one.
func (s *store) keeps(scopeName, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.owners[name]
	if o == nil || o == s.self || !o.alive || s.scopes[scopeName] == nil {
		return false
	}
	return scopeName == "" || s.attachedLocked(scopeName)
}

// sharedScopes returns the scopes both this host and name keep.
func (s *store) sharedScopes(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []string{""}
	o := s.owners[name]
	if o == nil {
		return out
	}
	for nw, hosts := range s.attached {
		if hosts[s.self] && hosts[o] {
			out = append(out, nw)
		}
	}
	return out
}

// upFor returns how long this host has seen the host name alive without a
// break: zero if it is not alive here, or is this host.
func (s *store) upFor(name string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.owners[name]
	if o == nil || o == s.self || !o.alive {
		return 0
	}
	return s.clock.now().Sub(s.since(o.upAt))
}
