package resolver

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/tenet-net/tenet/internal/core"
)

// BenchmarkLookupLargeNetwork: one query's work (find the asking
// container, read its network's names, answer) on a network with 10,000
// endpoints on other hosts and 100 here.
func BenchmarkLookupLargeNetwork(b *testing.B) {
	local := &fakeLocal{nets: []core.Network{network("acme", "web", "10.0.0.0/8", true)}}
	for i := range 100 {
		local.eps = append(local.eps, endpoint(fmt.Sprint("l", i), "acme/web", netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}).String(), fmt.Sprint("local", i)))
	}
	cl := &fakeCluster{remotes: map[string][]core.Remote{}}
	for i := range 10000 {
		cl.remotes["acme/web"] = append(cl.remotes["acme/web"], core.Remote{ID: fmt.Sprint("r", i), Network: "acme/web", Host: "h1",
			IP: netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), Names: []string{fmt.Sprint("remote", i), "alias"}})
	}
	cfg := DefaultConfig()
	cfg.Host, cfg.Local, cfg.Cluster = "h0", local, cl
	r := &Resolver{cfg: cfg, cache: newRemoteCache()}
	r.cache.setLive(true)
	lookup := r.lookupFor("acme")
	src := netip.MustParseAddr("10.1.0.5")
	q := question("remote5000.", 1)
	b.ReportAllocs()
	for b.Loop() {
		v, _, ok := lookup(src)
		if !ok {
			b.Fatal("no network")
		}
		if resp, ok := Answer(q, v); !ok || len(resp.Answer) != 1 {
			b.Fatal("no answer")
		}
	}
}
