package gossip

// Regression tests for issue 12, at test scale. Each failed on f959d08
// (the figures are in the commit that added them); the benchmark script
// scripts/bench/gossip-scale.sh measures the same at N = 50, 200, 500.

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// tombstones counts a node's deletion markers.
func tombstones(n *Node) int {
	c := 0
	for _, line := range fullState(n) {
		if strings.Contains(line, "del=true") {
			c++
		}
	}
	return c
}

// TestTombstonesGoneWithinTwiceTTL deletes endpoints on both sides of a
// partition, heals it, restarts a host, and checks that every deletion
// marker is gone from every host within twice its TTL and never comes back.
func TestTombstonesGoneWithinTwiceTTL(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for tombstones to expire through a partition")
	}
	const ttl = 4 * time.Second
	c := newTestCluster(t)
	c.tune = func(cfg *Config) {
		cfg.TombstoneTTL = ttl
		cfg.ReapInterval = 250 * time.Millisecond
		cfg.SyncInterval = 500 * time.Millisecond
		cfg.PushPullInterval = time.Second
		cfg.tuneMemberlist = func(mc *memberlist.Config) { mc.GossipToTheDeadTime = time.Second }
	}
	nodes := c.startN(6)
	awaitMembers(t, nodes, 6, 15*time.Second)
	const per = 20
	for i, n := range nodes {
		for j := range per {
			if err := n.Endpoints().Put(testEndpoint(fmt.Sprintf("ep-%d-%d", i, j), "net-a", byte(j))); err != nil {
				t.Fatal(err)
			}
		}
	}
	awaitSameView(t, nodes, 6+6*per, 20*time.Second)

	a, b := nodes[:3], nodes[3:]
	c.net.Partition(addrsOf(a), addrsOf(b))
	awaitMembers(t, a, 3, hideBound(a[0].cfg, 6))
	awaitMembers(t, b, 3, hideBound(a[0].cfg, 6))
	for i, n := range nodes {
		for j := range per / 2 {
			n.Endpoints().Delete(fmt.Sprintf("ep-%d-%d", i, j))
		}
	}
	last := time.Now()
	<-time.After(time.Second) // the deletes spread on each side: the scenario's length
	c.net.Heal()
	// h5 restarts while the sides rejoin: it leaves, and comes back empty.
	c.stops[nodes[5]]()
	cfg := testConfig(t, "h5", c.key)
	cfg.VTEP = netip.AddrFrom4([4]byte{203, 0, 113, 15})
	cfg.Seeds = []string{nodes[0].Addr()}
	nodes[5] = c.start(cfg)
	awaitMembers(t, nodes, 6, 30*time.Second)
	awaitSameView(t, nodes, 6+6*per/2, time.Until(last.Add(2*ttl)))

	deadline := last.Add(2 * ttl)
	eventually(t, time.Until(deadline), "no tombstone anywhere within 2x TTL", func() error {
		for _, n := range nodes {
			if k := tombstones(n); k != 0 {
				return fmt.Errorf("%s holds %d", n.cfg.NodeName, k)
			}
		}
		return nil
	})
	t.Logf("every tombstone gone %s after the last delete (TTL %s)", time.Since(last).Round(10*time.Millisecond), ttl)
	// None comes back: sample through another TTL.
	for end := time.Now().Add(ttl); time.Now().Before(end); {
		for _, n := range nodes {
			if k := tombstones(n); k != 0 {
				t.Fatalf("%s holds %d tombstones again %s after the last delete", n.cfg.NodeName, k, time.Since(last))
			}
		}
		<-time.After(100 * time.Millisecond) // sampling interval
	}
	awaitSameView(t, nodes, 6+6*per/2, time.Second)
}

// TestDeleteMissedPastTTLIsNotTakenBack: a host that attached a network
// first (so it never caught up with it from another host) deletes an
// endpoint while cut off, and its marker expires before the sides meet
// again. The other side's live copy must be ended by a fresh tombstone, not
// taken back by its owner as an entry from a previous life: that brought
// deleted endpoints back for good.
func TestDeleteMissedPastTTLIsNotTakenBack(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for a tombstone to expire through a partition")
	}
	const ttl = 2 * time.Second
	c := newTestCluster(t)
	c.tune = func(cfg *Config) {
		cfg.TombstoneTTL = ttl
		cfg.ReapInterval = 100 * time.Millisecond
		cfg.SyncInterval = 500 * time.Millisecond
		cfg.PushPullInterval = time.Second
		cfg.tuneMemberlist = func(mc *memberlist.Config) { mc.GossipToTheDeadTime = time.Second }
	}
	nodes := c.startN(2)
	awaitMembers(t, nodes, 2, 15*time.Second)
	h0, h1 := nodes[0], nodes[1]
	if err := h0.Endpoints().Put(testEndpoint("gone", "net-a", 1)); err != nil { // h0 attaches net-a first
		t.Fatal(err)
	}
	awaitSynced(t, nodes[:1], "net-a", 5*time.Second)
	if err := h1.Endpoints().Put(testEndpoint("kept", "net-a", 2)); err != nil {
		t.Fatal(err)
	}
	awaitSameView(t, nodes, 2+2, 10*time.Second)
	c.net.Partition(addrsOf(nodes[:1]), addrsOf(nodes[1:]))
	awaitMembers(t, nodes[:1], 1, hideBound(h0.cfg, 2))
	awaitMembers(t, nodes[1:], 1, hideBound(h0.cfg, 2))
	h0.Endpoints().Delete("gone")
	events, cancel := h0.Subscribe(64) // after the delete: its replay holds no "gone"
	defer cancel()
	eventually(t, ttl+5*time.Second, "h0's marker reaped", func() error {
		if k := tombstones(h0); k != 0 {
			return fmt.Errorf("h0 holds %d tombstones", k)
		}
		return nil
	})
	if _, ok := h1.Endpoints().Get("gone"); ok {
		t.Fatal("h1 shows an endpoint of a host it counts down")
	}
	c.net.Heal()
	awaitMembers(t, nodes, 2, 30*time.Second)
	eventually(t, 15*time.Second, "the missed delete reaches h1", func() error {
		for _, n := range nodes {
			for _, ep := range n.Endpoints().ListNetwork("net-a", true) {
				if ep.ID == "gone" {
					return fmt.Errorf("%s holds gone (down since %v)", n.cfg.NodeName, ep.DownSince)
				}
			}
		}
		return nil
	})
	if got := h0.Stats().EntriesRetired; got == 0 {
		t.Fatal("h0 retired nothing: the copy went some other way")
	}
	for {
		select {
		case ev := <-events:
			if ev.Kind == EventPut && ev.Key == "gone" {
				t.Fatalf("h0 took its deleted endpoint back: %+v", ev)
			}
			continue
		default:
		}
		break
	}
	awaitSameView(t, nodes, 2+1, 5*time.Second)
}

func addrsOf(ns []*Node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Addr())
	}
	return out
}

// TestSyncToNewHostIgnoresDeletions: what a new host is sent for a
// network does not grow with the deletions ever made on it.
func TestSyncToNewHostIgnoresDeletions(t *testing.T) {
	c := newTestCluster(t)
	nodes := c.startN(3)
	awaitMembers(t, nodes, 3, 15*time.Second)
	const live, deleted = 100, 1000
	for _, nw := range []string{"clean", "churned"} {
		for i := range live {
			if err := nodes[i%3].Endpoints().Put(testEndpoint(fmt.Sprintf("%s-%d", nw, i), nw, byte(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range deleted {
		id := fmt.Sprintf("gone-%d", i)
		if err := nodes[i%3].Endpoints().Put(testEndpoint(id, "churned", byte(i))); err != nil {
			t.Fatal(err)
		}
		nodes[i%3].Endpoints().Delete(id)
	}
	awaitSameView(t, nodes, 3*2+2*live, 20*time.Second)

	received := map[string]uint64{}
	for _, nw := range []string{"clean", "churned"} {
		cfg := testConfig(t, "new-"+nw, c.key)
		cfg.Seeds = []string{nodes[0].Addr()}
		n := c.start(cfg)
		if err := n.Attachments().Attach(nw); err != nil {
			t.Fatal(err)
		}
		eventually(t, 15*time.Second, n.cfg.NodeName+" has "+nw, func() error {
			if got := len(n.Endpoints().List(nw)); got != live {
				return fmt.Errorf("has %d of %d", got, live)
			}
			return nil
		})
		if k := tombstones(n); k != 0 {
			t.Errorf("new host was sent %d tombstones of %s", k, nw)
		}
		received[nw] = n.Stats().BytesReceived
	}
	t.Logf("bytes a new host received: %v", received)
	if received["churned"] > received["clean"]*3/2 {
		t.Errorf("a new host received %d bytes for a network after %d deletions, %d for one without", received["churned"], deleted, received["clean"])
	}
}

// TestNewHostGetsOneCopy: a new host attached to a network gets all its
// endpoints, complete, from one host, whichever order it attaches and
// joins in (issue 12: attaching first pulled the network from every
// attached host).
func TestNewHostGetsOneCopy(t *testing.T) {
	count := 100_000
	if testing.Short() {
		count = 10_000
	}
	c := newTestCluster(t)
	nodes := c.startN(6)
	awaitMembers(t, nodes, 6, 15*time.Second)
	nets := []string{"net-a", "net-b", "net-c", "net-d"}
	for _, n := range nodes {
		for _, nw := range nets {
			if err := n.Attachments().Attach(nw); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The ring's endpoints are written in steps of 1,000 per host, each
	// step sent before the next: hosts do not start 16,000 containers at
	// once, and the test is about the new host, not about a flood.
	var wg sync.WaitGroup
	for h, n := range nodes {
		wg.Go(func() {
			for i := h; i < count; i += len(nodes) {
				ep := testEndpoint(fmt.Sprintf("%064x", i), nets[i%len(nets)], byte(i))
				ep.IP = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
				if err := n.Endpoints().Put(ep); err != nil {
					t.Error(err)
					return
				}
				if (i/len(nodes))%1000 == 999 {
					for st := n.Stats(); st.SendQueue+st.StreamQueue+st.StreamsOut > 0; st = n.Stats() {
						<-time.After(10 * time.Millisecond) // poll interval
					}
				}
			}
		})
	}
	wg.Wait()
	eventually(t, 2*time.Minute, "every host has every endpoint", func() error {
		for _, n := range nodes {
			if got := n.Stats().Tables[TableEndpoints].Entries; got != count {
				return fmt.Errorf("%s has %d of %d", n.cfg.NodeName, got, count)
			}
		}
		return nil
	})
	for _, order := range []string{"attach-then-join", "join-then-attach", "attach-while-joining"} {
		t.Run(order, func(t *testing.T) {
			cfg := testConfig(t, "new-"+order, c.key)
			cfg.Seeds = []string{nodes[0].Addr()}
			cfg.WrapTransport = c.net.Wrap
			n, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			attach := func() {
				for _, nw := range nets {
					if err := n.Attachments().Attach(nw); err != nil {
						t.Error(err)
					}
				}
			}
			start := time.Now()
			if order == "attach-then-join" {
				attach()
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- n.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
			}()
			switch order {
			case "join-then-attach":
				awaitMembers(t, []*Node{n}, len(nodes)+1, 15*time.Second)
				start = time.Now()
				attach()
			case "attach-while-joining":
				attach()
			}
			eventually(t, time.Minute, "new host has every endpoint", func() error {
				if got := n.Stats().Tables[TableEndpoints].Entries; got != count {
					return fmt.Errorf("has %d of %d", got, count)
				}
				return nil
			})
			took := time.Since(start)
			for _, nw := range nets {
				if !n.Synced(nw) {
					t.Errorf("has every endpoint but Synced(%s) is false", nw)
				}
			}
			st := n.Stats()
			t.Logf("%s: %d endpoints in %s; %d sync requests, %d bytes, %d stale entries", order, count, took.Round(time.Millisecond),
				st.SyncRequests, st.BytesReceived, st.EntriesStale)
			// One copy: entries met twice are stale; a few may be (an
			// update racing the sync), not a second copy of the network.
			if st.EntriesStale > uint64(count/10) {
				t.Errorf("%d of %d entries arrived more than once: the network was fetched from several hosts", st.EntriesStale, count)
			}
		})
	}
}

// TestBurstNoFalseDowns: 1,000 changes from 10 writers at once in a
// 50-host ring cost no host a false "down", and every copy agrees soon
// after (issue 12: 458 live hosts reported down, copies agreed after
// 21.9 s). The figures at N = 50, 200 and 500 come from the benchmark.
func TestBurstNoFalseDowns(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: a 50-host ring")
	}
	if raceEnabled {
		// 50 hosts on 2 cores, each memory access several times slower:
		// probes miss their 500 ms deadline from the load alone (it failed
		// 2 of 8 runs so), which says nothing of the burst.
		t.Skip("judges the failure detector's timing, which the race detector's slowdown changes")
	}
	const size, writers, per = 50, 10, 100
	var downs atomic.Int64
	c := newTestCluster(t)
	c.tune = func(cfg *Config) {
		cfg.PushPullInterval = DefaultConfig().PushPullInterval
		cfg.SyncInterval = DefaultConfig().SyncInterval
		cfg.Logger = slogCounting(cfg.Logger, "host down", &downs)
	}
	nodes := c.startN(size)
	awaitMembers(t, nodes, size, time.Minute)
	attached := nodes[:size*8/10]
	for _, n := range attached {
		if err := n.Attachments().Attach("net-a"); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "attachments everywhere", func() error {
		for _, n := range nodes {
			if h := n.Attachments().Hosts("net-a"); len(h) != len(attached) {
				return fmt.Errorf("%s sees %d attached", n.cfg.NodeName, len(h))
			}
		}
		return nil
	})
	downs.Store(0)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range writers {
		n := attached[w*len(attached)/writers]
		wg.Go(func() {
			for i := range per {
				if err := n.Endpoints().Put(testEndpoint(fmt.Sprintf("b-%d-%d", w, i), "net-a", byte(i))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	eventually(t, 30*time.Second, "every copy agrees", func() error {
		for _, n := range attached {
			if got := n.Stats().Tables[TableEndpoints].Entries; got != writers*per {
				return fmt.Errorf("%s has %d of %d", n.cfg.NodeName, got, writers*per)
			}
		}
		return nil
	})
	t.Logf("%d changes from %d writers: every copy agrees after %s", writers*per, writers, time.Since(start).Round(time.Millisecond))
	<-time.After(5 * time.Second) // watch for late false downs: the window's length
	if d := downs.Load(); d != 0 {
		t.Errorf("%d live hosts reported down during the burst", d)
	}
	for _, n := range nodes {
		if st := n.Stats(); st.MembersFailed != 0 || st.Dropped["queue-full"] != 0 {
			t.Errorf("%s: %d hosts failed, %d packets dropped for a full queue", n.cfg.NodeName, st.MembersFailed, st.Dropped["queue-full"])
		}
	}
}

// slogCounting returns l with every record whose message contains sub
// counted in n, whatever its level.
func slogCounting(l *slog.Logger, sub string, n *atomic.Int64) *slog.Logger {
	return slog.New(countingHandler{inner: l.Handler(), sub: sub, n: n})
}

type countingHandler struct {
	inner slog.Handler
	sub   string
	n     *atomic.Int64
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.sub) {
		h.n.Add(1)
	}
	if h.inner.Enabled(ctx, r.Level) {
		return h.inner.Handle(ctx, r)
	}
	return nil
}
func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{h.inner.WithAttrs(as), h.sub, h.n}
}
func (h countingHandler) WithGroup(g string) slog.Handler {
	return countingHandler{h.inner.WithGroup(g), h.sub, h.n}
}
