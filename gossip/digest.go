package gossip

// Digests, and what repair reads from the store. For each scope the store
// keeps, per owner, a tally of the owner's live entries: their count and
// the sum of a 64-bit hash of each one's (table, key, version). Two hosts
// hold the same live entries of an owner exactly when their tallies agree
// (barring a hash collision), and a tally changes in O(1) with every
// write (store.setLocked). Tombstones are left out, so reaping them never
// makes two hosts differ. For an owner with many entries, repair also
// tallies numBuckets buckets of its entries by key, on demand, so that
// only the buckets that differ are sent.

// tally is a digest of a set of live entries: their count and the sum of
// their hashes.
type tally struct {
	count uint64
	sum   uint64
}

func (t *tally) add(h uint64) { t.count++; t.sum += h }

func (t *tally) sub(h uint64) { t.count--; t.sum -= h }

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

// snapshot returns every entry, tombstones and hidden ones included.
func (s *store) snapshot() []entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []entry
	for _, sc := range s.scopes {
		out = appendEntries(out, sc, true)
	}
	return out
}

// appendEntries appends the entries of sc (tombstones too, if tombs) to
// out.
func appendEntries(out []entry, sc *scope, tombs bool) []entry {
	for k, r := range sc.entries {
		if r.deleted && !tombs {
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
		entries = appendEntries(entries, sc, tombs)
	}
	return entries, have
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
	if lo := sc.largeLocked(o); lo != nil {
		return lo.buckets
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
	sc.ownerRecordsLocked(o, func(k ekey, r *record) {
		if (r.deleted && !tombs) || (buckets != nil && !buckets[bucketOf(k.key)]) {
			return
		}
		out = append(out, entry{table: k.table, owner: o.name, key: k.key, version: r.version, deleted: r.deleted, value: r.value})
	})
	return out
}
