package gossip

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
func dump(s *store) []string {
	var out []string
	for _, e := range s.snapshot() {
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
		writers[o] = newStore(o, clk.now)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var log []entry
	for i := range 300 {
		o := owners[rng.IntN(len(owners))]
		key := fmt.Sprintf("ep%d", rng.IntN(20))
		if rng.IntN(4) == 0 {
			if e, _, ok := writers[o].del(tableEndpoints, key); ok {
				log = append(log, e)
			}
			continue
		}
		ep := testEndpoint(key, "net", byte(i))
		if e, ok := writers[o].put(tableEndpoints, key, encodeEndpoint(&ep)); ok {
			log = append(log, e)
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
		s := newStore("observer", clk.now)
		for _, o := range owners {
			s.setAlive(o, true)
		}
		order := append([]entry(nil), log...)
		order = append(order, log[:len(log)/3]...) // duplicates
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for i := range order {
			s.merge(&order[i])
		}
		if diff := cmp.Diff(want, dump(s)); diff != "" {
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

func TestHideAndShowDeadHost(t *testing.T) {
	clk := newFakeClock()
	h1 := newStore("h1", clk.now)
	obs := newStore("obs", clk.now)
	obs.setAlive("h1", true)
	ep := testEndpoint("ep1", "net", 5)
	e, _ := h1.put(tableEndpoints, "ep1", encodeEndpoint(&ep))
	obs.merge(&e)
	ch, cancel := obs.subscribe(0)
	defer cancel()
	if got := drain(t, ch, 1)[0]; got.Kind != EventPut || got.Endpoint == nil || got.Endpoint.ID != "ep1" || got.Host != "h1" {
		t.Fatalf("replayed event = %+v, want put of ep1 from h1", got)
	}

	obs.setAlive("h1", false)
	got := drain(t, ch, 1)[0]
	if got.Kind != EventDelete || !got.Hidden || got.Endpoint == nil || got.Endpoint.IP != ep.IP {
		t.Fatalf("on host down got %+v, want hidden delete carrying the endpoint", got)
	}
	if v := obs.visible(tableEndpoints, "", false); len(v) != 0 {
		t.Fatalf("dead host's entries still visible: %v", v)
	}
	obs.setAlive("h1", true)
	if got := drain(t, ch, 1)[0]; got.Kind != EventPut || !got.Hidden || got.Key != "ep1" {
		t.Fatalf("on host up got %+v, want put of ep1", got)
	}
	if v := obs.visible(tableEndpoints, "ep1", true); len(v) != 1 {
		t.Fatalf("entry did not return with its host: %v", v)
	}
}

func TestReap(t *testing.T) {
	clk := newFakeClock()
	h1 := newStore("h1", clk.now)
	obs := newStore("obs", clk.now)
	obs.setAlive("h1", true)
	ep := testEndpoint("ep1", "net", 5)
	put, _ := h1.put(tableEndpoints, "ep1", encodeEndpoint(&ep))
	ep2 := testEndpoint("ep2", "net", 6)
	put2, _ := h1.put(tableEndpoints, "ep2", encodeEndpoint(&ep2))
	del, _, _ := h1.del(tableEndpoints, "ep2")
	for _, e := range []*entry{&put, &put2, &del} {
		obs.merge(e)
	}

	clk.advance(time.Minute)
	if tomb, dead := obs.reap(time.Hour, time.Hour); tomb+dead != 0 {
		t.Fatalf("reaped %d tombstones and %d entries before the bounds", tomb, dead)
	}
	// The tombstone still stops the older put.
	if r := obs.merge(&put2); r != mergeStale {
		t.Fatalf("older put merged over a tombstone: %v", r)
	}
	clk.advance(2 * time.Hour)
	if tomb, dead := obs.reap(time.Hour, time.Hour); tomb != 1 || dead != 0 {
		t.Fatalf("reaped %d tombstones, %d entries; want 1, 0", tomb, dead)
	}

	obs.setAlive("h1", false)
	clk.advance(30 * time.Minute)
	if _, dead := obs.reap(time.Hour, time.Hour); dead != 0 {
		t.Fatalf("reaped a host dead for less than the bound")
	}
	clk.advance(31 * time.Minute)
	if _, dead := obs.reap(time.Hour, time.Hour); dead != 1 {
		t.Fatalf("reaped %d entries of a host dead past the bound, want 1", dead)
	}
	// Old copies of a reaped host's entries are ignored while it stays dead.
	if r := obs.merge(&put); r != mergeReaped {
		t.Fatalf("merge of a reaped host's entry = %v, want ignored", r)
	}
	obs.setAlive("h1", true)
	if r := obs.merge(&put); r != mergeApplied {
		t.Fatalf("merge after the host returned = %v, want applied", r)
	}
}

// TestRestartedHostWritesWin shows that a host restarted with empty state
// writes versions above its old ones, and adopts its old entries.
func TestRestartedHostWritesWin(t *testing.T) {
	clk := newFakeClock()
	h1 := newStore("h1", clk.now)
	obs := newStore("obs", clk.now)
	obs.setAlive("h1", true)
	ep := testEndpoint("ep1", "net", 5)
	var last entry
	for range 5 { // many quick writes push the Lamport clock past the wall clock
		ep.IP = ep.IP.Next()
		last, _ = h1.put(tableEndpoints, "ep1", encodeEndpoint(&ep))
		obs.merge(&last)
	}
	clk.advance(time.Second)
	h1b := newStore("h1", clk.now) // restarted, empty
	if r := h1b.merge(&last); r != mergeAdopted {
		t.Fatalf("restarted host's merge of its old entry = %v, want adopted", r)
	}
	ep.IP = ep.IP.Next()
	e, ok := h1b.put(tableEndpoints, "ep1", encodeEndpoint(&ep))
	if !ok || e.version <= last.version {
		t.Fatalf("write after restart has version %d, want above %d", e.version, last.version)
	}
	if r := obs.merge(&e); r != mergeApplied {
		t.Fatalf("observer merge of the new write = %v, want applied", r)
	}
}
