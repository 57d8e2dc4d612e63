package driver

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/ipam"
)

// TestIPAMOverRealGossipHasNoDuplicates runs three hosts' IPAM over real
// memberlist rings on 127.0.0.1 (encrypted, distinct ports). Only h0 owns
// the pool's blocks at first, so h1 and h2 must have blocks handed over
// while all three allocate at once. No address is ever held twice, and
// after every release nothing is left allocated.
func TestIPAMOverRealGossipHasNoDuplicates(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three gossip rings on loopback")
	}
	key, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	quiet := slog.New(slog.DiscardHandler)
	var nodes []*gossip.Node
	var ipams []*ipam.IPAM
	for i := range 3 {
		cfg := gossip.DefaultConfig()
		cfg.NodeName = fmt.Sprintf("h%d", i)
		cfg.BindAddr, cfg.BindPort = netip.MustParseAddr("127.0.0.1"), 0
		cfg.VTEP = netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)})
		cfg.Keys, cfg.Logger = [][]byte{key}, quiet
		if i > 0 {
			cfg.Seeds = []string{nodes[0].Addr()}
		}
		n, err := gossip.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
		icfg := ipam.DefaultConfig()
		icfg.Host, icfg.Seeds, icfg.Logger = cfg.NodeName, []string{"h0"}, quiet
		m, err := ipam.New(icfg, GossipReplica{Node: n})
		if err != nil {
			t.Fatal(err)
		}
		ipams = append(ipams, m)
		wg.Go(func() { _ = n.Run(ctx) })
		wg.Go(func() { _ = m.Run(ctx) })
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range nodes {
		for len(n.Members()) < 3 {
			if time.Now().After(deadline) {
				t.Fatalf("ring never formed: %v", n.Members())
			}
			time.Sleep(20 * time.Millisecond) // poll interval
		}
	}
	req, err := ipam.ParsePoolRequest("default", "", "10.64.0.0/20", "", map[string]string{"tenant": "acme"}, false)
	if err != nil {
		t.Fatal(err)
	}
	var poolID string
	for _, m := range ipams {
		p, err := m.RequestPool(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		poolID = p.ID
	}

	const perHost = 400 // 1,200 of the /20's 4,094: most blocks must move off h0
	var mu sync.Mutex
	held := map[netip.Addr]string{}
	var dups []string
	var all sync.WaitGroup
	for i, m := range ipams {
		all.Go(func() {
			for j := range perHost {
				rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
				a, err := m.RequestAddress(rctx, poolID, ipam.AddressRequest{Kind: ipam.KindContainer})
				rcancel()
				if err != nil {
					t.Errorf("h%d request %d: %v", i, j, err)
					return
				}
				mu.Lock()
				if prev, dup := held[a.Addr()]; dup {
					dups = append(dups, fmt.Sprintf("%s to %s and h%d", a.Addr(), prev, i))
				}
				held[a.Addr()] = fmt.Sprint("h", i)
				mu.Unlock()
			}
		})
	}
	all.Wait()
	if len(dups) > 0 {
		t.Fatalf("%d duplicate addresses, e.g. %v", len(dups), dups[:min(5, len(dups))])
	}
	if len(held) != 3*perHost {
		t.Fatalf("%d addresses held, want %d", len(held), 3*perHost)
	}
	moved := 0
	for i, m := range ipams {
		st, err := m.Status(poolID)
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
	for a, h := range held {
		i := int(h[1] - '0')
		if err := ipams[i].ReleaseAddress(ctx, poolID, a); err != nil {
			t.Fatalf("%s release %s: %v", h, a, err)
		}
	}
	for i, m := range ipams {
		st, err := m.Status(poolID)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Addresses) != 0 {
			t.Errorf("h%d still holds %d addresses after every release", i, len(st.Addresses))
		}
	}
	t.Logf("1,200 addresses on 3 hosts, %d blocks moved to h1 and h2, no duplicate", moved)
}
