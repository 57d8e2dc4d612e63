package gossip

// The replicated state. Every entry is identified by (scope, table, owner,
// key): each host writes only under its own name, so two hosts never write
// the same entry and there is nothing to arbitrate. For one entry the
// owner's versions only grow, so "keep the higher version" is a
// join-semilattice: any set of messages applied in any order, any number of
// times, ends in the same state.
//
// Scopes. The global tables (networks, attachments, kv) form the scope ""
// and are on every host. A network's endpoints form the scope named by the
// network; a host keeps it only while it is attached to the network (and
// keeps its own endpoints always).
//
// Deletes are tombstones (a higher version with no value). A version is a
// Lamport clock floored at its writer's wall clock in microseconds, so it
// doubles as the time of the write: every host drops a tombstone once its
// version is older than TombstoneTTL, and refuses one already that old.
// That is the cluster-wide horizon: a marker goes away everywhere at about
// the same time and no host can bring it back (the clocks' skew is the only
// slack). An older copy of a deleted entry met after that is handled by its
// owner, which answers it with a fresh tombstone (see Node.mergeOwn).
//
// Digests: per scope and owner, a tally of the live entries, kept up to
// date by setLocked; see digest.go.
//
// Liveness is separate from the entries: while memberlist says a host is
// down, its entries are hidden (reported as deleted to subscribers, left
// out of Get and List unless asked for) but kept, and they return when the
// host does. After ReapDeadAfter they are dropped.

import (
	"net/netip"
	"sort"
	"sync"
	"time"
)

// owner is everything known about one host.
type owner struct {
	// Laid out to fit 128 bytes: a ring of n hosts holds n of these on
	// each host (gossip/DESIGN.md, "Memory at 500").
	name string
	addr netip.AddrPort
	vtep netip.Addr
	live [numTableIDs]int32 // its live entries per table
	// downAt is when it went down, while !alive; upAt when this host last
	// saw it come up, while alive: store stamps (stamp), 0 for none.
	downAt, upAt int64
	alive        bool
	left         bool  // it left gracefully (else it failed), while !alive
	reaped       bool  // its entries were dropped; old copies are ignored until it is back
	wasAlive     bool  // it has been an alive member at least once
	wire         uint8 // wire version it speaks, from its metadata; 0 unknown
}

// stamp turns a time into downAt/upAt's form: nanoseconds since the
// store was made, plus one (0 stays "none"). Kept relative to base so
// durations between them follow the monotonic clock, as time.Time's do.
func (s *store) stamp(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return int64(t.Sub(s.base)) + 1
}

// since turns a stamp back into a time (zero for 0).
func (s *store) since(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return s.base.Add(time.Duration(ns - 1))
}

// ekey identifies an entry within a scope.
type ekey struct {
	owner *owner
	table tableID
	key   string
}

// record is the stored form of an entry. value is never modified after it
// is stored, so it may be shared with snapshots, events and messages.
type record struct {
	version uint64
	deleted bool
	value   []byte
}

// scope is the entries of one network (or, for "", the global tables).
type scope struct {
	entries map[ekey]*record
	owners  map[*owner]tally       // live entries per owner; absent when none
	root    tally                  // all live entries
	large   map[*owner]*largeOwner // indexes of owners with more than bucketAbove live entries here, once read (largeLocked)
}

// largeOwner indexes the entries (tombstones too) of an owner that has
// held more than bucketAbove live entries in a scope, with their bucket
// digests, built at the first read of an owner's entries or digests
// (largeLocked: repair, hiding or showing a host's entries, this host's
// own entries) and kept as entries change from then on: repair reads them without walking the
// whole scope (issue 12: in a 50-host ring holding 100,000 endpoints,
// walking 10,000 entries per owner per pull kept every host busy with
// repair, and a new host's first sync never came). Small owners, the
// common case, cost nothing extra; an index goes when its owner has no
// entry left in the scope.
type largeOwner struct {
	records map[ekey]*record
	buckets [numBuckets]tally
}

// tableCount is the number of live entries and tombstones of one table.
type tableCount struct{ live, tombs int }

// store holds the tables. Safe for concurrent use; it never calls
// memberlist or the network and never blocks on subscribers.
type store struct {
	self *owner
	ttl  time.Duration // the tombstone horizon
	born time.Time     // this life's start: its versions are all later
	base time.Time     // what owners' stamps count from (stamp); never changes

	mu       sync.Mutex // guards the fields below and every owner's fields
	clock    clock
	owners   map[string]*owner
	scopes   map[string]*scope
	attached map[string]map[*owner]bool // live attachments: network -> owners
	names    map[string]string          // interned network names
	counts   [numTableIDs]tableCount
	subs     map[*subscription]struct{}
}

func newStore(self string, now func() time.Time, ttl time.Duration) *store {
	s := &store{
		ttl:      ttl,
		born:     now(),
		base:     now(),
		clock:    clock{now: now},
		owners:   make(map[string]*owner),
		scopes:   map[string]*scope{"": newScope()},
		attached: make(map[string]map[*owner]bool),
		names:    make(map[string]string),
		subs:     make(map[*subscription]struct{}),
	}
	s.self = &owner{name: self, alive: true, wire: wireVersion}
	s.owners[self] = s.self
	return s
}

func newScope() *scope {
	return &scope{entries: make(map[ekey]*record), owners: make(map[*owner]tally)}
}

// intern returns the one stored copy of network name s.
func (s *store) internLocked(name string) string {
	if in, ok := s.names[name]; ok {
		return in
	}
	s.names[name] = name
	return name
}

// scopeOf is the scope an entry of table t with value v belongs to.
func scopeOf(t tableID, v []byte) string {
	if t == tableEndpoints {
		return endpointNetwork(v)
	}
	return ""
}

// young reports whether this store is younger than the tombstone TTL: no
// marker it wrote can have been reaped yet.
func (s *store) young() bool {
	return s.clock.now().Before(s.born.Add(s.ttl)) // clock.now is set once: no lock
}

// expired reports whether a tombstone of this version is past the horizon.
func (s *store) expiredLocked(version uint64) bool {
	return int64(version) < s.clock.now().Add(-s.ttl).UnixMicro()
}

// ownerLocked returns owner name, creating it (down, since now) if new.
func (s *store) ownerLocked(name string) *owner {
	o := s.owners[name]
	if o == nil {
		o = &owner{name: name, downAt: s.stamp(s.clock.now())}
		s.owners[name] = o
	}
	return o
}

// indexLocked keeps the owner's index, if it has one, in step with the
// entry k going from old to r (either may be nil).
func (sc *scope) indexLocked(k ekey, old, r *record) {
	o := k.owner
	lo := sc.large[o]
	if lo == nil {
		return
	}
	if old != nil {
		delete(lo.records, k)
		if !old.deleted {
			lo.buckets[bucketOf(k.key)].sub(entryHash(k.table, k.key, old.version))
		}
	}
	if r != nil {
		lo.add(k, r)
	}
	if len(lo.records) == 0 {
		delete(sc.large, o)
	}
}

// largeLocked returns o's index in sc, building it first if o has more
// than bucketAbove live entries there; nil for an owner with no index and
// no more than that. An index is kept from then on. Built as entries
// arrived instead, a new host's first sync of a network of 100,000
// endpoints spent 15% of its CPU indexing owners that repair might never
// ask about, and held every entry twice. One owner is built at a time:
// the walk picks its entries out of the scope (about 2 ms at 100,000),
// where building every large owner's at once held the store's lock for
// about 100 ms.
func (sc *scope) largeLocked(o *owner) *largeOwner {
	if lo := sc.large[o]; lo != nil || sc.owners[o].count <= bucketAbove {
		return lo
	}
	lo := &largeOwner{records: make(map[ekey]*record, sc.owners[o].count)}
	for k, r := range sc.entries {
		if k.owner == o {
			lo.add(k, r)
		}
	}
	if sc.large == nil {
		sc.large = make(map[*owner]*largeOwner)
	}
	sc.large[o] = lo
	return lo
}

func (lo *largeOwner) add(k ekey, r *record) {
	lo.records[k] = r
	if !r.deleted {
		lo.buckets[bucketOf(k.key)].add(entryHash(k.table, k.key, r.version))
	}
}

// ownerRecordsLocked calls fn for every entry of o in sc (tombstones too),
// through o's index if it has one.
func (sc *scope) ownerRecordsLocked(o *owner, fn func(ekey, *record)) {
	if lo := sc.largeLocked(o); lo != nil {
		for k, r := range lo.records {
			fn(k, r)
		}
		return
	}
	for k, r := range sc.entries {
		if k.owner == o {
			fn(k, r)
		}
	}
}

// attachedLocked reports whether this host has network.
func (s *store) attachedLocked(network string) bool { return s.attached[network][s.self] }

// setLocked stores r (nil: removes) as the entry k of scope name, keeping
// the tallies, counts, attachment index and subscribers up to date. It
// emits an event if the visible state changed.
func (s *store) setLocked(scopeName string, k ekey, r *record, hidden bool) {
	sc := s.scopes[scopeName]
	if sc == nil {
		if r == nil {
			return
		}
		sc = newScope()
		s.scopes[scopeName] = sc
	}
	old := sc.entries[k]
	o := k.owner
	if old != nil {
		if old.deleted {
			s.counts[k.table].tombs--
		} else {
			s.counts[k.table].live--
			o.live[k.table]--
			t := sc.owners[o]
			t.sub(entryHash(k.table, k.key, old.version))
			if t.count == 0 {
				delete(sc.owners, o)
			} else {
				sc.owners[o] = t
			}
			sc.root.sub(entryHash(k.table, k.key, old.version))
		}
	}
	if r == nil {
		delete(sc.entries, k)
	} else {
		sc.entries[k] = r
		if r.deleted {
			s.counts[k.table].tombs++
		} else {
			s.counts[k.table].live++
			o.live[k.table]++
			h := entryHash(k.table, k.key, r.version)
			t := sc.owners[o]
			t.add(h)
			sc.owners[o] = t
			sc.root.add(h)
		}
	}
	sc.indexLocked(k, old, r)
	wasLive, isLive := old != nil && !old.deleted, r != nil && !r.deleted
	if k.table == tableAttachments && wasLive != isLive {
		if isLive {
			if s.attached[k.key] == nil {
				s.attached[k.key] = make(map[*owner]bool)
			}
			s.attached[k.key][o] = true
		} else {
			delete(s.attached[k.key], o)
			if len(s.attached[k.key]) == 0 {
				delete(s.attached, k.key)
			}
		}
		if o == s.self && isLive && s.scopes[k.key] == nil {
			s.scopes[k.key] = newScope()
		}
	}
	if !o.alive {
		return
	}
	switch {
	case isLive && (!wasLive || string(old.value) != string(r.value)):
		s.emitLocked(rawEvent{kind: EventPut, table: k.table, owner: o.name, key: k.key, version: r.version, value: r.value, hidden: hidden})
	case wasLive && !isLive:
		version := old.version
		if r != nil {
			version = r.version
		}
		s.emitLocked(rawEvent{kind: EventDelete, table: k.table, owner: o.name, key: k.key, version: version, value: old.value, hidden: hidden})
	}
}

// put writes a local entry and returns its scope. A put of the value
// already stored is a no-op and returns ok false. An endpoint that moves to
// another network is deleted from the old one first.
func (s *store) put(t tableID, key string, value []byte) (scopeName string, moved string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	scopeName = s.internLocked(scopeOf(t, value))
	k := ekey{s.self, t, key}
	if t == tableEndpoints {
		if old, nw := s.ownEndpointLocked(key); old != nil && nw != scopeName {
			s.setLocked(nw, k, &record{version: s.clock.next(), deleted: true, value: tombstoneValue(t, old.value)}, false)
			moved = nw
		}
	}
	if sc := s.scopes[scopeName]; sc != nil {
		if r := sc.entries[k]; r != nil && !r.deleted && string(r.value) == string(value) {
			return scopeName, moved, moved != ""
		}
	}
	s.setLocked(scopeName, k, &record{version: s.clock.next(), value: value}, false)
	return scopeName, moved, true
}

// ownEndpointLocked finds this host's live endpoint key, in whichever
// network it is.
func (s *store) ownEndpointLocked(key string) (*record, string) {
	k := ekey{s.self, tableEndpoints, key}
	for name, sc := range s.scopes {
		if r := sc.entries[k]; r != nil && !r.deleted {
			return r, name
		}
	}
	return nil, ""
}

// del tombstones a local entry and returns its scope; ok is false if there
// was nothing to delete.
func (s *store) del(t tableID, key string) (scopeName string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := ekey{s.self, t, key}
	var old *record
	if t == tableEndpoints {
		old, scopeName = s.ownEndpointLocked(key)
	} else if r := s.scopes[""].entries[k]; r != nil && !r.deleted {
		old = r
	}
	if old == nil {
		return "", false
	}
	s.setLocked(scopeName, k, &record{version: s.clock.next(), deleted: true, value: tombstoneValue(t, old.value)}, false)
	return scopeName, true
}

// retire writes a fresh tombstone for an entry of this host's that another
// host still holds but this host does not (it deleted it long ago, or never
// wrote it in this life). value is the stale copy's, for its scope.
func (s *store) retire(t tableID, key string, value []byte) (scopeName string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	scopeName = s.internLocked(scopeOf(t, value))
	s.setLocked(scopeName, ekey{s.self, t, key}, &record{version: s.clock.next(), deleted: true, value: tombstoneValue(t, value)}, false)
	return scopeName
}

// mergeResult says what merging one remote entry did.
type mergeResult int

const (
	mergeStale    mergeResult = iota // we already had this version or a newer one
	mergeApplied                     // stored (or, for an expired tombstone, its delete applied)
	mergeAdopted                     // an entry of ours from before a restart; stored and now ours again
	mergeReaped                      // the owner is down and reaped; ignored
	mergeUnscoped                    // an endpoint of a network this host does not have; ignored
	mergeOwnStale                    // an entry of ours that we do not hold; not stored
)

// merge applies a validated remote entry. An entry of this host's that it
// does not hold is adopted only if adopt is set (this host is still
// catching up after a start); otherwise it is reported as mergeOwnStale
// for the caller to answer.
func (s *store) merge(e *entry, adopt bool) mergeResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mergeLocked(e, adopt)
}

func (s *store) mergeLocked(e *entry, adopt bool) mergeResult {
	s.clock.observe(e.version)
	scopeName := scopeOf(e.table, e.value)
	o := s.ownerLocked(e.owner)
	if o != s.self {
		if o.reaped && !o.alive {
			return mergeReaped
		}
		if e.table == tableEndpoints && !s.attachedLocked(scopeName) {
			return mergeUnscoped
		}
	}
	k := ekey{o, e.table, e.key}
	var old *record
	if sc := s.scopes[scopeName]; sc != nil {
		old = sc.entries[k]
	}
	if old != nil && old.version >= e.version {
		return mergeStale
	}
	if o == s.self && old == nil && !adopt {
		// An entry of ours we do not hold, met after catching up: deleted
		// so long ago that the marker expired. The caller ends it. (One we
		// hold at an older version is newer news from a previous life of
		// this host, taken back like any adopted entry.)
		return mergeOwnStale
	}
	scopeName = s.internLocked(scopeName)
	if e.deleted && s.expiredLocked(e.version) {
		// Past the horizon: apply the delete, keep no marker.
		if old == nil || old.deleted {
			return mergeStale
		}
		s.setLocked(scopeName, k, nil, false)
		return mergeApplied
	}
	s.setLocked(scopeName, k, &record{version: e.version, deleted: e.deleted, value: e.value}, false)
	if o == s.self {
		return mergeAdopted
	}
	return mergeApplied
}

// setMember records memberlist's view of a host: its address, VTEP and
// wire version, and whether it is up. Going down hides its entries; coming
// back shows them again. It returns whether the host was down before and is
// up now.
func (s *store) setMember(name string, addr netip.AddrPort, vtep netip.Addr, wire uint8, alive, left bool) (back bool) {
	back, _ = s.setMemberFirst(name, addr, vtep, wire, alive, left)
	return back
}

// setMemberFirst is setMember that also says whether an up host was never
// an alive member before (first seen, not back from down).
func (s *store) setMemberFirst(name string, addr netip.AddrPort, vtep netip.Addr, wire uint8, alive, left bool) (back, first bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.ownerLocked(name)
	first = alive && !o.wasAlive
	if alive {
		o.wasAlive = true
	}
	if addr.IsValid() {
		o.addr, o.vtep, o.wire = addr, vtep, wire
	}
	if o == s.self || o.alive == alive {
		return false, false
	}
	o.alive = alive
	kind := EventPut
	if alive {
		o.reaped, o.left, o.downAt, o.upAt = false, false, 0, s.stamp(s.clock.now())
	} else {
		kind = EventDelete
		o.left, o.downAt = left, s.stamp(s.clock.now())
	}
	if o.liveTotal() > 0 {
		for _, ev := range s.ownerEntriesLocked(o) {
			ev.kind, ev.hidden = kind, true
			if !alive {
				ev.downSince = s.since(o.downAt)
			}
			s.emitLocked(ev)
		}
	}
	return alive, first
}

func (o *owner) liveTotal() int {
	var n int32
	for _, c := range o.live {
		n += c
	}
	return int(n)
}

// ownerEntriesLocked returns o's live entries as events, in a stable order
// (table, then key).
func (s *store) ownerEntriesLocked(o *owner) []rawEvent {
	var out []rawEvent
	for _, sc := range s.scopes {
		if _, ok := sc.owners[o]; !ok {
			continue
		}
		sc.ownerRecordsLocked(o, func(k ekey, r *record) {
			if !r.deleted {
				out = append(out, rawEvent{table: k.table, owner: o.name, key: k.key, version: r.version, value: r.value})
			}
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].table != out[j].table {
			return out[i].table < out[j].table
		}
		return out[i].key < out[j].key
	})
	return out
}

// reap drops tombstones past the horizon and the entries of hosts down for
// longer than deadAfter. Nothing visible changes, so there are no events.
func (s *store) reap(deadAfter time.Duration) (tombstones, entries int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.now()
	for _, o := range s.owners {
		if !o.alive && !o.reaped && now.Sub(s.since(o.downAt)) > deadAfter {
			o.reaped = true
		}
	}
	for name, sc := range s.scopes {
		for k, r := range sc.entries {
			switch {
			case k.owner.reaped && !k.owner.alive:
				s.setLocked(name, k, nil, false)
				entries++
			case r.deleted && s.expiredLocked(r.version):
				s.setLocked(name, k, nil, false)
				tombstones++
			}
		}
	}
	return tombstones, entries
}

// isAttached reports whether this host has network.
func (s *store) isAttached(network string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attachedLocked(network)
}

// dropNetwork forgets other hosts' endpoints of network (this host no
// longer has it); visible ones are reported as hidden deletes.
func (s *store) dropNetwork(network string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.scopes[network]
	if sc == nil {
		return
	}
	own := false
	for k := range sc.entries {
		if k.owner == s.self {
			own = true
			continue
		}
		s.setLocked(network, k, nil, true)
	}
	if !own {
		delete(s.scopes, network)
	}
}
