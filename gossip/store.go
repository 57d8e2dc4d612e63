package gossip

// The replicated state. Every entry is identified by (table, owner, key):
// each host writes only under its own name, so two hosts never write the
// same entry and there is nothing to arbitrate. For one entry the owner's
// versions only grow, so "keep the higher version" is a join-semilattice:
// any set of messages applied in any order, any number of times, ends in
// the same state. Deletes are tombstones (a higher version with no value),
// kept for TombstoneTTL so that an older copy met later cannot resurrect
// the entry.
//
// Liveness is separate from the entries: while memberlist says a host is
// dead, its entries are hidden (reported as deleted to subscribers, left
// out of Get and List) but kept, and they return when the host does. After
// ReapDeadAfter they are dropped.

import (
	"sort"
	"strings"
	"sync"
	"time"
)

// tkey identifies an entry within one owner's entries.
type tkey struct {
	table tableID
	key   string
}

// record is the stored form of an entry. value is never modified after it
// is stored, so it may be shared with snapshots and events.
type record struct {
	version   uint64
	deleted   bool
	value     []byte
	network   string // endpoints only: the network, interned
	deletedAt int64  // unix nanoseconds, for reaping tombstones
}

// ownerState is everything known about one owner.
type ownerState struct {
	alive     bool
	deadSince time.Time
	reaped    bool // its entries were dropped; ignore old copies until it is alive again
	entries   map[tkey]*record
}

// store holds the tables. Safe for concurrent use; it never calls
// memberlist and never blocks on subscribers.
type store struct {
	self string

	mu     sync.Mutex // guards the fields below
	clock  clock
	owners map[string]*ownerState
	subs   map[*subscription]struct{}
	names  map[string]string // interned network names
}

func newStore(self string, now func() time.Time) *store {
	s := &store{
		self:   self,
		clock:  clock{now: now},
		owners: make(map[string]*ownerState),
		subs:   make(map[*subscription]struct{}),
		names:  make(map[string]string),
	}
	s.owners[self] = &ownerState{alive: true, entries: make(map[tkey]*record)}
	return s
}

// networkLocked returns the interned network of an endpoint value (or an
// endpoint's tombstone value); "" for other tables. Interning keeps one
// copy of each network ID however many endpoints it has.
func (s *store) networkLocked(t tableID, value []byte) string {
	if t != tableEndpoints {
		return ""
	}
	nw := endpointNetwork(value)
	if in, ok := s.names[nw]; ok {
		return in
	}
	s.names[nw] = nw
	return nw
}

// ownerLocked returns the state of owner, creating it (not alive) if new.
func (s *store) ownerLocked(owner string) *ownerState {
	o := s.owners[owner]
	if o == nil {
		o = &ownerState{deadSince: s.clock.now(), entries: make(map[tkey]*record)}
		s.owners[owner] = o
	}
	return o
}

// put writes a local entry and returns it for sending. A put of the value
// already stored is a no-op and returns ok false.
func (s *store) put(t tableID, key string, value []byte) (e entry, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.owners[s.self]
	k := tkey{t, key}
	if r := o.entries[k]; r != nil && !r.deleted && string(r.value) == string(value) {
		return entry{}, false
	}
	r := &record{version: s.clock.next(), value: value, network: s.networkLocked(t, value)}
	o.entries[k] = r
	s.emitLocked(rawEvent{kind: EventPut, table: t, owner: s.self, key: key, version: r.version, value: value})
	return entry{table: t, owner: s.self, key: key, version: r.version, value: value}, true
}

// del tombstones a local entry and returns it with the value it replaced;
// ok is false if there was nothing to delete.
func (s *store) del(t tableID, key string) (e entry, oldValue []byte, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.owners[s.self]
	k := tkey{t, key}
	old := o.entries[k]
	if old == nil || old.deleted {
		return entry{}, nil, false
	}
	r := &record{version: s.clock.next(), deleted: true, value: tombstoneValue(t, old.value), network: old.network, deletedAt: s.clock.now().UnixNano()}
	o.entries[k] = r
	s.emitLocked(rawEvent{kind: EventDelete, table: t, owner: s.self, key: key, version: r.version, value: old.value})
	return entry{table: t, owner: s.self, key: key, version: r.version, deleted: true, value: r.value}, old.value, true
}

// mergeResult says what merging one remote entry did.
type mergeResult int

const (
	mergeStale   mergeResult = iota // we already had this version or a newer one
	mergeApplied                    // stored
	mergeAdopted                    // an entry of ours from before a restart; stored and now ours again
	mergeReaped                     // the owner is dead and reaped; ignored
)

// merge applies a validated remote entry.
func (s *store) merge(e *entry) mergeResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock.observe(e.version)
	o := s.ownerLocked(e.owner)
	if o.reaped && !o.alive {
		return mergeReaped
	}
	k := tkey{e.table, e.key}
	old := o.entries[k]
	if old != nil && old.version >= e.version {
		return mergeStale
	}
	r := &record{version: e.version, deleted: e.deleted, value: e.value, network: s.networkLocked(e.table, e.value)}
	if e.deleted {
		r.deletedAt = s.clock.now().UnixNano()
	}
	o.entries[k] = r
	if o.alive {
		switch {
		case !e.deleted && (old == nil || old.deleted || string(old.value) != string(e.value)):
			s.emitLocked(rawEvent{kind: EventPut, table: e.table, owner: e.owner, key: e.key, version: e.version, value: e.value})
		case e.deleted && old != nil && !old.deleted:
			s.emitLocked(rawEvent{kind: EventDelete, table: e.table, owner: e.owner, key: e.key, version: e.version, value: old.value})
		}
	}
	if e.owner == s.self {
		return mergeAdopted
	}
	return mergeApplied
}

// setAlive records memberlist's view of a host. Going down hides its
// entries; coming back shows them again.
func (s *store) setAlive(owner string, alive bool) {
	if owner == s.self {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.ownerLocked(owner)
	if o.alive == alive {
		return
	}
	o.alive = alive
	kind := EventPut
	if !alive {
		kind = EventDelete
		o.deadSince = s.clock.now()
	} else {
		o.reaped = false
	}
	for _, k := range sortedKeys(o.entries) {
		r := o.entries[k]
		if r.deleted {
			continue
		}
		s.emitLocked(rawEvent{kind: kind, table: k.table, owner: owner, key: k.key, version: r.version, value: r.value, hidden: true})
	}
}

// reap drops tombstones older than ttl and the entries of hosts dead for
// longer than deadAfter. Nothing visible changes, so there are no events.
func (s *store) reap(ttl, deadAfter time.Duration) (tombstones, entries int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.now()
	cut := now.Add(-ttl).UnixNano()
	for _, o := range s.owners {
		if !o.alive && !o.reaped && now.Sub(o.deadSince) > deadAfter {
			entries += len(o.entries)
			o.entries = make(map[tkey]*record)
			o.reaped = true
			continue
		}
		for k, r := range o.entries {
			if r.deleted && r.deletedAt < cut {
				delete(o.entries, k)
				tombstones++
			}
		}
	}
	return tombstones, entries
}

// snapshot returns every entry, tombstones and hidden ones included.
func (s *store) snapshot() []entry { return s.collect(func(tableID, *record) bool { return true }) }

// globalState returns the entries of every table but endpoints, for
// memberlist's push/pull; endpoints are synced per network.
func (s *store) globalState() []entry {
	return s.collect(func(t tableID, _ *record) bool { return t != tableEndpoints })
}

// networkState returns the endpoints (tombstones and hidden ones included)
// of the given networks, in one pass.
func (s *store) networkState(networks ...string) []entry {
	set := make(map[string]bool, len(networks))
	for _, nw := range networks {
		set[nw] = true
	}
	return s.collect(func(t tableID, r *record) bool { return t == tableEndpoints && set[r.network] })
}

func (s *store) collect(keep func(tableID, *record) bool) []entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []entry
	for owner, o := range s.owners {
		for k, r := range o.entries {
			if keep(k.table, r) {
				out = append(out, entry{table: k.table, owner: owner, key: k.key, version: r.version, deleted: r.deleted, value: r.value})
			}
		}
	}
	return out
}

// isAttached reports whether this host has network.
func (s *store) isAttached(network string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.owners[s.self].entries[tkey{tableAttachments, network}]
	return r != nil && !r.deleted
}

// dropNetwork forgets other hosts' endpoints of network (this host no
// longer has it); visible ones are reported as hidden deletes.
func (s *store) dropNetwork(network string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for owner, o := range s.owners {
		if owner == s.self {
			continue
		}
		for k, r := range o.entries {
			if k.table != tableEndpoints || r.network != network {
				continue
			}
			delete(o.entries, k)
			if o.alive && !r.deleted {
				s.emitLocked(rawEvent{kind: EventDelete, table: k.table, owner: owner, key: k.key, version: r.version, value: r.value, hidden: true})
			}
		}
	}
}

// visible returns the live entries of table t of alive owners, optionally
// only those with key, sorted by (key, version, owner).
func (s *store) visible(t tableID, key string, byKey bool) []entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []entry
	for owner, o := range s.owners {
		if !o.alive {
			continue
		}
		if byKey {
			if r := o.entries[tkey{t, key}]; r != nil && !r.deleted {
				out = append(out, entry{table: t, owner: owner, key: key, version: r.version, value: r.value})
			}
			continue
		}
		for k, r := range o.entries {
			if k.table == t && !r.deleted {
				out = append(out, entry{table: t, owner: owner, key: k.key, version: r.version, value: r.value})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := &out[i], &out[j]
		if a.key != b.key {
			return a.key < b.key
		}
		if a.version != b.version {
			return a.version < b.version
		}
		return a.owner < b.owner
	})
	return out
}

// withPrefix returns the live entries of table t whose key starts with
// prefix, of every owner, alive or not (hidden entries too; reaped ones are
// gone), sorted by (key, owner).
func (s *store) withPrefix(t tableID, prefix string) []entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []entry
	for owner, o := range s.owners {
		for k, r := range o.entries {
			if k.table == t && !r.deleted && strings.HasPrefix(k.key, prefix) {
				out = append(out, entry{table: t, owner: owner, key: k.key, version: r.version, value: r.value})
			}
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

// hosts returns every owner the store knows, and whether it is alive.
func (s *store) hosts() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]bool, len(s.owners))
	for name, o := range s.owners {
		out[name] = o.alive
	}
	return out
}

// owned returns this host's live entries of table t.
func (s *store) owned(t tableID) []entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []entry
	for k, r := range s.owners[s.self].entries {
		if k.table == t && !r.deleted {
			out = append(out, entry{table: t, owner: s.self, key: k.key, version: r.version, value: r.value})
		}
	}
	return out
}

// attached returns the alive hosts other than this one attached to network.
func (s *store) attached(network string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	k := tkey{tableAttachments, network}
	for owner, o := range s.owners {
		if owner == s.self || !o.alive {
			continue
		}
		if r := o.entries[k]; r != nil && !r.deleted {
			out = append(out, owner)
		}
	}
	return out
}

func sortedKeys(m map[tkey]*record) []tkey {
	keys := make([]tkey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].table != keys[j].table {
			return keys[i].table < keys[j].table
		}
		return keys[i].key < keys[j].key
	})
	return keys
}
