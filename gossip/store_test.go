package gossip

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// fakeClock is a settable wall clock for store tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func testEndpoint(id, network string, last byte) Endpoint {
	return Endpoint{
		ID: id, Network: network,
		MAC:  []byte{0x02, 0x42, 10, 1, 0, last},
		IP:   netip.AddrFrom4([4]byte{10, 1, 0, last}),
		VTEP: netip.MustParseAddr("203.0.113.1"),
	}
}

// dump is a store's full state (tombstones included) in a comparable form.
func dump(s *store) []string { return dumpOwners(s, nil) }

// dumpOwners is dump without the entries of the owners named in skip.
func dumpOwners(s *store, skip map[string]bool) []string {
	var out []string
	for _, e := range s.snapshot() {
		if skip[e.owner] {
			continue
		}
		out = append(out, fmt.Sprintf("%d/%s/%s v%d del=%v %x", e.table, e.owner, e.key, e.version, e.deleted, e.value))
	}
	sort.Strings(out)
	return out
}

// TestMergeOrderIndependent replays the writes of three hosts, shuffled and
// duplicated, into fresh stores: every order must end in the same state as
// the writers' own stores.
func TestMergeOrderIndependent(t *testing.T) {
	clk := newFakeClock()
	owners := []string{"h1", "h2", "h3"}
	writers := map[string]*store{}
	for _, o := range owners {
		writers[o] = newStore(o, clk.now, time.Hour)
	}
	written := func(w *store, scope string, t tableID, key string) entry {
		r := w.scopes[scope].entries[ekey{w.self, t, key}]
		return entry{table: t, owner: w.self.name, key: key, version: r.version, deleted: r.deleted, value: r.value}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var log []entry
	for i := range 300 {
		o := owners[rng.IntN(len(owners))]
		key := fmt.Sprintf("ep%d", rng.IntN(20))
		if rng.IntN(4) == 0 {
			if scope, ok := writers[o].del(tableEndpoints, key); ok {
				log = append(log, written(writers[o], scope, tableEndpoints, key))
			}
			continue
		}
		ep := testEndpoint(key, "net", byte(i))
		if scope, _, ok := writers[o].put(tableEndpoints, key, encodeEndpoint(&ep)); ok {
			log = append(log, written(writers[o], scope, tableEndpoints, key))
		}
		if i%7 == 0 {
			clk.advance(time.Millisecond)
		}
	}
	var want []string
	for _, o := range owners {
		want = append(want, dump(writers[o])...)
	}
	sort.Strings(want)

	for trial := range 20 {
		s := newStore("observer", clk.now, time.Hour)
		s.put(tableAttachments, "net", nil)
		for _, o := range owners {
			s.setMember(o, addrOf(o), netip.Addr{}, wireVersion, true, false)
		}
		order := append([]entry(nil), log...)
		order = append(order, log[:len(log)/3]...) // duplicates
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for i := range order {
			s.merge(&order[i], false)
		}
		if diff := cmp.Diff(want, dumpOwners(s, map[string]bool{"observer": true})); diff != "" {
			t.Fatalf("trial %d: state differs from the writers' (-want +got):\n%s", trial, diff)
		}
	}
}

func drain(t *testing.T, ch <-chan Event, n int) []Event {
	t.Helper()
	var out []Event
	deadline := time.After(5 * time.Second)
	for len(out) < n {
		select {
		case ev := <-ch:
			out = append(out, ev)
		case <-deadline:
			t.Fatalf("got %d events, want %d: %+v", len(out), n, out)
		}
	}
	return out
}

// addrOf is a made-up member address for store tests.
func addrOf(name string) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(7000+len(name)))
}

// observer is a store attached to nw that sees the given hosts up.
func observer(clk *fakeClock, nw string, up ...string) *store {
	s := newStore("obs", clk.now, time.Hour)
	s.put(tableAttachments, nw, nil)
	for _, h := range up {
		s.setMember(h, addrOf(h), netip.Addr{}, wireVersion, true, false)
	}
	return s
}

// putEntry writes an entry on w and returns it as sent.
func putEntry(t *testing.T, w *store, tb tableID, key string, value []byte) entry {
	t.Helper()
	scope, _, ok := w.put(tb, key, value)
	if !ok {
		t.Fatalf("put %s: no change", key)
	}
	r := w.scopes[scope].entries[ekey{w.self, tb, key}]
	return entry{table: tb, owner: w.self.name, key: key, version: r.version, value: r.value}
}

func delEntry(t *testing.T, w *store, tb tableID, key string) entry {
	t.Helper()
	scope, ok := w.del(tb, key)
	if !ok {
		t.Fatalf("del %s: nothing to delete", key)
	}
	r := w.scopes[scope].entries[ekey{w.self, tb, key}]
	return entry{table: tb, owner: w.self.name, key: key, version: r.version, deleted: true, value: r.value}
}

func TestHideAndShowDeadHost(t *testing.T) {
	clk := newFakeClock()
	h1 := newStore("h1", clk.now, time.Hour)
	obs := observer(clk, "net", "h1")
	ep := testEndpoint("ep1", "net", 5)
	e := putEntry(t, h1, tableEndpoints, "ep1", encodeEndpoint(&ep))
	obs.merge(&e, false)
	ch, cancel := obs.subscribe(0)
	defer cancel()
	if got := drain(t, ch, 2); got[0].Kind != EventPut || got[0].Endpoint == nil || got[0].Endpoint.ID != "ep1" || got[0].Host != "h1" || got[1].Attachment == nil {
		t.Fatalf("replayed events = %+v, want a put of ep1 from h1, then the attachment (table order)", got)
	}

	clk.advance(time.Second)
	obs.setMember("h1", netip.AddrPort{}, netip.Addr{}, 0, false, false)
	got := drain(t, ch, 1)[0]
	if got.Kind != EventDelete || !got.Hidden || got.Endpoint == nil || got.Endpoint.IP != ep.IP || !got.Endpoint.DownSince.Equal(clk.now()) {
		t.Fatalf("on host down got %+v, want hidden delete carrying the endpoint and when its host went down", got)
	}
	if v := obs.list(tableEndpoints, "net", false); len(v) != 0 {
		t.Fatalf("dead host's entries still visible: %v", v)
	}
	if v := obs.list(tableEndpoints, "net", true); len(v) != 1 || !v[0].downSince.Equal(clk.now()) {
		t.Fatalf("hidden read = %+v, want ep1 with its host's down time", v)
	}
	obs.setMember("h1", addrOf("h1"), netip.Addr{}, wireVersion, true, false)
	if got := drain(t, ch, 1)[0]; got.Kind != EventPut || !got.Hidden || got.Key != "ep1" {
		t.Fatalf("on host up got %+v, want put of ep1", got)
	}
	if v := obs.get(tableEndpoints, "ep1", false); len(v) != 1 || !v[0].downSince.IsZero() {
		t.Fatalf("entry did not return with its host: %v", v)
	}
}

func TestReap(t *testing.T) {
	clk := newFakeClock()
	h1 := newStore("h1", clk.now, time.Hour)
	obs := observer(clk, "net", "h1")
	ep := testEndpoint("ep1", "net", 5)
	put := putEntry(t, h1, tableEndpoints, "ep1", encodeEndpoint(&ep))
	ep2 := testEndpoint("ep2", "net", 6)
	put2 := putEntry(t, h1, tableEndpoints, "ep2", encodeEndpoint(&ep2))
	del := delEntry(t, h1, tableEndpoints, "ep2")
	for _, e := range []*entry{&put, &put2, &del} {
		obs.merge(e, false)
	}

	clk.advance(time.Minute)
	if tomb, dead := obs.reap(time.Hour); tomb+dead != 0 {
		t.Fatalf("reaped %d tombstones and %d entries before the bounds", tomb, dead)
	}
	// The tombstone still stops the older put.
	if r := obs.merge(&put2, false); r != mergeStale {
		t.Fatalf("older put merged over a tombstone: %v", r)
	}
	clk.advance(2 * time.Hour)
	if tomb, dead := obs.reap(time.Hour); tomb != 1 || dead != 0 {
		t.Fatalf("reaped %d tombstones, %d entries; want 1, 0", tomb, dead)
	}
	// Past the horizon, the tombstone is not taken back, from anyone.
	if r := obs.merge(&del, false); r != mergeStale {
		t.Fatalf("merge of a tombstone past the horizon = %v, want refused", r)
	}
	if got := obs.tableStats()[TableEndpoints]; got.Tombstones != 0 || got.Entries != 1 {
		t.Fatalf("endpoint stats = %+v, want 1 entry and no tombstone", got)
	}

	obs.setMember("h1", netip.AddrPort{}, netip.Addr{}, 0, false, false)
	clk.advance(30 * time.Minute)
	if _, dead := obs.reap(time.Hour); dead != 0 {
		t.Fatalf("reaped a host dead for less than the bound")
	}
	clk.advance(31 * time.Minute)
	if _, dead := obs.reap(time.Hour); dead != 1 {
		t.Fatalf("reaped %d entries of a host dead past the bound, want 1", dead)
	}
	// Old copies of a reaped host's entries are ignored while it stays dead.
	if r := obs.merge(&put, false); r != mergeReaped {
		t.Fatalf("merge of a reaped host's entry = %v, want ignored", r)
	}
	obs.setMember("h1", addrOf("h1"), netip.Addr{}, wireVersion, true, false)
	if r := obs.merge(&put, false); r != mergeApplied {
		t.Fatalf("merge after the host returned = %v, want applied", r)
	}
}

// TestExpiredTombstoneStillDeletes: a tombstone that arrives past the
// horizon is not kept, but still deletes the older live copy it meets.
func TestExpiredTombstoneStillDeletes(t *testing.T) {
	clk := newFakeClock()
	h1 := newStore("h1", clk.now, time.Hour)
	obs := observer(clk, "net", "h1")
	ep := testEndpoint("ep1", "net", 5)
	put := putEntry(t, h1, tableEndpoints, "ep1", encodeEndpoint(&ep))
	obs.merge(&put, false)
	del := delEntry(t, h1, tableEndpoints, "ep1")
	clk.advance(2 * time.Hour)
	if r := obs.merge(&del, false); r != mergeApplied {
		t.Fatalf("merge of an expired tombstone over a live copy = %v, want applied", r)
	}
	if st := obs.tableStats()[TableEndpoints]; st.Entries != 0 || st.Tombstones != 0 {
		t.Fatalf("stats after = %+v, want nothing left", st)
	}
}

// TestRestartedHostWritesWin shows that a host restarted with empty state
// writes versions above its old ones, and adopts its old entries.
func TestRestartedHostWritesWin(t *testing.T) {
	clk := newFakeClock()
	h1 := newStore("h1", clk.now, time.Hour)
	obs := observer(clk, "net", "h1")
	ep := testEndpoint("ep1", "net", 5)
	var last entry
	for range 5 { // many quick writes push the Lamport clock past the wall clock
		ep.IP = ep.IP.Next()
		last = putEntry(t, h1, tableEndpoints, "ep1", encodeEndpoint(&ep))
		obs.merge(&last, false)
	}
	clk.advance(time.Second)
	h1b := newStore("h1", clk.now, time.Hour) // restarted, empty
	if r := h1b.merge(&last, false); r != mergeOwnStale {
		t.Fatalf("merge of its old entry by a host caught up = %v, want refused as stale", r)
	}
	older := last
	older.version--
	if r := h1b.merge(&older, true); r != mergeAdopted {
		t.Fatalf("restarted host's merge of an old entry = %v, want adopted", r)
	}
	if r := h1b.merge(&last, false); r != mergeAdopted {
		t.Fatalf("merge of a newer version of an entry it holds = %v, want adopted (news of a previous life), even caught up", r)
	}
	ep.IP = ep.IP.Next()
	e := putEntry(t, h1b, tableEndpoints, "ep1", encodeEndpoint(&ep))
	if e.version <= last.version {
		t.Fatalf("write after restart has version %d, want above %d", e.version, last.version)
	}
	if r := obs.merge(&e, false); r != mergeApplied {
		t.Fatalf("observer merge of the new write = %v, want applied", r)
	}
}

// TestDigestsTrackLiveEntries: the per-owner tallies follow every write,
// ignore tombstones, and agree between a writer and an observer that has
// merged its entries in any order.
func TestDigestsTrackLiveEntries(t *testing.T) {
	clk := newFakeClock()
	h1 := newStore("h1", clk.now, time.Hour)
	obs := observer(clk, "net", "h1")
	var log []entry
	for i := range 50 {
		ep := testEndpoint(fmt.Sprintf("ep%d", i%20), "net", byte(i))
		log = append(log, putEntry(t, h1, tableEndpoints, ep.ID, encodeEndpoint(&ep)))
		if i%3 == 0 {
			log = append(log, delEntry(t, h1, tableEndpoints, ep.ID))
		}
	}
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(log), func(i, j int) { log[i], log[j] = log[j], log[i] })
	for i := range log {
		obs.merge(&log[i], false)
	}
	want := h1.scopes["net"].owners[h1.self]
	if got := obs.ownerTally("net", "h1"); got != want || got.count == 0 {
		t.Fatalf("observer's tally of h1 = %+v, writer's = %+v", got, want)
	}
	if live := len(obs.list(tableEndpoints, "net", false)); uint64(live) != want.count {
		t.Fatalf("tally counts %d, %d live entries", want.count, live)
	}
	// Reaping tombstones changes no tally.
	clk.advance(2 * time.Hour)
	obs.reap(24 * time.Hour)
	if got := obs.ownerTally("net", "h1"); got != want {
		t.Fatalf("tally after reaping tombstones = %+v, want %+v", got, want)
	}
}

// checkOwnerIndex fails unless every large owner's index holds exactly its
// entries of the scope, with their bucket digests, and every owner with
// more than bucketAbove live entries has one. It returns how many indexes
// there are.
func checkOwnerIndex(t *testing.T, s *store, when string) int {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	// Repair reads every owner: indexes missing so far are built here
	// (the presence check below tests that build), and those built before
	// must have been kept right through the changes since.
	for _, sc := range s.scopes {
		for o := range sc.owners {
			sc.largeLocked(o)
		}
	}
	indexes := 0
	for name, sc := range s.scopes {
		records := map[*owner]map[ekey]*record{}
		buckets := map[*owner]*[numBuckets]tally{}
		for k, r := range sc.entries {
			if records[k.owner] == nil {
				records[k.owner], buckets[k.owner] = map[ekey]*record{}, new([numBuckets]tally)
			}
			records[k.owner][k] = r
			if !r.deleted {
				buckets[k.owner][bucketOf(k.key)].add(entryHash(k.table, k.key, r.version))
			}
		}
		for o, tl := range sc.owners {
			if tl.count > bucketAbove && sc.large[o] == nil {
				t.Fatalf("%s: scope %q: %s has %d live entries and no index", when, name, o.name, tl.count)
			}
		}
		for o, lo := range sc.large {
			indexes++
			if len(records[o]) == 0 {
				t.Fatalf("%s: scope %q keeps an index of %s, which has no entry there", when, name, o.name)
			}
			if len(lo.records) != len(records[o]) {
				t.Fatalf("%s: scope %q: index of %s holds %d entries, the scope %d", when, name, o.name, len(lo.records), len(records[o]))
			}
			for k, r := range lo.records {
				if records[o][k] != r {
					t.Fatalf("%s: scope %q: index of %s holds %s v%d, the scope %v", when, name, o.name, k.key, r.version, records[o][k])
				}
			}
			if lo.buckets != *buckets[o] {
				t.Fatalf("%s: scope %q: bucket digests of %s's index differ from its entries'", when, name, o.name)
			}
		}
	}
	return indexes
}

// TestOwnerIndexBuiltOnFirstUse: entries received build no index; the
// first read of a large owner builds its index alone, equal to its
// entries, and it follows later changes.
func TestOwnerIndexBuiltOnFirstUse(t *testing.T) {
	clk := newFakeClock()
	obs := observer(clk, "net", "h1", "h2", "h3")
	writers := map[string]*store{}
	sizes := map[string]int{"h1": 3 * bucketAbove, "h2": bucketAbove + 1, "h3": bucketAbove}
	for h, size := range sizes {
		writers[h] = newStore(h, clk.now, time.Hour)
		for i := range size {
			ep := testEndpoint(fmt.Sprintf("%s-ep%d", h, i), "net", byte(i))
			e := putEntry(t, writers[h], tableEndpoints, ep.ID, encodeEndpoint(&ep))
			obs.merge(&e, false)
		}
	}
	obs.mu.Lock()
	built := len(obs.scopes["net"].large)
	obs.mu.Unlock()
	if built != 0 {
		t.Fatalf("%d indexes built as entries arrived, want none before repair asks", built)
	}
	if got := obs.bucketTallies("net", "h1"); got == ([numBuckets]tally{}) {
		t.Fatal("h1's bucket digests are empty")
	}
	obs.mu.Lock()
	sc := obs.scopes["net"]
	h1, h2, h3 := sc.large[obs.owners["h1"]], sc.large[obs.owners["h2"]], sc.large[obs.owners["h3"]]
	obs.mu.Unlock()
	if h1 == nil || h2 != nil || h3 != nil {
		t.Fatalf("indexes after reading h1: h1 %v, h2 %v, h3 %v; want h1's alone", h1 != nil, h2 != nil, h3 != nil)
	}
	obs.ownerEntriesIn("net", "h2", nil, true)
	obs.ownerEntriesIn("net", "h3", nil, true)
	obs.mu.Lock()
	h2, h3 = sc.large[obs.owners["h2"]], sc.large[obs.owners["h3"]]
	obs.mu.Unlock()
	if h2 == nil || h3 != nil {
		t.Fatalf("indexes after reading h2 and h3: h2 %v, h3 %v; want h2's (over %d entries), not h3's", h2 != nil, h3 != nil, bucketAbove)
	}
	// Changes after the build: h1 deletes one, h2 writes one.
	scope, ok := writers["h1"].del(tableEndpoints, "h1-ep0")
	if !ok {
		t.Fatal("delete of h1-ep0: no change")
	}
	r := writers["h1"].scopes[scope].entries[ekey{writers["h1"].self, tableEndpoints, "h1-ep0"}]
	obs.merge(&entry{table: tableEndpoints, owner: "h1", key: "h1-ep0", version: r.version, deleted: true, value: r.value}, false)
	ep := testEndpoint("h2-late", "net", 7)
	e := putEntry(t, writers["h2"], tableEndpoints, ep.ID, encodeEndpoint(&ep))
	obs.merge(&e, false)
	if n := checkOwnerIndex(t, obs, "after changes"); n != 2 {
		t.Errorf("%d indexes, want 2", n)
	}
}

// TestOwnerIndexFollowsEveryChange: writes, deletes, merges from several
// hosts, a host going down and being reaped, tombstones expiring and a
// network dropped all keep the indexes of large owners equal to their
// entries, and what repair reads (bucket digests, an owner's entries)
// equals what a walk of every entry finds, for large and small owners.
func TestOwnerIndexFollowsEveryChange(t *testing.T) {
	clk := newFakeClock()
	rng := rand.New(rand.NewPCG(5, 6))
	hosts := []string{"h1", "h2", "h3"}
	writers := map[string]*store{}
	for _, h := range hosts {
		writers[h] = newStore(h, clk.now, time.Hour)
	}
	obs := observer(clk, "net", hosts...)
	obs.put(tableAttachments, "other", nil)
	most := 0
	for i := range 4000 {
		h := hosts[rng.IntN(len(hosts))]
		w := writers[h]
		nw := "net"
		key := fmt.Sprintf("ep%d", rng.IntN(400))
		if h == "h2" {
			nw, key = "other", fmt.Sprintf("ep%d", rng.IntN(100)) // h2 stays small
		}
		var e entry
		if rng.IntN(5) == 0 {
			scope, ok := w.del(tableEndpoints, key)
			if !ok {
				continue
			}
			r := w.scopes[scope].entries[ekey{w.self, tableEndpoints, key}]
			e = entry{table: tableEndpoints, owner: h, key: key, version: r.version, deleted: true, value: r.value}
		} else {
			ep := testEndpoint(key, nw, byte(i))
			scope, _, ok := w.put(tableEndpoints, key, encodeEndpoint(&ep))
			if !ok {
				continue
			}
			r := w.scopes[scope].entries[ekey{w.self, tableEndpoints, key}]
			e = entry{table: tableEndpoints, owner: h, key: key, version: r.version, value: r.value}
		}
		obs.merge(&e, false)
		if rng.IntN(10) == 0 {
			ep := testEndpoint(fmt.Sprintf("own%d", rng.IntN(10)), "net", byte(i))
			obs.put(tableEndpoints, ep.ID, encodeEndpoint(&ep))
		}
		clk.advance(time.Duration(rng.IntN(4)) * time.Second)
		switch i {
		case 2000:
			obs.setMember("h3", netip.AddrPort{}, netip.Addr{}, 0, false, false)
		case 2500:
			obs.reap(time.Hour) // tombstones past the horizon go
		case 3000:
			obs.dropNetwork("other")
			obs.put(tableAttachments, "other", nil)
		case 3500:
			clk.advance(2 * time.Hour)
			obs.reap(time.Hour) // h3, down for over an hour, goes
		}
		if i%10 == 0 || i > 1990 {
			most = max(most, checkOwnerIndex(t, obs, fmt.Sprintf("after step %d", i)))
		}
	}
	if most == 0 {
		t.Fatal("no owner grew large enough for an index: the test tests nothing")
	}
	if n := checkOwnerIndex(t, obs, "at the end"); n != 1 {
		t.Errorf("%d owners indexed at the end, want 1 (h1: h2 stayed small, h3 was reaped)", n)
	}

	for _, scope := range []string{"net", "other"} {
		for _, h := range append(hosts, "obs") {
			var want [numBuckets]tally
			var wantKeys []string
			obs.mu.Lock()
			for k, r := range obs.scopes[scope].entries {
				if k.owner.name == h {
					wantKeys = append(wantKeys, fmt.Sprintf("%s v%d del=%v", k.key, r.version, r.deleted))
					if !r.deleted {
						want[bucketOf(k.key)].add(entryHash(k.table, k.key, r.version))
					}
				}
			}
			obs.mu.Unlock()
			if got := obs.bucketTallies(scope, h); got != want {
				t.Errorf("bucket digests of %s in %s differ from a walk of every entry", h, scope)
			}
			var gotKeys []string
			for _, e := range obs.ownerEntriesIn(scope, h, nil, true) {
				gotKeys = append(gotKeys, fmt.Sprintf("%s v%d del=%v", e.key, e.version, e.deleted))
			}
			sort.Strings(wantKeys)
			sort.Strings(gotKeys)
			if diff := cmp.Diff(wantKeys, gotKeys); diff != "" {
				t.Errorf("entries of %s in %s (-walk +index):\n%s", h, scope, diff)
			}
		}
	}
}

// TestListOthersSkipsOwnEntries: the remote listing (Endpoints.ListRemote,
// what tenetd plans other hosts' endpoints from) leaves out this host's own
// entries, keeps hidden ones when asked, and otherwise equals the full
// listing.
func TestListOthersSkipsOwnEntries(t *testing.T) {
	clk := newFakeClock()
	h1 := newStore("h1", clk.now, time.Hour)
	obs := observer(clk, "net", "h1")
	for i := range 3 {
		ep := testEndpoint(fmt.Sprintf("own%d", i), "net", byte(i))
		obs.put(tableEndpoints, ep.ID, encodeEndpoint(&ep))
		rep := testEndpoint(fmt.Sprintf("rem%d", i), "net", byte(10+i))
		e := putEntry(t, h1, tableEndpoints, rep.ID, encodeEndpoint(&rep))
		obs.merge(&e, false)
	}
	keys := func(fs []found) (out []string) {
		for _, f := range fs {
			out = append(out, f.owner+"/"+f.key)
		}
		slices.Sort(out) // listOf is in no particular order
		return out
	}
	want := []string{"h1/rem0", "h1/rem1", "h1/rem2"}
	if diff := cmp.Diff(want, keys(obs.listOf(tableEndpoints, "net", false, true))); diff != "" {
		t.Fatalf("others (-want +got):\n%s", diff)
	}
	if got := keys(obs.list(tableEndpoints, "net", false)); len(got) != 6 {
		t.Fatalf("full listing = %v, want own and remote", got)
	}
	obs.setMember("h1", netip.AddrPort{}, netip.Addr{}, 0, false, false)
	if got := obs.listOf(tableEndpoints, "net", false, true); len(got) != 0 {
		t.Fatalf("others without hidden, h1 down = %v", keys(got))
	}
	if diff := cmp.Diff(want, keys(obs.listOf(tableEndpoints, "net", true, true))); diff != "" {
		t.Fatalf("others with hidden, h1 down (-want +got):\n%s", diff)
	}
}

// TestSlowSubscriberGetsEachEntrysLatestState: a subscriber that does not
// read holds at most one queued event per entry, whatever the number of
// changes; when it reads, it gets each entry's latest state, entries in
// the order they first changed.
func TestSlowSubscriberGetsEachEntrysLatestState(t *testing.T) {
	clk := newFakeClock()
	h1 := newStore("h1", clk.now, time.Hour)
	obs := observer(clk, "net", "h1")
	ch, cancel := obs.subscribe(0)
	defer cancel()
	drain(t, ch, 1) // the replayed attachment
	var last Endpoint
	for i := range 1000 {
		last = testEndpoint("ep1", "net", 5)
		last.Names = []string{fmt.Sprintf("v%d", i)}
		e := putEntry(t, h1, tableEndpoints, "ep1", encodeEndpoint(&last))
		obs.merge(&e, false)
	}
	ep2 := testEndpoint("ep2", "net", 6)
	put2 := putEntry(t, h1, tableEndpoints, "ep2", encodeEndpoint(&ep2))
	obs.merge(&put2, false)
	del2 := delEntry(t, h1, tableEndpoints, "ep2")
	obs.merge(&del2, false)
	obs.mu.Lock()
	queued := 0
	for sub := range obs.subs {
		sub.mu.Lock()
		queued += len(sub.queue)
		sub.mu.Unlock()
	}
	obs.mu.Unlock()
	// The subscriber's goroutine may hold one event it could not hand
	// over yet (the channel is unbuffered), taken before the rest came.
	if queued > 2 {
		t.Fatalf("%d events queued for 1,002 changes of 2 entries: want at most one per entry", queued)
	}
	var got []Event
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev := <-ch:
			got = append(got, ev)
			if ev.Key == "ep2" {
				if ev.Kind != EventDelete {
					t.Fatalf("ep2's last event %+v, want its delete", ev)
				}
				if n := len(got); n > 3 || got[n-2].Key != "ep1" || got[n-2].Endpoint.Names[0] != "v999" {
					t.Fatalf("events %+v: want ep1's latest (v999), then ep2's delete", got)
				}
				return
			}
		case <-deadline:
			t.Fatalf("no delete of ep2 after %d events", len(got))
		}
	}
}

// TestSetMemberSaysWhoIsSeenForTheFirstTime: a host coming up is "back"
// each time, and "first" only the first time it is ever alive, so that it
// gets one heal exchange then, and the repeats only after being down (in a
// ring hundreds of hosts join at once, every pair meets once: the repeats
// cost four packets and three timers a pair).
func TestSetMemberSaysWhoIsSeenForTheFirstTime(t *testing.T) {
	clk := newFakeClock()
	s := newStore("h0", clk.now, time.Hour)
	for i, step := range []struct {
		alive, back, first bool
	}{
		{true, true, true},   // joins
		{true, false, false}, // the same news again
		{false, false, false},
		{true, true, false}, // back from down: not first
		{false, false, false},
		{true, true, false},
	} {
		back, first := s.setMemberFirst("h1", addrOf("h1"), netip.Addr{}, wireVersion, step.alive, false)
		if back != step.back || first != step.first {
			t.Errorf("step %d (alive %v): back %v first %v, want %v %v", i, step.alive, back, first, step.back, step.first)
		}
	}
	if back, first := s.setMemberFirst("h0", addrOf("h0"), netip.Addr{}, wireVersion, true, false); back || first {
		t.Errorf("this host itself: back %v first %v", back, first)
	}
}

// TestClaimsOfIsTheListingFiltered: claimsOf returns exactly the remote
// listing's entries whose MAC is asked for, and those sharing an IP with
// one of these, over random endpoints of three writers (colliding MACs and
// IPs, hex and plain IDs, deletions, one writer down, this host's own
// entries, IPv6 and no address).
func TestClaimsOfIsTheListingFiltered(t *testing.T) {
	// A network name in hex is stored decoded (appendStr): claimOf must
	// skip it as stored.
	for _, nw := range []string{"net-a", "c0ffee"} {
		t.Run(nw, func(t *testing.T) { testClaimsOf(t, nw) })
	}
}

func testClaimsOf(t *testing.T, nw string) {
	clk := newFakeClock()
	writers := []*store{newStore("h1", clk.now, time.Hour), newStore("h2", clk.now, time.Hour), newStore("h3", clk.now, time.Hour)}
	obs := observer(clk, nw, "h1", "h2", "h3")
	rng := rand.New(rand.NewPCG(7, 8))
	ipOf := func(i int) netip.Addr {
		switch i % 7 {
		case 0:
			return netip.Addr{}
		case 1:
			return netip.AddrFrom16([16]byte{0xfd, 15: byte(i)})
		}
		return netip.AddrFrom4([4]byte{10, 1, 0, byte(i % 40)})
	}
	for i := range 300 {
		ep := Endpoint{Network: nw, MAC: []byte{0x02, 0x42, 10, 1, 0, byte(rng.IntN(60))}, IP: ipOf(rng.IntN(400)),
			VTEP: netip.MustParseAddr("203.0.113.1")}
		ep.ID = fmt.Sprintf("ep%d", i)
		if i%2 == 0 {
			ep.ID = fmt.Sprintf("%064x", i) // stored as hex
		}
		if rng.IntN(5) == 0 {
			obs.put(tableEndpoints, ep.ID, encodeEndpoint(&ep))
			continue
		}
		w := writers[rng.IntN(len(writers))]
		e := putEntry(t, w, tableEndpoints, ep.ID, encodeEndpoint(&ep))
		obs.merge(&e, false)
		if rng.IntN(6) == 0 {
			d := delEntry(t, w, tableEndpoints, ep.ID)
			obs.merge(&d, false)
		}
	}
	obs.setMember("h3", netip.AddrPort{}, netip.Addr{}, 0, false, false)
	key := func(f found) string { return f.owner + "/" + f.key }
	for round := range 200 {
		var macs [][]byte
		for range 1 + rng.IntN(3) {
			macs = append(macs, []byte{0x02, 0x42, 10, 1, 0, byte(rng.IntN(64))})
		}
		hidden := round%2 == 0
		all := obs.listOf(tableEndpoints, nw, hidden, true)
		ips := map[netip.Addr]bool{}
		want := map[string]bool{}
		for _, f := range all {
			ep, err := decodeEndpoint(f.key, f.value)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range macs {
				if bytes.Equal(ep.MAC, m) {
					want[key(f)] = true
					if ep.IP.IsValid() {
						ips[ep.IP] = true
					}
				}
			}
		}
		for _, f := range all {
			if ep, _ := decodeEndpoint(f.key, f.value); ips[ep.IP] {
				want[key(f)] = true
			}
		}
		got := map[string]bool{}
		for _, f := range obs.claimsOf(nw, macs, hidden) {
			if got[key(f)] {
				t.Fatalf("round %d: %s returned twice", round, key(f))
			}
			got[key(f)] = true
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round %d, macs %x, hidden %v (-listing filtered +claimsOf):\n%s", round, macs, hidden, diff)
		}
	}
	if got := obs.claimsOf("no-such-net", [][]byte{{2, 0x42, 10, 1, 0, 1}}, true); len(got) != 0 {
		t.Errorf("an unknown network: %d entries", len(got))
	}
}

// TestUpForRestartsAtEachReturn: upFor is how long a host has been seen
// alive without a break: it grows while the host is up, is zero while it
// is down and for this host itself, and starts again when it comes back.
func TestUpForRestartsAtEachReturn(t *testing.T) {
	clk := newFakeClock()
	s := newStore("h0", clk.now, time.Hour)
	up := func(alive bool) { s.setMember("h1", addrOf("h1"), netip.Addr{}, wireVersion, alive, false) }
	check := func(step string, want time.Duration) {
		t.Helper()
		if got := s.upFor("h1"); got != want {
			t.Errorf("%s: upFor %s, want %s", step, got, want)
		}
	}
	check("unknown", 0)
	up(true)
	clk.advance(40 * time.Second)
	check("up 40 s", 40*time.Second)
	up(true) // the same news again: no break
	clk.advance(time.Second)
	check("told again it is up", 41*time.Second)
	up(false)
	clk.advance(time.Second)
	check("down", 0)
	up(true)
	clk.advance(3 * time.Second)
	check("back 3 s", 3*time.Second)
	if got := s.upFor("h0"); got != 0 {
		t.Errorf("this host: upFor %s, want 0", got)
	}
}
