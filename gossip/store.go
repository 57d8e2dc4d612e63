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
// Digests. For each scope the store keeps, per owner, the count of that
// owner's live entries and the sum of a hash of each one's (table, key,
// version): two hosts hold the same live entries of an owner exactly when
// these tallies agree (barring a 64-bit collision), and the tally changes
// in O(1) with every write. Tombstones are left out, so reaping them never
// makes two hosts differ. Repair compares tallies and sends only the owners
// that differ.
//
// Liveness is separate from the entries: while memberlist says a host is
// down, its entries are hidden (reported as deleted to subscribers, left
// out of Get and List unless asked for) but kept, and they return when the
// host does. After ReapDeadAfter they are dropped.

import (
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"
)

// owner is everything known about one host.
type owner struct {
	name      string
	alive     bool
	left      bool      // it left gracefully (else it failed), while !alive
	downSince time.Time // while !alive
	reaped    bool      // its entries were dropped; old copies are ignored until it is back
	addr      netip.AddrPort
	vtep      netip.Addr
	wire      uint8              // wire version it speaks, from its metadata; 0 unknown
	live      [numTableIDs]int32 // its live entries per table
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

// tally is a digest of a set of live entries: their count and the sum of
// their hashes.
type tally struct {
	count uint64
	sum   uint64
}

func (t *tally) add(h uint64) { t.count++; t.sum += h }
func (t *tally) sub(h uint64) { t.count--; t.sum -= h }

// scope is the entries of one network (or, for "", the global tables).
type scope struct {
	entries map[ekey]*record
	owners  map[*owner]tally // live entries per owner; absent when none
	root    tally            // all live entries
}

// tableCount is the number of live entries and tombstones of one table.
type tableCount struct{ live, tombs int }

// store holds the tables. Safe for concurrent use; it never calls
// memberlist or the network and never blocks on subscribers.
type store struct {
	self *owner
	ttl  time.Duration // the tombstone horizon

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

// entryHash is the digest contribution of a live entry.
func entryHash(t tableID, key string, version uint64) uint64 {
	h := uint64(14695981039346656037) ^ uint64(t)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * 1099511628211
	}
	h ^= version * 0x9e3779b97f4a7c15
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
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

// expired reports whether a tombstone of this version is past the horizon.
func (s *store) expiredLocked(version uint64) bool {
	return int64(version) < s.clock.now().Add(-s.ttl).UnixMicro()
}

// ownerLocked returns owner name, creating it (down, since now) if new.
func (s *store) ownerLocked(name string) *owner {
	o := s.owners[name]
	if o == nil {
		o = &owner{name: name, downSince: s.clock.now()}
		s.owners[name] = o
	}
	return o
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
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.ownerLocked(name)
	if addr.IsValid() {
		o.addr, o.vtep, o.wire = addr, vtep, wire
	}
	if o == s.self || o.alive == alive {
		return false
	}
	o.alive = alive
	kind := EventPut
	if alive {
		o.reaped, o.left, o.downSince = false, false, time.Time{}
	} else {
		kind = EventDelete
		o.left, o.downSince = left, s.clock.now()
	}
	if o.liveTotal() > 0 {
		for _, ev := range s.ownerEntriesLocked(o) {
			ev.kind, ev.hidden = kind, true
			if !alive {
				ev.downSince = o.downSince
			}
			s.emitLocked(ev)
		}
	}
	return alive
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
		for k, r := range sc.entries {
			if k.owner == o && !r.deleted {
				out = append(out, rawEvent{table: k.table, owner: o.name, key: k.key, version: r.version, value: r.value})
			}
		}
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
		if !o.alive && !o.reaped && now.Sub(o.downSince) > deadAfter {
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

// snapshot returns every entry, tombstones and hidden ones included.
func (s *store) snapshot() []entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []entry
	for _, sc := range s.scopes {
		out = appendEntries(out, sc, nil, true)
	}
	return out
}

// appendEntries appends the entries of sc (of the given owners only, if
// owners is not nil; tombstones only if tombs) to out.
func appendEntries(out []entry, sc *scope, owners map[*owner]bool, tombs bool) []entry {
	for k, r := range sc.entries {
		if (owners != nil && !owners[k.owner]) || (r.deleted && !tombs) {
			continue
		}
		out = append(out, entry{table: k.table, owner: k.owner.name, key: k.key, version: r.version, deleted: r.deleted, value: r.value})
	}
	return out
}

// scopeEntries returns the live entries of the named scopes this host has
// (tombstones too if tombs), and the scopes it has of those named.
func (s *store) scopeEntries(names []string, tombs bool) (entries []entry, have []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range names {
		sc := s.scopes[name]
		if sc == nil || (name != "" && !s.attachedLocked(name)) {
			continue
		}
		have = append(have, name)
		entries = appendEntries(entries, sc, nil, tombs)
	}
	return entries, have
}

// ownersEntries returns the entries (tombstones too, if tombs) of the
// given owners in the given scope.
func (s *store) ownersEntries(scopeName string, names []string, tombs bool) []entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.scopes[scopeName]
	if sc == nil {
		return nil
	}
	set := make(map[*owner]bool, len(names))
	for _, n := range names {
		if o := s.owners[n]; o != nil {
			set[o] = true
		}
	}
	if len(set) == 0 {
		return nil
	}
	return appendEntries(nil, sc, set, tombs)
}

// root returns the digest of a scope's live entries; ok is false if this
// host does not have the scope.
func (s *store) root(scopeName string) (t tally, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.scopes[scopeName]
	if sc == nil || (scopeName != "" && !s.attachedLocked(scopeName)) {
		return tally{}, false
	}
	return sc.root, true
}

// ownerTallies returns the per-owner digests of a scope.
func (s *store) ownerTallies(scopeName string) (map[string]tally, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.scopes[scopeName]
	if sc == nil || (scopeName != "" && !s.attachedLocked(scopeName)) {
		return nil, false
	}
	out := make(map[string]tally, len(sc.owners))
	for o, t := range sc.owners {
		out[o.name] = t
	}
	return out, true
}

// ownerTally returns the digest of one owner's live entries in a scope.
func (s *store) ownerTally(scopeName, name string) tally {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc, o := s.scopes[scopeName], s.owners[name]
	if sc == nil || o == nil {
		return tally{}
	}
	return sc.owners[o]
}

// ownRecords returns the current state of the given entries of this host,
// by scope.
func (s *store) ownRecords(keys []pendKey) map[string][]entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	groups := make(map[string][]entry)
	for _, pk := range keys {
		sc := s.scopes[pk.scope]
		if sc == nil {
			continue
		}
		r := sc.entries[ekey{s.self, pk.table, pk.key}]
		if r == nil {
			continue // reaped already
		}
		groups[pk.scope] = append(groups[pk.scope], entry{table: pk.table, owner: s.self.name, key: pk.key, version: r.version, deleted: r.deleted, value: r.value})
	}
	return groups
}

// ownTally returns this host's digest in a scope, with the clock.
func (s *store) ownTally(scopeName string) (tally, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sc := s.scopes[scopeName]; sc != nil {
		return sc.owners[s.self], s.clock.last
	}
	return tally{}, s.clock.last
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
				out = append(out, found{entry{table: t, owner: o.name, key: key, version: r.version, value: r.value}, o.downSince})
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
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []found
	add := func(sc *scope) {
		for k, r := range sc.entries {
			if k.table == t && !r.deleted && (k.owner.alive || hidden) {
				out = append(out, found{entry{table: t, owner: k.owner.name, key: k.key, version: r.version, value: r.value}, k.owner.downSince})
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
	sortFound(out)
	return out
}

func sortFound(out []found) {
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
			out = append(out, Attachment{Network: network, Host: o.name, DownSince: o.downSince})
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
		out = append(out, HostState{Name: o.name, Alive: o.alive, DownSince: o.downSince, VTEP: o.vtep})
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
		for k, r := range sc.entries {
			if k.owner == s.self && k.table == t && !r.deleted {
				out = append(out, entry{table: t, owner: s.self.name, key: k.key, version: r.version, value: r.value})
			}
		}
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

// numBuckets splits an owner's entries in a scope by key, so that repair
// sends only the buckets that differ.
const numBuckets = 64

func bucketOf(key string) int {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return int(h % numBuckets)
}

// bucketTallies returns the digests of an owner's live entries in a scope,
// by bucket.
func (s *store) bucketTallies(scopeName, name string) (out [numBuckets]tally) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc, o := s.scopes[scopeName], s.owners[name]
	if sc == nil || o == nil {
		return out
	}
	for k, r := range sc.entries {
		if k.owner == o && !r.deleted {
			out[bucketOf(k.key)].add(entryHash(k.table, k.key, r.version))
		}
	}
	return out
}

// ownerEntriesIn returns an owner's entries in a scope (tombstones too, if
// tombs), only those in the given buckets unless buckets is nil.
func (s *store) ownerEntriesIn(scopeName, name string, buckets *[numBuckets]bool, tombs bool) []entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc, o := s.scopes[scopeName], s.owners[name]
	if sc == nil || o == nil {
		return nil
	}
	var out []entry
	for k, r := range sc.entries {
		if k.owner != o || (r.deleted && !tombs) || (buckets != nil && !buckets[bucketOf(k.key)]) {
			continue
		}
		out = append(out, entry{table: k.table, owner: o.name, key: k.key, version: r.version, deleted: r.deleted, value: r.value})
	}
	return out
}
