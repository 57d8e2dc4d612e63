package ipam_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenet-net/tenet/ipam"
	"github.com/tenet-net/tenet/ipam/ipamtest"
)

// blockingReplica is a Replica whose writes block until released, as
// gossip's Put can behind a peer that is unreachable but not yet declared
// dead (a TCP send per peer).
type blockingReplica struct {
	ipam.Replica
	gate    chan struct{}
	blocked atomic.Int32
}

func (b *blockingReplica) Put(key string, value []byte) error {
	b.blocked.Add(1)
	defer b.blocked.Add(-1)
	<-b.gate
	return b.Replica.Put(key, value)
}

func (b *blockingReplica) Delete(key string) error {
	b.blocked.Add(1)
	defer b.blocked.Add(-1)
	<-b.gate
	return b.Replica.Delete(key)
}

// within runs fn and fails the test if it has not returned by d: a call that
// never returns is the failure being tested for.
func within(t *testing.T, d time.Duration, what string, fn func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(d):
		t.Fatalf("%s: still blocked after %v", what, d)
	}
}

// TestBlockedReplicaDoesNotStallAllocation: while every write to the
// replicated table blocks, this host still creates pools, confirms gateways
// and hands out and takes back addresses from its own space (issue 13: no
// lock across a call into another component). Once the writes go through,
// the other hosts see everything. On f959d08 RequestPool blocks in
// Replica.Put under the IPAM's mutex, and so does every other call.
func TestBlockedReplicaDoesNotStallAllocation(t *testing.T) {
	c := ipamtest.NewCluster(0, 31)
	rep := &blockingReplica{Replica: c.Node("a"), gate: make(chan struct{})}
	cfg := ipam.DefaultConfig()
	cfg.Host, cfg.Seeds, cfg.Store, cfg.AnswerTimeout = "a", []string{"a"}, &ipam.MemStore{}, 200*time.Millisecond
	m, err := ipam.New(cfg, rep)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = m.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	var once sync.Once
	release := func() { once.Do(func() { close(rep.gate) }) }
	t.Cleanup(release) // before Run stops, so the writer can return
	b := startHost(t, c, "b", []string{"a"})

	var pools []ipam.Pool
	var held []netip.Prefix
	within(t, 5*time.Second, "pools, gateways and 150 addresses with every write blocked", func() error {
		for _, subnet := range []string{"10.1.0.0/24", "10.2.0.0/28"} {
			req, err := ipam.ParsePoolRequest("default", "", subnet, "", map[string]string{"tenant": "acme"}, false)
			if err != nil {
				return err
			}
			p, err := m.RequestPool(ctxT(t), req)
			if err != nil {
				return err
			}
			if _, err := m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{Kind: ipam.KindGateway}); err != nil {
				return err
			}
			pools = append(pools, p)
		}
		for range 150 { // three blocks taken from the genesis share, each one a write
			a, err := m.RequestAddress(ctxT(t), pools[0].ID, ipam.AddressRequest{})
			if err != nil {
				return err
			}
			held = append(held, a)
		}
		for _, a := range held[:50] {
			if err := m.ReleaseAddress(ctxT(t), pools[0].ID, a.Addr()); err != nil {
				return err
			}
		}
		return nil
	})
	eventually(t, 5*time.Second, func() error {
		if rep.blocked.Load() == 0 {
			return errors.New("no write is blocked: the test exercised nothing")
		}
		return nil
	})
	if st, _ := m.Status(pools[0].ID); len(st.Addresses) != 100 {
		t.Fatalf("a holds %d addresses, want 100", len(st.Addresses))
	}
	release()
	// Everything queued reaches the table: b sees a's blocks and pools.
	mustPool(t, b, "acme", "10.1.0.0/24", "")
	eventually(t, 5*time.Second, func() error {
		blocks, pools := 0, 0
		for _, e := range c.Node("b").List("ipam/") {
			if e.Host != "a" {
				continue
			}
			if bytes.HasPrefix([]byte(e.Key), []byte("ipam/block/")) {
				blocks++
			}
			if bytes.HasPrefix([]byte(e.Key), []byte("ipam/pool/")) {
				pools++
			}
		}
		if blocks < 3 || pools < 2 {
			return fmt.Errorf("b sees %d block and %d pool entries of a, want >= 3 and 2", blocks, pools)
		}
		return nil
	})
	// And b obtains space from a as usual.
	if _, err := b.m.RequestAddress(ctxT(t), pools[0].ID, ipam.AddressRequest{}); err != nil {
		t.Fatal(err)
	}
}

// TestExpiredDeadlineLeavesNothing: a call whose deadline has passed at its
// commit point changes nothing (issue 13). On f959d08 RequestAddress with
// space in an owned block ignores ctx and allocates an address no caller
// will ever release.
func TestExpiredDeadlineLeavesNothing(t *testing.T) {
	c := ipamtest.NewCluster(0, 32)
	h := startHost(t, c, "a", []string{"a"}, func(cfg *ipam.Config) { cfg.Store = &ipam.MemStore{} })
	p := mustPool(t, h, "acme", "10.1.0.0/24", "")
	first, err := h.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
	if err != nil {
		t.Fatal(err)
	}
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	for _, tc := range []struct {
		name string
		req  ipam.AddressRequest
	}{
		{"any address (fast path)", ipam.AddressRequest{}},
		{"--ip in an owned block", ipam.AddressRequest{Addr: netip.MustParseAddr("10.1.0.77")}},
		{"--gateway", ipam.AddressRequest{Kind: ipam.KindGateway, Addr: netip.MustParseAddr("10.1.0.254")}},
		{"--aux-address", ipam.AddressRequest{Kind: ipam.KindAux, Addr: netip.MustParseAddr("10.1.0.253")}},
	} {
		if a, err := h.m.RequestAddress(expired, p.ID, tc.req); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s after the deadline: %v, %v; want context.DeadlineExceeded", tc.name, a, err)
		}
	}
	req, err := ipam.ParsePoolRequest("default", "", "10.9.0.0/24", "", map[string]string{"tenant": "acme"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.m.RequestPool(expired, req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("RequestPool after the deadline: %v", err)
	}
	if _, err := h.m.Status(req.PoolID()); !errors.Is(err, ipam.ErrUnknownPool) {
		t.Errorf("a pool requested after the deadline exists: %v", err)
	}
	if err := h.m.ReleaseAddress(expired, p.ID, first.Addr()); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ReleaseAddress after the deadline: %v", err)
	}
	st, _ := h.m.Status(p.ID)
	if len(st.Addresses) != 1 || st.Addresses[0] != first.Addr() || st.Pool.Gateway != p.Gateway {
		t.Fatalf("calls after their deadline changed the pool: %+v", st)
	}
	// The next request gets what the expired one would have had.
	if a, err := h.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{}); err != nil || a.Addr() != first.Addr().Next() {
		t.Fatalf("next request = %v, %v; want %s", a, err, first.Addr().Next())
	}
	for _, a := range []string{"10.1.0.254", "10.1.0.253"} { // neither reserved
		if _, err := h.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{Addr: netip.MustParseAddr(a)}); err != nil {
			t.Fatalf("--ip %s: %v", a, err)
		}
	}
}

// slowStore is a MemStore whose Save blocks while held.
type slowStore struct {
	ipam.MemStore
	inflight atomic.Int32
	mu       sync.Mutex
	hold     chan struct{} // nil: not held
}

func (s *slowStore) Save(b []byte) error {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	s.mu.Lock()
	h := s.hold
	s.mu.Unlock()
	if h != nil {
		<-h
	}
	return s.MemStore.Save(b)
}

func (s *slowStore) holdSaves() {
	s.mu.Lock()
	s.hold = make(chan struct{})
	s.mu.Unlock()
}

func (s *slowStore) releaseSaves() {
	s.mu.Lock()
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
	s.mu.Unlock()
}

// TestDeadlineWhileSavingLeavesNothing: an allocation is answered only once
// saved; if the deadline passes while the store is slow, the allocation is
// taken back, in memory and then on disk, so a restart does not bring it
// back either. On f959d08 the call waits for the store under the mutex and
// then answers with an address after its deadline.
func TestDeadlineWhileSavingLeavesNothing(t *testing.T) {
	c := ipamtest.NewCluster(0, 33)
	store := &slowStore{}
	h := startHost(t, c, "a", []string{"a"}, func(cfg *ipam.Config) { cfg.Store = store })
	p := mustPool(t, h, "acme", "10.1.0.0/24", "")
	t.Cleanup(store.releaseSaves)
	store.holdSaves()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	type result struct {
		a   netip.Prefix
		err error
	}
	res := make(chan result, 1)
	go func() {
		a, err := h.m.RequestAddress(ctx, p.ID, ipam.AddressRequest{})
		res <- result{a, err}
	}()
	var r result
	select {
	case r = <-res:
	case <-time.After(5 * time.Second):
		store.releaseSaves()
		r = <-res
	}
	if !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("request while the store hangs past the deadline = %v, %v; want context.DeadlineExceeded", r.a, r.err)
	}
	if st, _ := h.m.Status(p.ID); len(st.Addresses) != 0 {
		t.Fatalf("given up, yet %v stays allocated", st.Addresses)
	}
	store.releaseSaves()
	want := netip.MustParseAddr("10.1.0.2")
	eventually(t, 5*time.Second, func() error {
		// The save under way when the call gave up holds the address; a
		// later one must not.
		b, _ := store.Load()
		if store.inflight.Load() > 0 || bytes.Contains(b, []byte(`"`+want.String()+`"`)) {
			return fmt.Errorf("the store still holds %s: %s", want, b)
		}
		return nil
	})
	h.halt()
	h2 := startHost(t, c, "a", []string{"a"}, func(cfg *ipam.Config) { cfg.Store = store })
	if st, _ := h2.m.Status(p.ID); len(st.Addresses) != 0 {
		t.Fatalf("after a restart, %v is allocated again", st.Addresses)
	}
	if a, err := h2.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{}); err != nil || a.Addr() != want {
		t.Fatalf("first address after the restart = %v, %v; want %s", a, err, want)
	}
}

// failingStore fails every save while failing is set.
type failingStore struct {
	ipam.MemStore
	failing atomic.Bool
}

func (f *failingStore) Save(b []byte) error {
	if f.failing.Load() {
		return errors.New("disk full")
	}
	return f.MemStore.Save(b)
}

// TestFailedSaveRefusesTheAllocation: an address is handed out only once it
// is on disk; a failing store makes the request fail with the store's error
// and leaves nothing allocated.
func TestFailedSaveRefusesTheAllocation(t *testing.T) {
	c := ipamtest.NewCluster(0, 34)
	store := &failingStore{}
	h := startHost(t, c, "a", []string{"a"}, func(cfg *ipam.Config) { cfg.Store = store })
	p := mustPool(t, h, "acme", "10.1.0.0/24", "")
	store.failing.Store(true)
	_, err := h.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("disk full")) {
		t.Fatalf("request with a failing store: err = %v, want the store's error", err)
	}
	if st, _ := h.m.Status(p.ID); len(st.Addresses) != 0 {
		t.Fatalf("refused, yet %v stays allocated", st.Addresses)
	}
	store.failing.Store(false)
	if _, err := h.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{}); err != nil {
		t.Fatalf("after the store recovered: %v", err)
	}
}
