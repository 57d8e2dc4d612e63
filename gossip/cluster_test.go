package gossip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/memberlist"

	"github.com/tenet-net/tenet/gossip/gossiptest"
)

// eventually polls check until it returns nil or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not a wait for an outcome
	}
}

// testCluster runs in-process nodes on 127.0.0.1 with free ports.
type testCluster struct {
	t     testing.TB
	net   *gossiptest.Net
	key   []byte
	mu    sync.Mutex
	nodes []*Node
	stops map[*Node]func()
	// tune adjusts each node's config (timers for tests).
	tune func(*Config)
}

func newTestCluster(t testing.TB) *testCluster {
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return &testCluster{t: t, net: gossiptest.NewNet(), key: key, stops: make(map[*Node]func())}
}

// testConfig is DefaultConfig with test timers: quick repair and rejoin,
// the default failure detector.
func testConfig(t testing.TB, name string, key []byte) Config {
	cfg := DefaultConfig()
	cfg.NodeName = name
	cfg.BindAddr = netip.MustParseAddr("127.0.0.1")
	cfg.BindPort = 0
	cfg.VTEP = netip.MustParseAddr("203.0.113.1")
	cfg.Keys = [][]byte{key}
	cfg.PushPullInterval = 2 * time.Second
	cfg.SyncInterval = time.Second
	cfg.RejoinInterval = 500 * time.Millisecond
	cfg.DeadNodeReclaimTime = 500 * time.Millisecond
	cfg.ReapInterval = time.Second
	w := &testLog{}
	if tt, ok := t.(*testing.T); ok {
		w.out = tt.Output()
	}
	t.Cleanup(w.close) // runs after the node's own cleanup, registered later
	cfg.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return cfg
}

// testLog forwards to the test's output until the test ends, then drops:
// memberlist's Shutdown does not wait for a probe already in flight, which
// may still log, and writing to a finished test's output panics.
type testLog struct {
	mu  sync.Mutex
	out io.Writer // nil: discard
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.out != nil {
		return w.out.Write(p)
	}
	return len(p), nil
}

func (w *testLog) close() {
	w.mu.Lock()
	w.out = nil
	w.mu.Unlock()
}

// start creates and runs a node; the node stops at cleanup.
func (c *testCluster) start(cfg Config) *Node {
	c.t.Helper()
	cfg.WrapTransport = c.net.Wrap
	if c.tune != nil {
		c.tune(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", cfg.NodeName, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				c.t.Errorf("run %s: %v", cfg.NodeName, err)
			}
		})
	}
	c.t.Cleanup(stop)
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.stops[n] = stop
	c.mu.Unlock()
	return n
}

// startN starts n nodes named h0..h(n-1), each seeded with h0.
func (c *testCluster) startN(n int) []*Node {
	var out []*Node
	var seed string
	for i := range n {
		cfg := testConfig(c.t, fmt.Sprintf("h%d", i), c.key)
		cfg.VTEP = netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + i)})
		if seed != "" {
			cfg.Seeds = []string{seed}
		}
		node := c.start(cfg)
		if i == 0 {
			seed = node.Addr()
		}
		out = append(out, node)
	}
	return out
}

// kill stops a node without leaving, like a crash: its peers must detect it.
func (c *testCluster) kill(n *Node) {
	n.stop(false)
}

// awaitMembers waits until every node sees exactly want alive members.
func awaitMembers(t testing.TB, nodes []*Node, want int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%d alive members everywhere", want), func() error {
		for _, n := range nodes {
			if alive := len(n.Members()); alive != want {
				return fmt.Errorf("%s sees %d", n.cfg.NodeName, alive)
			}
		}
		return nil
	})
}

// awaitSynced waits until every node has finished its first syncs of the
// global tables and of network.
func awaitSynced(t testing.TB, nodes []*Node, network string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "first syncs of "+network+" done", func() error {
		for _, n := range nodes {
			if !n.Synced("") || !n.Synced(network) {
				return fmt.Errorf("%s not synced", n.cfg.NodeName)
			}
		}
		return nil
	})
}

// awaitSent waits until n has counted at least want messages sent (a
// message a partition drops counts as sent: it left the node).
func awaitSent(t testing.TB, n *Node, want uint64) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("%s sent %d messages", n.cfg.NodeName, want), func() error {
		if got := n.Stats().MessagesSent; got < want {
			return fmt.Errorf("sent %d", got)
		}
		return nil
	})
}

// view is what a node shows of every table: visible entries, sorted.
func view(n *Node) []string {
	var out []string
	for _, t := range knownTables {
		scope := ""
		if t == tableEndpoints {
			scope = "*"
		}
		for _, e := range n.store.list(t, scope, false) {
			out = append(out, fmt.Sprintf("%s %s %s v%d %x", t.name(), e.owner, e.key, e.version, e.value))
		}
	}
	sort.Strings(out)
	return out
}

// fullState is a node's whole replica, tombstones and hidden entries too.
func fullState(n *Node) []string { return dump(n.store) }

// awaitSameReplica waits until every node holds the same live entries,
// hidden ones included, and no node holds a live entry that another holds
// a newer tombstone of. (Tombstones themselves may differ: a host that
// never saw an entry need not learn of its deletion.)
func awaitSameReplica(t testing.TB, nodes []*Node, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "identical replicas", func() error {
		live := func(n *Node) []string {
			var out []string
			for _, l := range fullState(n) {
				if !strings.Contains(l, "del=true") {
					out = append(out, l)
				}
			}
			return out
		}
		ref := live(nodes[0])
		for _, n := range nodes[1:] {
			if diff := cmp.Diff(ref, live(n)); diff != "" {
				return fmt.Errorf("%s differs from %s:\n%s", n.cfg.NodeName, nodes[0].cfg.NodeName, diff)
			}
		}
		newest := map[string]uint64{} // table/owner/key -> newest tombstone seen anywhere
		for _, n := range nodes {
			for _, e := range n.store.snapshot() {
				if k := fmt.Sprintf("%d/%s/%s", e.table, e.owner, e.key); e.deleted && e.version > newest[k] {
					newest[k] = e.version
				}
			}
		}
		for _, n := range nodes {
			for _, e := range n.store.snapshot() {
				if v := newest[fmt.Sprintf("%d/%s/%s", e.table, e.owner, e.key)]; !e.deleted && v > e.version {
					return fmt.Errorf("%s shows %s of %s, deleted at v%d", n.cfg.NodeName, e.key, e.owner, v)
				}
			}
		}
		return nil
	})
}

// awaitSameView waits until every node shows the same tables with want
// visible entries.
func awaitSameView(t testing.TB, nodes []*Node, want int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "identical tables everywhere", func() error {
		ref := view(nodes[0])
		if len(ref) != want {
			return fmt.Errorf("%s shows %d entries, want %d", nodes[0].cfg.NodeName, len(ref), want)
		}
		for _, n := range nodes[1:] {
			if diff := cmp.Diff(ref, view(n)); diff != "" {
				return fmt.Errorf("%s differs from %s (-%s +%s):\n%s", n.cfg.NodeName, nodes[0].cfg.NodeName,
					nodes[0].cfg.NodeName, n.cfg.NodeName, diff)
			}
		}
		return nil
	})
}

func TestFiveNodesConverge(t *testing.T) {
	c := newTestCluster(t)
	nodes := c.startN(5)
	awaitMembers(t, nodes, 5, 15*time.Second)

	nw := Network{ID: "net-a", Name: "blue", Tenant: "acme", VNI: 4097, Subnet: netip.MustParsePrefix("10.1.0.0/16")}
	if err := nodes[0].Networks().Put(nw); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		if err := n.Attachments().Attach("net-a"); err != nil {
			t.Fatal(err)
		}
		if err := n.KV().Put(fmt.Sprintf("ipam/block/10.1.%d.0", i), []byte("net-a")); err != nil {
			t.Fatal(err)
		}
		ep := testEndpoint(fmt.Sprintf("ep-%d", i), "net-a", byte(i+2))
		ep.Names = []string{fmt.Sprintf("web-%d", i), "web.acme"}
		if err := n.Endpoints().Put(ep); err != nil {
			t.Fatal(err)
		}
	}
	awaitSameView(t, nodes, 1+5*3, 15*time.Second)

	for i, n := range nodes {
		ep, ok := n.Endpoints().Get("ep-4")
		if !ok || ep.Host != "h4" || ep.VTEP != netip.MustParseAddr("203.0.113.14") || !cmp.Equal(ep.Names, []string{"web-4", "web.acme"}) {
			t.Errorf("h%d: ep-4 = %+v, %v; want it on h4 with VTEP 203.0.113.14 and its names", i, ep, ok)
		}
		if got := n.Networks().List(); len(got) != 1 || got[0].VNI != 4097 || got[0].Host != "h0" {
			t.Errorf("h%d: networks = %+v", i, got)
		}
		members := n.Members()
		if len(members) != 5 {
			t.Errorf("h%d: %d members, want 5", i, len(members))
		}
		for _, m := range members {
			if want := netip.AddrFrom4([4]byte{203, 0, 113, 10 + m.Name[1] - '0'}); m.VTEP != want {
				t.Errorf("h%d: member %s VTEP %s, want %s", i, m.Name, m.VTEP, want)
			}
		}
		if d := n.Stats().Dropped; len(d) != 0 {
			t.Errorf("h%d dropped input in a healthy cluster: %v", i, d)
		}
	}

	// A delete spreads as well.
	nodes[2].Endpoints().Delete("ep-2")
	awaitSameView(t, nodes, 1+5*3-1, 15*time.Second)
}

// TestConcurrentWritesConverge has every node write, rewrite and delete
// endpoints and claim overlapping blocks at the same time; all replicas
// must end identical, tombstones included.
func TestConcurrentWritesConverge(t *testing.T) {
	c := newTestCluster(t)
	nodes := c.startN(5)
	awaitMembers(t, nodes, 5, 15*time.Second)
	for _, n := range nodes {
		if err := n.Attachments().Attach("net-a"); err != nil {
			t.Fatal(err)
		}
	}
	const perNode = 40
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			for j := range perNode {
				id := fmt.Sprintf("ep-%d-%d", i, j)
				ep := testEndpoint(id, "net-a", byte(j))
				if err := n.Endpoints().Put(ep); err != nil {
					t.Error(err)
					return
				}
				ep.IP = ep.IP.Next()
				if err := n.Endpoints().Put(ep); err != nil { // a rewrite
					t.Error(err)
					return
				}
				if j%4 == 0 {
					n.Endpoints().Delete(id)
				}
				// Every node writes the same keys: entries of several
				// owners under one key.
				if j%10 == 0 {
					if err := n.KV().Put(fmt.Sprintf("claim/%d", j), []byte(n.cfg.NodeName)); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	live := len(nodes) * (perNode - perNode/4)
	blocks := len(nodes) * (perNode / 10)
	awaitSameView(t, nodes, live+blocks+len(nodes), 20*time.Second)
	awaitSameReplica(t, nodes, 20*time.Second)
	// Every node holds every owner's entry under each shared key.
	for j := 0; j < perNode; j += 10 {
		for _, n := range nodes {
			if got := n.KV().List(fmt.Sprintf("claim/%d", j)); len(got) != len(nodes) {
				t.Errorf("%s has %d entries under claim/%d, want %d", n.cfg.NodeName, len(got), j, len(nodes))
			}
		}
	}
}

// hideBound is how long the tests allow for a dead host's entries to be
// hidden everywhere: the configured detector's worst case plus headroom
// for a loaded test machine.
func hideBound(cfg Config, n int) time.Duration { return cfg.DetectionBound(n) + 5*time.Second }

func TestKilledHostHiddenThenReturns(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for failure detection")
	}
	c := newTestCluster(t)
	nodes := c.startN(5)
	awaitMembers(t, nodes, 5, 15*time.Second)
	for i, n := range nodes {
		if err := n.Attachments().Attach("net-a"); err != nil {
			t.Fatal(err)
		}
		if err := n.Endpoints().Put(testEndpoint(fmt.Sprintf("ep-%d", i), "net-a", byte(i+2))); err != nil {
			t.Fatal(err)
		}
	}
	awaitSameView(t, nodes, 10, 15*time.Second)

	victim := nodes[4]
	others := nodes[:4]
	events, cancel := others[0].Subscribe(64)
	defer cancel()
	c.kill(victim)
	killed := time.Now()
	bound := hideBound(victim.cfg, 5)
	eventually(t, bound, "h4's entries hidden on every other host", func() error {
		for _, n := range others {
			if _, ok := n.Endpoints().Get("ep-4"); ok {
				return fmt.Errorf("%s still shows ep-4", n.cfg.NodeName)
			}
		}
		return nil
	})
	t.Logf("h4's endpoint hidden on all 4 peers %s after the kill (detector bound %s)",
		time.Since(killed).Round(time.Millisecond), victim.cfg.DetectionBound(5))
	// The subscriber was told, as a hidden delete.
	eventually(t, 5*time.Second, "hidden delete event for ep-4", func() error {
		for {
			select {
			case ev := <-events:
				if ev.Key == "ep-4" && ev.Kind == EventDelete && ev.Hidden {
					return nil
				}
			default:
				return errors.New("not seen yet")
			}
		}
	})

	// Restart h4 with the same name at a new address and a new VTEP: it
	// takes its entries back, and they return everywhere with the new VTEP.
	cfg := testConfig(t, "h4", c.key)
	cfg.VTEP = netip.MustParseAddr("203.0.113.99")
	cfg.Seeds = []string{nodes[0].Addr()}
	back := c.start(cfg)
	all := append(append([]*Node(nil), others...), back)
	eventually(t, 20*time.Second, "ep-4 back everywhere with the new VTEP", func() error {
		for _, n := range all {
			ep, ok := n.Endpoints().Get("ep-4")
			if !ok || ep.VTEP != cfg.VTEP {
				return fmt.Errorf("%s: ep-4 = %+v, %v", n.cfg.NodeName, ep, ok)
			}
		}
		return nil
	})
	awaitSameView(t, all, 10, 15*time.Second)
	for _, m := range others[0].Members() {
		if m.Name == "h4" && m.VTEP != cfg.VTEP {
			t.Errorf("h0 sees h4 with VTEP %s, want %s", m.VTEP, cfg.VTEP)
		}
	}
}

func TestPartitionHeals(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for failure detection on both sides of a partition")
	}
	c := newTestCluster(t)
	// memberlist stops gossiping to a dead peer after GossipToTheDeadTime
	// (30 s by default) and never contacts it again. Make that 1 s, so this
	// short partition is a "long" one: only Run's periodic rejoin heals it.
	c.tune = func(cfg *Config) {
		cfg.tuneMemberlist = func(mc *memberlist.Config) { mc.GossipToTheDeadTime = time.Second }
	}
	nodes := c.startN(5)
	awaitMembers(t, nodes, 5, 15*time.Second)
	for i, n := range nodes {
		if err := n.Attachments().Attach("net-a"); err != nil {
			t.Fatal(err)
		}
		if err := n.Endpoints().Put(testEndpoint(fmt.Sprintf("ep-%d", i), "net-a", byte(i+2))); err != nil {
			t.Fatal(err)
		}
	}
	awaitSameView(t, nodes, 10, 15*time.Second)

	a, b := nodes[:3], nodes[3:]
	addrs := func(ns []*Node) []string {
		var out []string
		for _, n := range ns {
			out = append(out, n.Addr())
		}
		return out
	}
	c.net.Partition(addrs(a), addrs(b))
	awaitMembers(t, a, 3, hideBound(a[0].cfg, 5))
	awaitMembers(t, b, 2, hideBound(a[0].cfg, 5))
	// Each side writes while cut off: new, changed and deleted entries.
	for i, n := range nodes {
		if err := n.Endpoints().Put(testEndpoint(fmt.Sprintf("ep-p-%d", i), "net-a", byte(i+20))); err != nil {
			t.Fatal(err)
		}
	}
	// The partition must outlast GossipToTheDeadTime, so that memberlist
	// has forgotten the other side; this is the scenario's length, not a
	// wait for an outcome.
	<-time.After(3 * time.Second)
	a[1].Endpoints().Delete("ep-1")
	b[0].Endpoints().Delete("ep-3")
	if err := b[1].Endpoints().Put(testEndpoint("ep-4", "net-a", 99)); err != nil {
		t.Fatal(err)
	}
	// Each side shows its own hosts' attachments and endpoints, old and new,
	// minus the deleted one.
	awaitSameView(t, a, 3*3-1, 10*time.Second)
	awaitSameView(t, b, 2*3-1, 10*time.Second)

	c.net.Heal()
	awaitMembers(t, nodes, 5, 30*time.Second)
	awaitSameView(t, nodes, 5*3-2, 20*time.Second)
	if ep, _ := nodes[0].Endpoints().Get("ep-4"); ep.IP != netip.AddrFrom4([4]byte{10, 1, 0, 99}) {
		t.Errorf("h0 has ep-4 at %s, want the write made during the partition", ep.IP)
	}
	awaitSameReplica(t, nodes, 20*time.Second)
}

// TestPartitionWithoutSeedsHeals: a partition between hosts none of which
// is a seed (the seed crashed for good before it) heals by the rejoin of
// failed peers. memberlist alone never contacts a peer it counts dead
// once it stops gossiping to the dead; before the rejoin took failed peers
// (memberlist's callbacks never say a host is dead, see NotifyLeave), both
// sides waited for each other for ever here.
func TestPartitionWithoutSeedsHeals(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for failure detection on both sides of a partition")
	}
	c := newTestCluster(t)
	c.tune = func(cfg *Config) {
		cfg.RejoinInterval = 500 * time.Millisecond
		cfg.tuneMemberlist = func(mc *memberlist.Config) { mc.GossipToTheDeadTime = time.Second }
	}
	nodes := c.startN(5)
	awaitMembers(t, nodes, 5, 15*time.Second)
	c.kill(nodes[0]) // the seed of all the others
	rest := nodes[1:]
	awaitMembers(t, rest, 4, hideBound(rest[0].cfg, 5))
	for i, n := range rest {
		if err := n.Endpoints().Put(testEndpoint(fmt.Sprintf("ep-%d", i), "net-a", byte(i+2))); err != nil {
			t.Fatal(err)
		}
	}
	awaitSameView(t, rest, 4+4, 15*time.Second)

	a, b := rest[:2], rest[2:]
	c.net.Partition(addrsOf(a), addrsOf(b))
	awaitMembers(t, a, 2, hideBound(a[0].cfg, 4))
	awaitMembers(t, b, 2, hideBound(a[0].cfg, 4))
	// Past GossipToTheDeadTime: the scenario's length, not a wait for an
	// outcome. Then a write made while cut off.
	<-time.After(2 * time.Second)
	if err := b[0].Endpoints().Put(testEndpoint("ep-p", "net-a", 50)); err != nil {
		t.Fatal(err)
	}
	c.net.Heal()
	awaitMembers(t, rest, 4, 15*time.Second)
	awaitSameView(t, rest, 4+5, 15*time.Second)
}

// TestHealRepairsThoughItsFirstExchangeIsLost cuts a host off, deletes an
// endpoint on each side, and heals the cut while every table packet is
// lost, long enough that the first heal exchange (sent when membership
// says the host is back) cannot get through; anti-entropy is made too slow
// to help. The deletions still cross within seconds: the heal is made
// again (healAgain). Seen on the testbed as a stopped container listed as
// up on the other side long after a partition healed.
func TestHealRepairsThoughItsFirstExchangeIsLost(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for failure detection on both sides of a partition")
	}
	c := newTestCluster(t)
	c.tune = func(cfg *Config) {
		cfg.SyncInterval = 10 * time.Minute // no anti-entropy round in this test
		cfg.tuneMemberlist = func(mc *memberlist.Config) { mc.GossipToTheDeadTime = time.Second }
	}
	nodes := c.startN(3)
	awaitMembers(t, nodes, 3, 15*time.Second)
	for i, n := range nodes {
		if err := n.Attachments().Attach("net-a"); err != nil {
			t.Fatal(err)
		}
		if err := n.Endpoints().Put(testEndpoint(fmt.Sprintf("ep-%d", i), "net-a", byte(i+2))); err != nil {
			t.Fatal(err)
		}
	}
	awaitSameView(t, nodes, 6, 15*time.Second)
	awaitSynced(t, nodes, "net-a", 15*time.Second)

	c.net.Partition([]string{nodes[0].Addr(), nodes[1].Addr()}, []string{nodes[2].Addr()})
	awaitMembers(t, nodes[:2], 2, hideBound(nodes[0].cfg, 3))
	awaitMembers(t, nodes[2:], 1, hideBound(nodes[0].cfg, 3))
	nodes[0].Endpoints().Delete("ep-0")
	nodes[2].Endpoints().Delete("ep-2")
	awaitSameView(t, nodes[:2], 2*2-1, 10*time.Second)
	awaitSameView(t, nodes[2:], 1*2-1, 10*time.Second)

	c.net.Lose(func(b []byte) bool { return len(b) > 0 && b[0] == frameMagic })
	c.net.Heal()
	awaitMembers(t, nodes, 3, 30*time.Second)
	// Every host has queued its heal exchange by now and sends it within
	// milliseconds; the loss outlasts that (the scenario, not a wait for
	// an outcome), and ends well before the first repeat.
	<-time.After(time.Second)
	c.net.Lose(nil)
	awaitSameView(t, nodes, 3*2-2, healAgain[1]+5*time.Second)
}

// TestEndpointScopeAndRepair shows that an endpoint change goes only to
// the hosts attached to its network, that the per-network sync repairs a
// lost send, that an unattached host keeps none of the network's
// endpoints, and that attaching fetches them.
func TestEndpointScopeAndRepair(t *testing.T) {
	c := newTestCluster(t)
	nodes := c.startN(3)
	h0, h1, h2 := nodes[0], nodes[1], nodes[2]
	awaitMembers(t, nodes, 3, 15*time.Second)
	for _, n := range nodes[:2] {
		if err := n.Attachments().Attach("net-a"); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 15*time.Second, "h0 sees both attachments", func() error {
		if h := h0.Attachments().Hosts("net-a"); len(h) != 2 {
			return fmt.Errorf("attached: %v", h)
		}
		return nil
	})

	// The direct send (and the trailing digest) is lost on the wire.
	awaitSynced(t, nodes[:2], "net-a", 15*time.Second)
	c.net.Partition([]string{h0.Addr()}, []string{h1.Addr(), h2.Addr()})
	received := h2.Stats().MessagesReceived
	sent := h0.Stats().MessagesSent
	if err := h0.Endpoints().Put(testEndpoint("ep-a", "net-a", 5)); err != nil {
		t.Fatal(err)
	}
	awaitSent(t, h0, sent+2) // the update and its trailing digest, both lost
	c.net.Heal()
	eventually(t, 15*time.Second, "h1 gets ep-a by sync", func() error {
		if _, ok := h1.Endpoints().Get("ep-a"); !ok {
			return errors.New("missing")
		}
		return nil
	})
	if got := h2.Endpoints().ListNetwork("net-a", true); len(got) != 0 {
		t.Errorf("h2, without net-a, holds its endpoints: %+v", got)
	}
	if st := h2.Stats(); st.EntriesUnscoped != 0 || st.Tables[TableEndpoints].Entries != 0 {
		t.Errorf("h2, without net-a, was sent its endpoints: %+v (received %d messages before)", st, received)
	}

	if err := h2.Attachments().Attach("net-a"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "h2 gets ep-a after attaching", func() error {
		if _, ok := h2.Endpoints().Get("ep-a"); !ok {
			return errors.New("missing")
		}
		return nil
	})
	h2.Attachments().Detach("net-a")
	if _, ok := h2.Endpoints().Get("ep-a"); ok {
		t.Error("h2 still shows ep-a after detaching")
	}
}

// TestGracefulLeaveHides: a host that stops cleanly (Run's context
// cancelled) leaves the ring, and its peers hide its entries without
// waiting for failure detection.
func TestGracefulLeaveHides(t *testing.T) {
	c := newTestCluster(t)
	nodes := c.startN(3)
	awaitMembers(t, nodes, 3, 15*time.Second)
	for _, n := range nodes {
		if err := n.Attachments().Attach("net-a"); err != nil {
			t.Fatal(err)
		}
	}
	if err := nodes[2].Endpoints().Put(testEndpoint("ep-2", "net-a", 2)); err != nil {
		t.Fatal(err)
	}
	awaitSameView(t, nodes, 3+1, 15*time.Second)
	c.stops[nodes[2]]()
	awaitSameView(t, nodes[:2], 2, 15*time.Second)
	awaitMembers(t, nodes[:2], 2, time.Second)
	// It is counted left, not failed, and is no rejoin target: its meta
	// said it was leaving (memberlist alone does not tell).
	for _, n := range nodes[:2] {
		eventually(t, 5*time.Second, n.cfg.NodeName+" counts h2 left", func() error {
			if st := n.Stats(); st.MembersLeft != 1 || st.MembersFailed != 0 {
				return fmt.Errorf("members left/failed = %d/%d, want 1/0", st.MembersLeft, st.MembersFailed)
			}
			return nil
		})
		n.mu.Lock()
		_, failed := n.failed["h2"]
		n.mu.Unlock()
		if failed {
			t.Errorf("%s holds h2, which left, as a failed peer to rejoin", n.cfg.NodeName)
		}
	}
}

// TestRestartWithSeedsDownFindsTheRing: a host that left cleanly is
// rejoined by nobody, so after a restart it must find the ring itself; its
// only seed is down by then. The peers it kept from its last run (Config.
// PeersFile) bring it back. Without them it stays alone.
func TestRestartWithSeedsDownFindsTheRing(t *testing.T) {
	c, _, h1, h2 := ringAfterLeaves(t)
	cfg := testConfig(t, "h2", c.key)
	cfg.VTEP = h2.cfg.VTEP
	cfg.Seeds = h2.cfg.Seeds
	again := c.start(cfg) // a new port: h1 cannot know it
	awaitMembers(t, []*Node{h1, again}, 2, 15*time.Second)
}

// TestHostsRestartedTogetherFindTheRest: h2 restarts with a seed that
// answers, h3, new and alone (its own seed is down): the two form an island
// and neither is alone. h2's kept peers are mostly not in sight, so its
// rejoin rounds try them and the island meets h1. Nobody on h1's side can
// reach the island (h2 came back at a new port).
func TestHostsRestartedTogetherFindTheRest(t *testing.T) {
	c, h0, h1, h2 := ringAfterLeaves(t)
	cfg := testConfig(t, "h3", c.key)
	cfg.VTEP = netip.MustParseAddr("203.0.113.13")
	cfg.Seeds = []string{h0.Addr()}
	h3 := c.start(cfg)
	cfg = testConfig(t, "h2", c.key)
	cfg.VTEP = h2.cfg.VTEP
	cfg.Seeds = []string{h3.Addr()}
	again := c.start(cfg)
	awaitMembers(t, []*Node{h1, again, h3}, 3, 15*time.Second)
}

// ringAfterLeaves starts h0 (everyone's seed), h1 and h2, each keeping its
// peers (Config.PeersFile), waits until h2's file holds h0 and h1, then
// stops h2 and h0 cleanly and waits until h1 is alone: nobody will contact
// h2 again, and its only seed is down.
func ringAfterLeaves(t *testing.T) (c *testCluster, h0, h1, h2 *Node) {
	t.Helper()
	c = newTestCluster(t)
	dir := t.TempDir()
	c.tune = func(cfg *Config) { cfg.PeersFile = filepath.Join(dir, cfg.NodeName+".peers") }
	nodes := c.startN(3)
	awaitMembers(t, nodes, 3, 15*time.Second)
	h0, h1, h2 = nodes[0], nodes[1], nodes[2]
	file := h2.cfg.PeersFile
	eventually(t, 5*time.Second, "h2 keeps h0's and h1's addresses", func() error {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		if want := strings.Join(sorted(h0.Addr(), h1.Addr()), "\n") + "\n"; string(b) != want {
			return fmt.Errorf("%s holds %q, want %q", file, b, want)
		}
		return nil
	})
	c.stops[h2]()
	c.stops[h0]()
	awaitMembers(t, []*Node{h1}, 1, 15*time.Second)
	return c, h0, h1, h2
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

// TestJoinerFetchesEndpointsAtOnce: a new host attached to a network gets
// its endpoints from the join itself, not from a periodic round (both
// periodic repairs are off here). memberlist answers a join before it
// merges the joiner, so the joiner's first sync request can arrive at a
// host that does not know it yet; the answer must wait for the joiner's
// membership instead of being lost.
func TestJoinerFetchesEndpointsAtOnce(t *testing.T) {
	c := newTestCluster(t)
	c.tune = func(cfg *Config) {
		cfg.SyncInterval = time.Hour
		cfg.PushPullInterval = time.Hour
	}
	h0 := c.startN(1)[0]
	if err := h0.Attachments().Attach("net-a"); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := h0.Endpoints().Put(testEndpoint(fmt.Sprintf("ep-%d", i), "net-a", byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		cfg := testConfig(t, fmt.Sprintf("joiner-%d", i), c.key)
		cfg.Seeds = []string{h0.Addr()}
		cfg.WrapTransport = c.net.Wrap
		c.tune(&cfg)
		n, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Attachments().Attach("net-a"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx) }()
		eventually(t, 10*time.Second, n.cfg.NodeName+" has net-a's 50 endpoints", func() error {
			if got := len(n.Endpoints().List("net-a")); got != 50 {
				return fmt.Errorf("has %d", got)
			}
			return nil
		})
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestWriterSendsANewcomerWhatItMissed: h0 writes an endpoint on net-a
// before it hears that h2 attached net-a, and h2's first sync came from h1
// before h1 had it (at scale, with every host attaching and writing at
// once, this is the common case). When h0 hears of the attachment it sends
// h2 its digest, and h2 pulls the endpoint at once instead of at an
// anti-entropy round (a minute apart here, as at 200 hosts).
func TestWriterSendsANewcomerWhatItMissed(t *testing.T) {
	// The repeats of the heal exchange every host makes with a host it
	// first sees (2, 6, 15 s after) would mend h2 as well; at scale they
	// are long over when networks are attached. Restored after the nodes
	// stop (cleanups run last first).
	saved := healAgain
	healAgain = nil
	t.Cleanup(func() { healAgain = saved })
	c := newTestCluster(t)
	c.tune = func(cfg *Config) { cfg.SyncInterval = time.Minute }
	nodes := c.startN(3)
	h0, h1, h2 := nodes[0], nodes[1], nodes[2]
	awaitMembers(t, nodes, 3, 15*time.Second)
	ours := func(b []byte) bool { return len(b) > 0 && b[0] == frameMagic }
	// sent has h0 write, and waits until it sent h1 want packets (held
	// back, then delivered): the update, then its trailing digest.
	sent := func(want int, write func() error) {
		t.Helper()
		c.net.Hold(h0.Addr(), h1.Addr(), ours)
		if err := write(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "h0 sends h1 the update and its trail", func() error {
			if got := c.net.Held(h0.Addr(), h1.Addr()); got < want {
				return fmt.Errorf("%d packets", got)
			}
			return nil
		})
		c.net.Release(h0.Addr(), h1.Addr())
	}
	// Table traffic between h0 and h2 is slow both ways.
	c.net.Hold(h0.Addr(), h2.Addr(), ours)
	c.net.Hold(h2.Addr(), h0.Addr(), ours)
	nw := attachOutOfSight(t, h2, func(nw string) {
		sent(2, func() error { return h0.Attachments().Attach(nw) })
		if err := h1.Attachments().Attach(nw); err != nil {
			t.Fatal(err)
		}
		awaitSynced(t, []*Node{h0, h1}, nw, 15*time.Second)
	})
	if err := h2.Attachments().Attach(nw); err != nil {
		t.Fatal(err)
	}
	awaitSynced(t, []*Node{h2}, nw, 15*time.Second) // from h1, the one it knows
	sent(2, func() error { return h0.Endpoints().Put(testEndpoint("ep-a", nw, 5)) })
	eventually(t, 15*time.Second, "h1 has ep-a", func() error {
		if _, ok := h1.Endpoints().Get("ep-a"); !ok {
			return errors.New("missing")
		}
		return nil
	})
	c.net.Release(h0.Addr(), h2.Addr())
	c.net.Release(h2.Addr(), h0.Addr())
	eventually(t, 5*time.Second, "h2 gets ep-a once h0 hears of its attachment", func() error {
		if _, ok := h2.Endpoints().Get("ep-a"); !ok {
			return fmt.Errorf("missing; h2 %+v", h2.Stats())
		}
		return nil
	})
}

// attachOutOfSight has attach make h0 and h1 attach a network while h0's
// table traffic to h2 is held, and returns the network once h2 knows h1
// attached and not h0 (the set-up of the two tests before). h2 may still
// hear of h0's attachment through memberlist or h1: a first-meeting heal
// between h1 and h2 that runs late under load, or a rejoin of a seed
// briefly counted down, whose join exchange carries the global tables.
// That is right, not a fault; the set-up is then made again with another
// network, by when those are over.
func attachOutOfSight(t *testing.T, h2 *Node, attach func(nw string)) string {
	t.Helper()
	for i := range 3 {
		nw := fmt.Sprintf("net-%c", 'a'+i)
		attach(nw)
		relayed := false
		eventually(t, 15*time.Second, "h2 knows h1 attached to "+nw+", not h0", func() error {
			h := h2.Attachments().Hosts(nw)
			if slices.Contains(h, "h0") {
				relayed = true
				return nil
			}
			if len(h) != 1 || h[0] != "h1" {
				return fmt.Errorf("attached: %v", h)
			}
			return nil
		})
		if !relayed {
			return nw
		}
		t.Logf("h2 heard of h0's attachment to %s another way; again with another network", nw)
	}
	t.Fatal("h2 heard of h0's attachment another way three times: the set-up does not hold")
	return ""
}

// TestDigestDuringFirstSyncIsJudgedAfter: h2's first sync of net-a is
// under way (its answer is slow) when h0's digest of its entries there
// arrives; the sync comes from h1, which lacks h0's newest endpoint. h2
// must judge h0's digest once synced and pull the endpoint from h0, not
// drop the digest because it came too early.
func TestDigestDuringFirstSyncIsJudgedAfter(t *testing.T) {
	saved := healAgain // see TestWriterSendsANewcomerWhatItMissed
	healAgain = nil
	t.Cleanup(func() { healAgain = saved })
	c := newTestCluster(t)
	c.tune = func(cfg *Config) { cfg.SyncInterval = time.Minute }
	nodes := c.startN(3)
	h0, h1, h2 := nodes[0], nodes[1], nodes[2]
	awaitMembers(t, nodes, 3, 15*time.Second)
	ours := func(b []byte) bool { return len(b) > 0 && b[0] == frameMagic }
	c.net.Hold(h0.Addr(), h2.Addr(), ours) // h2 learns late that h0 has the network
	nw := attachOutOfSight(t, h2, func(nw string) {
		for _, n := range []*Node{h0, h1} {
			if err := n.Attachments().Attach(nw); err != nil {
				t.Fatal(err)
			}
		}
		awaitSynced(t, []*Node{h0, h1}, nw, 15*time.Second)
	})
	c.net.Hold(h0.Addr(), h1.Addr(), ours) // h1 lacks h0's endpoint
	if err := h0.Endpoints().Put(testEndpoint("ep-a", nw, 5)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "h0 sends h1 the update and its trail", func() error {
		if got := c.net.Held(h0.Addr(), h1.Addr()); got < 2 {
			return fmt.Errorf("%d packets", got)
		}
		return nil
	})
	c.net.Hold(h1.Addr(), h2.Addr(), ours) // h1's answer to h2's first sync is slow
	if err := h2.Attachments().Attach(nw); err != nil {
		t.Fatal(err)
	}
	// h0 hears of h2's attachment and sends its digest: kept back on the
	// path to h2 with h0's earlier packets.
	eventually(t, 10*time.Second, "h0 knows h2 attached", func() error {
		if h := h0.Attachments().Hosts(nw); len(h) != 3 {
			return fmt.Errorf("attached: %v", h)
		}
		return nil
	})
	eventually(t, 10*time.Second, "h1 answers h2's first sync", func() error {
		if got := c.net.Held(h1.Addr(), h2.Addr()); got < 1 {
			return fmt.Errorf("%d packets held", got)
		}
		return nil
	})
	received := h2.Stats().MessagesReceived
	held := c.net.Held(h0.Addr(), h2.Addr())
	c.net.Release(h0.Addr(), h2.Addr())
	eventually(t, 10*time.Second, "h2 takes in h0's packets", func() error {
		if got := h2.Stats().MessagesReceived; got < received+uint64(held) {
			return fmt.Errorf("received %d of %d", got-received, held)
		}
		return nil
	})
	if h2.Synced(nw) {
		t.Fatal("h2 synced before h1's answer: the set-up does not hold")
	}
	c.net.Release(h1.Addr(), h2.Addr())
	awaitSynced(t, []*Node{h2}, nw, 10*time.Second)
	eventually(t, 5*time.Second, "h2 pulls ep-a from h0 after its first sync", func() error {
		if _, ok := h2.Endpoints().Get("ep-a"); !ok {
			return fmt.Errorf("missing; h2 %+v", h2.Stats())
		}
		return nil
	})
	c.net.Release(h0.Addr(), h1.Addr())
}
