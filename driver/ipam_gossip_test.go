package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/gossip/gossiptest"
	"github.com/tenet-net/tenet/ipam"
)

// TestIPAMOverRealGossipHasNoDuplicates runs three hosts' IPAM over real
// memberlist rings on 127.0.0.1 (encrypted, distinct ports). Only h0 owns
// the pool's blocks at first, so h1 and h2 must have blocks handed over
// while all three allocate at once. No address is ever held twice, and
// after every release nothing is left allocated.
// ipamRing is n hosts' gossip nodes and IPAMs on 127.0.0.1, joined, with a
// pool 10.64.0.0/20 of tenant acme requested on each.
type ipamRing struct {
	nodes  []*gossip.Node
	ipams  []*ipam.IPAM
	poolID string
	net    *gossiptest.Net
}

func newIPAMRing(t *testing.T, n int, seeds []string, opts ...func(*ipam.Config)) *ipamRing {
	t.Helper()
	if testing.Short() {
		t.Skip("starts gossip rings on loopback")
	}
	key, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	quiet := slog.New(slog.DiscardHandler)
	r := &ipamRing{net: gossiptest.NewNet()}
	for i := range n {
		cfg := gossip.DefaultConfig()
		cfg.NodeName = fmt.Sprintf("h%d", i)
		cfg.BindAddr, cfg.BindPort = netip.MustParseAddr("127.0.0.1"), 0
		cfg.VTEP = netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)})
		cfg.Keys, cfg.Logger, cfg.WrapTransport = [][]byte{key}, quiet, r.net.Wrap
		cfg.RejoinInterval, cfg.PushPullInterval = 500*time.Millisecond, 2*time.Second
		if i > 0 {
			cfg.Seeds = []string{r.nodes[0].Addr()}
		}
		node, err := gossip.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		r.nodes = append(r.nodes, node)
		icfg := ipam.DefaultConfig()
		icfg.Host, icfg.Seeds, icfg.Logger = cfg.NodeName, seeds, quiet
		for _, o := range opts {
			o(&icfg)
		}
		m, err := ipam.New(icfg, GossipReplica{Node: node})
		if err != nil {
			t.Fatal(err)
		}
		r.ipams = append(r.ipams, m)
		wg.Go(func() { _ = node.Run(ctx) })
		wg.Go(func() { _ = m.Run(ctx) })
	}
	r.awaitMembers(t, n)
	req, err := ipam.ParsePoolRequest("default", "", "10.64.0.0/20", "", map[string]string{"tenant": "acme"}, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range r.ipams {
		p, err := m.RequestPool(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		r.poolID = p.ID
	}
	return r
}

// awaitMembers polls until every node sees n alive members.
func (r *ipamRing) awaitMembers(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, node := range r.nodes {
		for len(node.Members()) < n {
			if time.Now().After(deadline) {
				t.Fatalf("ring never formed: %v", node.Members())
			}
			time.Sleep(20 * time.Millisecond) // poll interval
		}
	}
}

// holdings records who holds each address; a second holder is a duplicate.
type holdings struct {
	mu   sync.Mutex
	held map[netip.Addr]int
	dups []string
}

// allocate has each listed host take count addresses at the same time.
func (h *holdings) allocate(t *testing.T, r *ipamRing, hosts []int, count int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, i := range hosts {
		wg.Go(func() {
			for j := range count {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				a, err := r.ipams[i].RequestAddress(ctx, r.poolID, ipam.AddressRequest{Kind: ipam.KindContainer})
				cancel()
				if err != nil {
					t.Errorf("h%d request %d: %v", i, j, err)
					return
				}
				h.mu.Lock()
				if prev, dup := h.held[a.Addr()]; dup {
					h.dups = append(h.dups, fmt.Sprintf("%s to h%d and h%d", a.Addr(), prev, i))
				}
				h.held[a.Addr()] = i
				h.mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(h.dups) > 0 {
		t.Fatalf("%d duplicate addresses, e.g. %v", len(h.dups), h.dups[:min(5, len(h.dups))])
	}
}

// releaseAll releases every held address and checks nothing is left.
func (h *holdings) releaseAll(t *testing.T, r *ipamRing) {
	t.Helper()
	for a, i := range h.held {
		if err := r.ipams[i].ReleaseAddress(context.Background(), r.poolID, a); err != nil {
			t.Fatalf("h%d release %s: %v", i, a, err)
		}
	}
	for i, m := range r.ipams {
		st, err := m.Status(r.poolID)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Addresses) != 0 {
			t.Errorf("h%d still holds %d addresses after every release", i, len(st.Addresses))
		}
	}
}

// TestIPAMOverRealGossipHasNoDuplicates runs three hosts' IPAM over real
// memberlist rings on 127.0.0.1 (encrypted, distinct ports). Only h0 owns
// the pool's blocks at first, so h1 and h2 must have blocks handed over
// while all three allocate at once. No address is ever held twice, and
// after every release nothing is left allocated.
func TestIPAMOverRealGossipHasNoDuplicates(t *testing.T) {
	r := newIPAMRing(t, 3, []string{"h0"})
	h := &holdings{held: map[netip.Addr]int{}}
	const perHost = 400 // 1,200 of the /20's 4,094: most blocks must move off h0
	h.allocate(t, r, []int{0, 1, 2}, perHost)
	if len(h.held) != 3*perHost {
		t.Fatalf("%d addresses held, want %d", len(h.held), 3*perHost)
	}
	moved := 0
	for i, m := range r.ipams {
		st, err := m.Status(r.poolID)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Addresses) != perHost {
			t.Errorf("h%d accounts for %d addresses, want %d", i, len(st.Addresses), perHost)
		}
		if i > 0 {
			moved += len(st.Blocks)
		}
	}
	if moved == 0 {
		t.Error("no block moved off h0; the test exercised no handover")
	}
	h.releaseAll(t, r)
	t.Logf("1,200 addresses on 3 hosts, %d blocks moved to h1 and h2, no duplicate", moved)
}

// TestIPAMOverRealGossipThroughAPartition allocates on three hosts, cuts
// h2 off from h0 and h1, keeps allocating on both sides (each from what it
// owns or can obtain on its side), heals, and allocates again: no address
// is ever held twice.
func TestIPAMOverRealGossipThroughAPartition(t *testing.T) {
	r := newIPAMRing(t, 3, []string{"h0", "h1", "h2"})
	h := &holdings{held: map[netip.Addr]int{}}
	h.allocate(t, r, []int{0, 1, 2}, 100)
	r.net.Partition([]string{r.nodes[0].Addr(), r.nodes[1].Addr()}, []string{r.nodes[2].Addr()})
	// Each side sees the other as gone before it allocates again.
	deadline := time.Now().Add(30 * time.Second)
	for len(r.nodes[0].Members()) != 2 || len(r.nodes[2].Members()) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("partition not seen: h0 sees %v, h2 sees %v", r.nodes[0].Members(), r.nodes[2].Members())
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	h.allocate(t, r, []int{0, 1, 2}, 150)
	r.net.Heal()
	r.awaitMembers(t, 3)
	h.allocate(t, r, []int{0, 1, 2}, 100)
	if want := 3 * 350; len(h.held) != want {
		t.Fatalf("%d addresses held, want %d", len(h.held), want)
	}
	h.releaseAll(t, r)
}

// requestPool requests pool subnet (with ip-range rng) of tenant acme on
// every host of the ring, with its gateway, as docker network create does.
func (r *ipamRing) requestPool(t *testing.T, subnet, rng string) string {
	t.Helper()
	req, err := ipam.ParsePoolRequest("default", "", subnet, rng, map[string]string{"tenant": "acme"}, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range r.ipams {
		p, err := m.RequestPool(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.RequestAddress(t.Context(), p.ID, ipam.AddressRequest{Kind: ipam.KindGateway}); err != nil {
			t.Fatal(err)
		}
	}
	return req.PoolID()
}

// TestIPAMOverRealGossipSmallPools: five hosts over real memberlist rings
// share a /28 and a /27 ip-range, each one default block held by one seed
// at first. In turns, each host gets an address while the pool has one,
// and every address is used exactly once; then again with all five
// allocating at once (issue 10, point 3). On f959d08 the third host is
// refused while the /28 has ten free addresses.
func TestIPAMOverRealGossipSmallPools(t *testing.T) {
	// Every peer is reachable: a slow answer (a loaded machine, -race) must
	// not read as a missing one.
	r := newIPAMRing(t, 5, []string{"h0", "h1", "h2", "h3", "h4"}, func(c *ipam.Config) { c.AnswerTimeout = 15 * time.Second })
	for _, tc := range []struct {
		subnet, rng string
		capacity    int
	}{
		{"10.65.0.0/28", "", 13},               // network, gateway and broadcast reserved
		{"10.66.0.0/24", "10.66.0.128/27", 32}, // gateway and broadcast outside the range
	} {
		poolID := r.requestPool(t, tc.subnet, tc.rng)
		// Under load (-race, a busy machine) memberlist may report a peer
		// down for a moment, and a request then fails as ErrUnavailable:
		// try again, as a user would.
		request := func(m *ipam.IPAM) (netip.Prefix, error) {
			for try := 0; ; try++ {
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
				a, err := m.RequestAddress(ctx, poolID, ipam.AddressRequest{})
				cancel()
				if !errors.Is(err, ipam.ErrUnavailable) || try == 5 {
					return a, err
				}
			}
		}
		refusal := func(err error) bool { return errors.Is(err, ipam.ErrExhausted) || errors.Is(err, ipam.ErrUnavailable) }
		held := map[netip.Addr]int{}
		take := func(i int, a netip.Prefix) {
			if prev, dup := held[a.Addr()]; dup {
				t.Fatalf("pool %s: %s given to h%d and h%d", poolID, a.Addr(), prev, i)
			}
			held[a.Addr()] = i
		}
		fill := func() {
			for {
				refused := 0
				for i, m := range r.ipams {
					a, err := request(m)
					if err != nil {
						if !refusal(err) || len(held) < tc.capacity {
							t.Fatalf("pool %s: h%d refused with %d of %d addresses in use: %v", poolID, i, len(held), tc.capacity, err)
						}
						refused++
						continue
					}
					take(i, a)
				}
				if refused == len(r.ipams) {
					return
				}
			}
		}
		fill()
		if len(held) != tc.capacity {
			t.Fatalf("pool %s: %d addresses handed out, want %d", poolID, len(held), tc.capacity)
		}
		per := map[int]int{}
		for a, i := range held {
			per[i]++
			if err := r.ipams[i].ReleaseAddress(t.Context(), poolID, a); err != nil {
				t.Fatal(err)
			}
		}
		if len(per) != 5 {
			t.Fatalf("pool %s: only hosts %v got addresses", poolID, per)
		}
		clear(held)
		// All at once, then in turns for what is left (a refusal can come
		// while a part is on its way to another host).
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i, m := range r.ipams {
			wg.Go(func() {
				for {
					a, err := request(m)
					if err != nil {
						if !refusal(err) {
							t.Errorf("pool %s: h%d: %v", poolID, i, err)
						}
						return
					}
					mu.Lock()
					take(i, a)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		fill()
		if len(held) != tc.capacity {
			t.Fatalf("pool %s, all at once: %d addresses handed out, want %d", poolID, len(held), tc.capacity)
		}
		t.Logf("pool %s: %d addresses on 5 hosts, each once, twice over", poolID, tc.capacity)
	}
}
