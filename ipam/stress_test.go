package ipam_test

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/ipam"
	"github.com/tenet-net/tenet/ipam/ipamtest"
)

// ledger records who holds each address right now; a second holder is a
// duplicate, the one thing IPAM must never produce.
type ledger struct {
	mu   sync.Mutex
	held map[netip.Addr]string
	dups []string
	n    int // allocations ever
}

func newLedger() *ledger { return &ledger{held: map[netip.Addr]string{}} }

func (l *ledger) take(a netip.Addr, who string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	if prev, ok := l.held[a]; ok {
		l.dups = append(l.dups, fmt.Sprintf("%s held by %s and %s", a, prev, who))
		return
	}
	l.held[a] = who
}

// give forgets a before it is released, so a reuse right after the release
// is not mistaken for a duplicate.
func (l *ledger) give(a netip.Addr) {
	l.mu.Lock()
	delete(l.held, a)
	l.mu.Unlock()
}

func (l *ledger) of(who string) []netip.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []netip.Addr
	for a, h := range l.held {
		if h == who {
			out = append(out, a)
		}
	}
	return out
}

func (l *ledger) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.dups) > 0 {
		t.Fatalf("%d duplicates, first: %v", len(l.dups), l.dups[:min(5, len(l.dups))])
	}
}

// allocate has workers goroutines on h request n addresses in total,
// recording them. Errors of the kinds in allowed end a worker early.
func allocate(t *testing.T, h *host, poolID string, n, workers int, l *ledger, allowed ...error) (got int, errs []error) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	per := n / workers
	for w := range workers {
		k := per
		if w == workers-1 {
			k = n - per*(workers-1)
		}
		wg.Go(func() {
			for range k {
				a, err := h.m.RequestAddress(ctxT(t), poolID, ipam.AddressRequest{})
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				l.take(a.Addr(), h.name)
				mu.Lock()
				got++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		ok := false
		for _, a := range allowed {
			ok = ok || errors.Is(err, a)
		}
		if !ok {
			t.Fatalf("host %s: %v", h.name, err)
		}
	}
	return got, errs
}

func releaseAll(t *testing.T, h *host, poolID string, l *ledger) {
	t.Helper()
	var wg sync.WaitGroup
	addrs := l.of(h.name)
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < len(addrs); i += 4 {
				l.give(addrs[i])
				if err := h.m.ReleaseAddress(ctxT(t), poolID, addrs[i]); err != nil {
					t.Errorf("host %s release %s: %v", h.name, addrs[i], err)
				}
			}
		})
	}
	wg.Wait()
}

// accountFor checks, once every address is released, that no address of
// the pool is owned by two hosts, that everything owned is free, and that
// the free addresses plus the reserved ones in owned parts plus the
// addresses nobody took yet make the whole pool. The pool's reserved
// addresses are assumed to be its network address, gateway (the next one)
// and broadcast address.
func accountFor(t *testing.T, hosts []*host, poolID string, rng netip.Prefix) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		var parts []netip.Prefix
		owner := map[netip.Prefix]string{}
		free, owned := 0, 0
		for _, h := range hosts {
			st, err := h.m.Status(poolID)
			if err != nil {
				return err
			}
			if len(st.Addresses) != 0 {
				return fmt.Errorf("host %s still has %d addresses", h.name, len(st.Addresses))
			}
			for _, b := range st.Blocks {
				for _, q := range parts {
					if q.Overlaps(b.Prefix) {
						return fmt.Errorf("%s of %s overlaps %s of %s", b.Prefix, h.name, q, owner[q])
					}
				}
				parts = append(parts, b.Prefix)
				owner[b.Prefix] = h.name
				free += b.Avail
				owned += 1 << (32 - b.Prefix.Bits())
			}
		}
		bcast := rng.Addr()
		for range (1 << (32 - rng.Bits())) - 1 {
			bcast = bcast.Next()
		}
		reserved := 0
		for _, r := range []netip.Addr{rng.Addr(), rng.Addr().Next(), bcast} {
			for _, q := range parts {
				if q.Contains(r) {
					reserved++
				}
			}
		}
		total := 1 << (32 - rng.Bits())
		if free+reserved != owned || owned > total {
			return fmt.Errorf("owned %d = free %d + reserved %d does not hold (pool %s of %d)", owned, free, reserved, rng, total)
		}
		return nil
	})
}

func TestStressBlocksMove(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 900
	}
	c := ipamtest.NewCluster(2*time.Millisecond, 11)
	seeds := []string{"h0"} // every block starts on h0: the others must obtain theirs
	var hosts []*host
	for _, name := range []string{"h0", "h1", "h2"} {
		hosts = append(hosts, startHost(t, c, name, seeds))
	}
	var p ipam.Pool
	for _, h := range hosts {
		p = mustPool(t, h, "acme", "10.10.0.0/20", "")
	}
	l := newLedger()
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Go(func() { allocate(t, h, p.ID, n/3, 4, l) })
	}
	wg.Wait()
	l.check(t)
	before, _ := hosts[1].m.Status(p.ID)
	// h1 empties its blocks; h2 then needs more than h0 has left, so h1's
	// empty blocks move to h2.
	releaseAll(t, hosts[1], p.ID, l)
	// Leave room for the partial blocks h0 and h1 keep for themselves.
	more := 4093 - n*2/3 - 200
	if got, _ := allocate(t, hosts[2], p.ID, more, 4, l); got != more {
		t.Fatalf("h2 got %d of %d", got, more)
	}
	l.check(t)
	after, _ := hosts[1].m.Status(p.ID)
	if len(after.Blocks) >= len(before.Blocks) {
		t.Fatalf("h1 kept %d of its %d blocks; none moved to h2", len(after.Blocks), len(before.Blocks))
	}
	for _, h := range hosts {
		releaseAll(t, h, p.ID, l)
	}
	accountFor(t, hosts, p.ID, p.Subnet)
	checkEpochs(t, c.Node("h0"))
	t.Logf("%d allocations, h1 handed %d blocks on", l.n, len(before.Blocks)-len(after.Blocks))
}

func TestStressPartition(t *testing.T) {
	n := 1800
	if testing.Short() {
		n = 600
	}
	c := ipamtest.NewCluster(2*time.Millisecond, 12)
	seeds := []string{"h0", "h1", "h2"}
	var hosts []*host
	for _, name := range seeds {
		hosts = append(hosts, startHost(t, c, name, seeds))
	}
	var p ipam.Pool
	for _, h := range hosts {
		p = mustPool(t, h, "acme", "10.20.0.0/20", "")
	}
	l := newLedger()
	run := func(k int, allowed ...error) {
		var wg sync.WaitGroup
		for _, h := range hosts {
			wg.Go(func() { allocate(t, h, p.ID, k, 3, l, allowed...) })
		}
		wg.Wait()
	}
	run(n / 6)
	c.Partition([]string{"h0"}, []string{"h1", "h2"})
	// Both sides keep allocating from what they own; h1 and h2 may also
	// trade blocks. h0 runs out of its share and cannot reach anyone.
	run(n/6, ipam.ErrUnavailable, ipam.ErrExhausted)
	_, errs := allocate(t, hosts[0], p.ID, 4093, 1, l, ipam.ErrUnavailable, ipam.ErrExhausted)
	if len(errs) == 0 || !errors.Is(errs[0], ipam.ErrUnavailable) {
		t.Fatalf("h0 cut off, out of space: errs = %v, want ErrUnavailable", errs)
	}
	l.check(t)
	c.Heal()
	releaseAll(t, hosts[1], p.ID, l)
	// After healing h0 can get h1's now empty blocks.
	eventually(t, 10*time.Second, func() error {
		a, err := hosts[0].m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
		if err == nil {
			l.take(a.Addr(), "h0")
		}
		return err
	})
	run(n/6, ipam.ErrExhausted, ipam.ErrUnavailable)
	l.check(t)
	for _, h := range hosts {
		releaseAll(t, h, p.ID, l)
	}
	accountFor(t, hosts, p.ID, p.Subnet)
	checkEpochs(t, c.Node("h1"))
	t.Logf("%d allocations", l.n)
}

// TestStressChurn keeps a small pool under allocate/release churn on three
// hosts, so that blocks empty out and move while their old and new owners
// are both busy allocating.
func TestStressChurn(t *testing.T) {
	ops := 1500
	if testing.Short() {
		ops = 400
	}
	c := ipamtest.NewCluster(time.Millisecond, 13)
	seeds := []string{"h0"}
	var hosts []*host
	for _, name := range []string{"h0", "h1", "h2"} {
		hosts = append(hosts, startHost(t, c, name, seeds, func(cfg *ipam.Config) { cfg.BlockBitsV4 = 28 }))
	}
	var p ipam.Pool
	for _, h := range hosts {
		p = mustPool(t, h, "acme", "10.30.0.0/24", "")
	}
	l := newLedger()
	var wg sync.WaitGroup
	var mu sync.Mutex
	gotBy := map[string]int{}
	for _, h := range hosts {
		for w := range 3 {
			wg.Go(func() {
				var mine []netip.Addr
				for i := range ops {
					// Grow to ~40 addresses, then shrink to ~0, repeatedly.
					if (i/40)%2 == 0 {
						a, err := h.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
						if err != nil {
							if !errors.Is(err, ipam.ErrExhausted) && !errors.Is(err, ipam.ErrUnavailable) {
								t.Errorf("host %s: %v", h.name, err)
								return
							}
							continue
						}
						l.take(a.Addr(), h.name)
						mine = append(mine, a.Addr())
						mu.Lock()
						gotBy[h.name]++
						mu.Unlock()
					} else if len(mine) > 0 {
						a := mine[(i*7+w)%len(mine)]
						mine = slicesDelete(mine, a)
						l.give(a)
						if err := h.m.ReleaseAddress(ctxT(t), p.ID, a); err != nil {
							t.Errorf("host %s release %s: %v", h.name, a, err)
							return
						}
					}
				}
			})
		}
	}
	wg.Wait()
	l.check(t)
	for _, h := range hosts {
		if gotBy[h.name] == 0 {
			t.Fatalf("host %s never got an address: %v", h.name, gotBy)
		}
		releaseAll(t, h, p.ID, l)
	}
	accountFor(t, hosts, p.ID, p.Subnet)
	checkEpochs(t, c.Node("h2"))
	t.Logf("%d allocations: %v", l.n, gotBy)
}

func slicesDelete(s []netip.Addr, a netip.Addr) []netip.Addr {
	for i, x := range s {
		if x == a {
			return append(s[:i], s[i+1:]...)
		}
	}
	return s
}

// TestStressPartitionWhileAllocating cuts the cluster while requests and
// handovers are in flight: only h0 starts with space, so blocks must move,
// and some handovers are caught by the partition. Each side keeps
// allocating from what it owns; after healing there is no duplicate and no
// block with two owners.
func TestStressPartitionWhileAllocating(t *testing.T) {
	attempts := 500
	if testing.Short() {
		attempts = 150
	}
	c := ipamtest.NewCluster(2*time.Millisecond, 14)
	seeds := []string{"h0"}
	var hosts []*host
	for _, name := range []string{"h0", "h1", "h2"} {
		hosts = append(hosts, startHost(t, c, name, seeds, func(cfg *ipam.Config) {
			cfg.BlockBitsV4 = 28
			cfg.AnswerTimeout = 100 * time.Millisecond
		}))
	}
	var p ipam.Pool
	for _, h := range hosts {
		p = mustPool(t, h, "acme", "10.40.0.0/21", "")
	}
	l := newLedger()
	var mu sync.Mutex
	unavailable := map[string]int{}
	gotDuring, gotAll := map[string]int{}, map[string]int{}
	partitioned := false
	var wg sync.WaitGroup
	for _, h := range hosts {
		for w := range 3 {
			wg.Go(func() {
				var mine []netip.Addr
				for i := range attempts {
					if i%5 == 4 && len(mine) > 0 { // some churn, so blocks empty and move
						a := mine[(i+w)%len(mine)]
						mine = slicesDelete(mine, a)
						l.give(a)
						if err := h.m.ReleaseAddress(ctxT(t), p.ID, a); err != nil {
							t.Errorf("host %s release %s: %v", h.name, a, err)
							return
						}
						continue
					}
					a, err := h.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
					mu.Lock()
					switch {
					case errors.Is(err, ipam.ErrUnavailable):
						unavailable[h.name]++
					case errors.Is(err, ipam.ErrExhausted):
					case err != nil:
						mu.Unlock()
						t.Errorf("host %s: %v", h.name, err)
						return
					default:
						gotAll[h.name]++
						if partitioned {
							gotDuring[h.name]++
						}
					}
					mu.Unlock()
					if err == nil {
						l.take(a.Addr(), h.name)
						mine = append(mine, a.Addr())
					}
				}
			})
		}
	}
	workers := make(chan struct{})
	go func() { wg.Wait(); close(workers) }()
	// Partition once every host has allocated (so each owns blocks), heal
	// once both sides made progress
	// during it (or the workers are done), polling without sleeping on a
	// condition that can no longer change.
	waitFor := func(cond func() bool) {
		for !cond() {
			select {
			case <-workers:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}
	waitFor(func() bool {
		mu.Lock()
		defer mu.Unlock()
		return gotAll["h0"] >= 30 && gotAll["h1"] >= 30 && gotAll["h2"] >= 30
	})
	mu.Lock()
	partitioned = true
	mu.Unlock()
	c.Partition([]string{"h0", "h1"}, []string{"h2"})
	waitFor(func() bool {
		mu.Lock()
		defer mu.Unlock()
		return gotDuring["h2"] >= 20 && gotDuring["h0"]+gotDuring["h1"] >= 20
	})
	mu.Lock()
	partitioned = false
	during := maps.Clone(gotDuring)
	mu.Unlock()
	c.Heal()
	<-workers
	l.check(t)
	if during["h2"] == 0 || during["h0"]+during["h1"] == 0 {
		t.Fatalf("a side made no progress during the partition: %v", during)
	}
	for _, h := range hosts {
		releaseAll(t, h, p.ID, l)
	}
	accountFor(t, hosts, p.ID, p.Subnet)
	for _, h := range hosts {
		checkEpochs(t, c.Node(h.name))
	}
	t.Logf("%d allocations; during the partition %v; unavailable %v", l.n, gotDuring, unavailable)
}

// TestStressRemoveHostUnderLoad removes a dead host, from two hosts at
// once, while both keep allocating and releasing: its blocks go to one
// heir, whose allocations from them never collide with the other's.
func TestStressRemoveHostUnderLoad(t *testing.T) {
	ops := 600
	if testing.Short() {
		ops = 200
	}
	c := ipamtest.NewCluster(time.Millisecond, 15)
	seeds := []string{"a", "b", "c"}
	small := func(cfg *ipam.Config) { cfg.BlockBitsV4 = 28 }
	a := startHost(t, c, "a", seeds, small)
	b := startHost(t, c, "b", seeds, small)
	d := startHost(t, c, "c", seeds, small)
	var p ipam.Pool
	for _, h := range []*host{a, b, d} {
		p = mustPool(t, h, "acme", "10.50.0.0/23", "")
	}
	l := newLedger()
	if got, _ := allocate(t, d, p.ID, 100, 2, l); got != 100 {
		t.Fatalf("c got %d of 100", got)
	}
	eventually(t, 5*time.Second, func() error { // everyone knows c's blocks
		for _, n := range []string{"a", "b"} {
			seen := 0
			for _, e := range c.Node(n).List("ipam/block/") {
				if e.Host == "c" {
					seen++
				}
			}
			if seen < 7 {
				return fmt.Errorf("%s sees %d of c's block entries", n, seen)
			}
		}
		return nil
	})
	d.halt()
	c.Kill("c")
	for _, x := range l.of("c") { // c's containers are gone for good
		l.give(x)
	}
	var wg sync.WaitGroup
	for _, h := range []*host{a, b} {
		wg.Go(func() {
			if err := h.m.RemoveHost(ctxT(t), "c"); err != nil {
				t.Errorf("%s: %v", h.name, err)
			}
		})
		for w := range 2 {
			wg.Go(func() {
				var mine []netip.Addr
				for i := range ops {
					if (i/50)%2 == 1 && len(mine) > 0 {
						x := mine[(i+w)%len(mine)]
						mine = slicesDelete(mine, x)
						l.give(x)
						if err := h.m.ReleaseAddress(ctxT(t), p.ID, x); err != nil {
							t.Errorf("%s release %s: %v", h.name, x, err)
							return
						}
						continue
					}
					x, err := h.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
					if errors.Is(err, ipam.ErrExhausted) || errors.Is(err, ipam.ErrUnavailable) {
						continue
					}
					if err != nil {
						t.Errorf("%s: %v", h.name, err)
						return
					}
					l.take(x.Addr(), h.name)
					mine = append(mine, x.Addr())
				}
			})
		}
	}
	wg.Wait()
	l.check(t)
	// Afterwards the pool can be filled completely by a and b: c's blocks
	// were reclaimed, none is stranded.
	for _, h := range []*host{a, b} {
		allocate(t, h, p.ID, 600, 2, l, ipam.ErrExhausted, ipam.ErrUnavailable)
	}
	l.check(t)
	if held := len(l.of("a")) + len(l.of("b")); held != 512-3 {
		t.Fatalf("a and b hold %d addresses when full, want all 509: blocks stranded", held)
	}
	for _, h := range []*host{a, b} {
		releaseAll(t, h, p.ID, l)
	}
	accountFor(t, []*host{a, b}, p.ID, p.Subnet)
	checkEpochs(t, c.Node("a"))
	checkEpochs(t, c.Node("b"))
	t.Logf("%d allocations", l.n)
}
