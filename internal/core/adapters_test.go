package core_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/core"
)

// The gossip adapter against real memberlist nodes on loopback: what the
// core reads when it plans.
func TestGossipClusterReadsTheRemoteView(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a gossip ring on loopback")
	}
	key, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*gossip.Node
	var cancels []context.CancelFunc
	var wg sync.WaitGroup
	t.Cleanup(func() {
		for _, c := range cancels {
			c()
		}
		wg.Wait()
	})
	for i := range 2 {
		cfg := gossip.DefaultConfig()
		cfg.NodeName = fmt.Sprintf("h%d", i)
		cfg.BindAddr, cfg.BindPort = netip.MustParseAddr("127.0.0.1"), 0
		cfg.VTEP = netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)})
		cfg.Keys, cfg.Logger = [][]byte{key}, slog.New(slog.DiscardHandler)
		if i > 0 {
			cfg.Seeds = []string{nodes[0].Addr()}
		}
		n, err := gossip.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		nodes, cancels = append(nodes, n), append(cancels, cancel)
		wg.Go(func() { _ = n.Run(ctx) })
	}
	a, b := core.GossipCluster{Node: nodes[0]}, core.GossipCluster{Node: nodes[1]}
	eventually(t, "the ring forms", func() bool { return len(nodes[0].Members()) == 2 })
	if err := a.Attach("acme/web"); err != nil {
		t.Fatal(err)
	}
	// h1 sends its endpoints to the hosts it knows have the network.
	eventually(t, "h1 sees h0 attached", func() bool {
		return slices.ContainsFunc(b.Peers("acme/web"), func(p core.Peer) bool { return p.Host == "h0" })
	})
	mac := net.HardwareAddr{2, 0x7e, 10, 1, 0, 9}
	if err := b.PutEndpoint(gossip.Endpoint{ID: "r9", Network: "acme/web", MAC: mac, IP: netip.MustParseAddr("10.1.0.9"),
		Names: []string{"db", "postgres"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "h0 sees h1's endpoint", func() bool { return len(a.Remotes("acme/web")) == 1 })
	r := a.Remotes("acme/web")[0]
	if r.Host != "h1" || r.VTEP != netip.MustParseAddr("198.51.100.11") || r.MAC.String() != mac.String() ||
		!slices.Equal(r.Names, []string{"db", "postgres"}) || !r.DownSince.IsZero() || r.Version == 0 {
		t.Fatalf("remote %+v", r)
	}
	// A rewrite carries a higher version: of two records claiming one
	// address, desired keeps the newer by it.
	if err := b.PutEndpoint(gossip.Endpoint{ID: "r9", Network: "acme/web", MAC: mac, IP: netip.MustParseAddr("10.1.0.9"),
		Names: []string{"db"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "h0 sees the rewrite", func() bool {
		rs := a.Remotes("acme/web")
		return len(rs) == 1 && len(rs[0].Names) == 1
	})
	if v := a.Remotes("acme/web")[0].Version; v <= r.Version {
		t.Errorf("version of the rewrite %d, not above the first's %d", v, r.Version)
	}
	// Read by MAC (core.ClaimReader), through real gossip: r9 by its MAC,
	// a second endpoint of h1 claiming r9's address with it, nothing for
	// a MAC nobody has.
	if err := b.PutEndpoint(gossip.Endpoint{ID: "thief", Network: "acme/web", MAC: net.HardwareAddr{2, 0x7e, 10, 1, 0, 10},
		IP: netip.MustParseAddr("10.1.0.9")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "h0 sees the second claim", func() bool { return len(a.Remotes("acme/web")) == 2 })
	var ids []string
	for _, c := range a.RemoteClaims("acme/web", []net.HardwareAddr{mac}) {
		ids = append(ids, c.ID+"@"+c.Host)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"r9@h1", "thief@h1"}) {
		t.Errorf("claims of r9's MAC = %v, want r9 and the endpoint sharing its address", ids)
	}
	if got := a.RemoteClaims("acme/web", []net.HardwareAddr{{2, 0x7e, 10, 1, 0, 99}}); len(got) != 0 {
		t.Errorf("claims of an unknown MAC = %+v", got)
	}
	b.DeleteEndpoint("thief")
	eventually(t, "the second claim goes", func() bool { return len(a.Remotes("acme/web")) == 1 })
	eventually(t, "h1 is a peer of the network", func() bool {
		ps := a.Peers("acme/web")
		return slices.ContainsFunc(ps, func(p core.Peer) bool { return p.Host == "h1" && p.VTEP == netip.MustParseAddr("198.51.100.11") })
	})
	eventually(t, "h0 has synced the network", func() bool { return a.Synced("acme/web") })
	hosts := a.Hosts()
	if len(hosts) != 2 {
		t.Fatalf("hosts %+v", hosts)
	}
	// h1 dies: its endpoint is still read, with the time it went down.
	cancels[1]()
	eventually(t, "h1 is reported down", func() bool {
		rs := a.Remotes("acme/web")
		return len(rs) == 1 && !rs[0].DownSince.IsZero()
	})
	if time.Since(a.Remotes("acme/web")[0].DownSince) > time.Minute {
		t.Error("DownSince is not recent")
	}
	eventually(t, "h1 is a down peer", func() bool {
		ps := a.Peers("acme/web")
		return slices.ContainsFunc(ps, func(p core.Peer) bool { return p.Host == "h1" && !p.DownSince.IsZero() })
	})
	for _, h := range a.Hosts() {
		if h.Name == "h1" && (h.Alive || h.DownSince.IsZero()) {
			t.Errorf("h1 after its death: %+v", h)
		}
	}
}
