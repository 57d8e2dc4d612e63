package ipam_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/ipam"
	"github.com/tenet-net/tenet/ipam/ipamtest"
)

func TestSingleHostFillsPoolThenExhausted(t *testing.T) {
	c := ipamtest.NewCluster(0, 1)
	h := startHost(t, c, "h1", []string{"h1"})
	p := mustPool(t, h, "acme", "10.1.0.0/24", "")
	if p.ID != "acme/10.1.0.0/24" || p.Gateway.String() != "10.1.0.1" {
		t.Fatalf("pool = %+v", p)
	}
	seen := map[netip.Addr]bool{}
	for range 253 { // 256 minus network, broadcast and gateway
		a, err := h.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
		if err != nil {
			t.Fatalf("after %d: %v", len(seen), err)
		}
		if seen[a.Addr()] || a.Addr() == p.Gateway || a.Bits() != 24 {
			t.Fatalf("bad address %s (seen %v)", a, seen[a.Addr()])
		}
		seen[a.Addr()] = true
	}
	_, err := h.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
	if !errors.Is(err, ipam.ErrExhausted) || !strings.Contains(err.Error(), "acme/10.1.0.0/24") {
		t.Fatalf("err = %v, want ErrExhausted naming the pool", err)
	}
	for a := range seen {
		if err := h.m.ReleaseAddress(ctxT(t), p.ID, a); err != nil {
			t.Fatal(err)
		}
		if err := h.m.ReleaseAddress(ctxT(t), p.ID, a); err != nil {
			t.Fatalf("second release of %s: %v", a, err)
		}
	}
	st, _ := h.m.Status(p.ID)
	if len(st.Addresses) != 0 {
		t.Fatalf("after releasing all, %d addresses remain", len(st.Addresses))
	}
}

func TestTenantsAndOverlap(t *testing.T) {
	c := ipamtest.NewCluster(0, 1)
	h := startHost(t, c, "h1", []string{"h1"})
	a := mustPool(t, h, "acme", "10.1.0.0/24", "")
	b := mustPool(t, h, "bolt", "10.1.0.0/24", "")
	if a.ID == b.ID {
		t.Fatalf("two tenants got the same pool id %s", a.ID)
	}
	// The same address in both tenants.
	for _, id := range []string{a.ID, b.ID} {
		got, err := h.m.RequestAddress(ctxT(t), id, ipam.AddressRequest{Addr: netip.MustParseAddr("10.1.0.9")})
		if err != nil || got.String() != "10.1.0.9/24" {
			t.Fatalf("pool %s: %v, %v", id, got, err)
		}
	}
	// Identical request again: same pool (Docker's replay).
	if again := mustPool(t, h, "acme", "10.1.0.0/24", ""); again.ID != a.ID {
		t.Fatalf("identical RequestPool gave %s, want %s", again.ID, a.ID)
	}
	for _, tc := range []struct{ subnet, rng string }{
		{"10.1.0.0/16", ""}, {"10.1.0.128/25", ""}, {"10.1.0.0/24", "10.1.0.0/25"},
	} {
		req, err := ipam.ParsePoolRequest("default", "", tc.subnet, tc.rng, map[string]string{"tenant": "acme"}, false)
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.m.RequestPool(ctxT(t), req)
		if !errors.Is(err, ipam.ErrOverlap) {
			t.Errorf("pool %s range %q in acme: err = %v, want ErrOverlap", tc.subnet, tc.rng, err)
		}
	}
	if st, _ := h.m.Status(a.ID); len(st.Addresses) != 1 {
		t.Fatalf("a refused request changed state: %v", st.Addresses)
	}
}

func TestGatewayAuxAndRequestedAddress(t *testing.T) {
	c := ipamtest.NewCluster(0, 1)
	h := startHost(t, c, "h1", []string{"h1"})
	p := mustPool(t, h, "acme", "10.2.0.0/24", "10.2.0.128/25")
	ctx := ctxT(t)
	gw, err := h.m.RequestAddress(ctx, p.ID, ipam.AddressRequest{Kind: ipam.KindGateway})
	if err != nil || gw.String() != "10.2.0.1/24" {
		t.Fatalf("default gateway = %v, %v", gw, err)
	}
	gw, err = h.m.RequestAddress(ctx, p.ID, ipam.AddressRequest{Kind: ipam.KindGateway, Addr: netip.MustParseAddr("10.2.0.129")})
	if err != nil || gw.String() != "10.2.0.129/24" {
		t.Fatalf("--gateway = %v, %v", gw, err)
	}
	if _, err := h.m.RequestAddress(ctx, p.ID, ipam.AddressRequest{Kind: ipam.KindAux, Addr: netip.MustParseAddr("10.2.0.130")}); err != nil {
		t.Fatal(err)
	}
	a, err := h.m.RequestAddress(ctx, p.ID, ipam.AddressRequest{})
	if err != nil || a.String() != "10.2.0.128/24" {
		t.Fatalf("first address = %v, %v; want 10.2.0.128 (range start, not the subnet's network address)", a, err)
	}
	a, err = h.m.RequestAddress(ctx, p.ID, ipam.AddressRequest{})
	if err != nil || a.String() != "10.2.0.131/24" {
		t.Fatalf("second address = %v, %v; want 10.2.0.131 (skipping gateway and aux)", a, err)
	}
	for _, tc := range []struct {
		name string
		req  ipam.AddressRequest
		want error
	}{
		{"gateway as --ip", ipam.AddressRequest{Addr: netip.MustParseAddr("10.2.0.129")}, ipam.ErrInUse},
		{"aux as --ip", ipam.AddressRequest{Addr: netip.MustParseAddr("10.2.0.130")}, ipam.ErrInUse},
		{"taken --ip", ipam.AddressRequest{Addr: netip.MustParseAddr("10.2.0.131")}, ipam.ErrInUse},
		{"--ip outside the range", ipam.AddressRequest{Addr: netip.MustParseAddr("10.2.0.5")}, ipam.ErrNotInPool},
		{"--ip outside the subnet", ipam.AddressRequest{Addr: netip.MustParseAddr("10.3.0.5")}, ipam.ErrNotInPool},
		{"broadcast", ipam.AddressRequest{Addr: netip.MustParseAddr("10.2.0.255")}, ipam.ErrInUse},
	} {
		if _, err := h.m.RequestAddress(ctx, p.ID, tc.req); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	if got, err := h.m.RequestAddress(ctx, p.ID, ipam.AddressRequest{Addr: netip.MustParseAddr("10.2.0.200")}); err != nil || got.String() != "10.2.0.200/24" {
		t.Fatalf("--ip 10.2.0.200 = %v, %v", got, err)
	}
	if _, err := ipam.ParseAddress(p.ID, "10.1.0.300"); err == nil || err.Error() != "request address 10.1.0.300 in pool acme/10.2.0.0/24: not an address" {
		t.Errorf("ParseAddress error = %v", err)
	}
	for _, tc := range []struct {
		addr string
		want error
	}{{"10.3.0.1", ipam.ErrNotInPool}, {"10.2.0.140", nil}, {"10.2.0.129", nil}} {
		if err := h.m.ReleaseAddress(ctx, p.ID, netip.MustParseAddr(tc.addr)); !errors.Is(err, tc.want) {
			t.Errorf("release %s: err = %v, want %v", tc.addr, err, tc.want)
		}
	}
	if _, err := h.m.RequestAddress(ctx, "acme/10.9.0.0/24", ipam.AddressRequest{}); !errors.Is(err, ipam.ErrUnknownPool) {
		t.Errorf("unknown pool: err = %v", err)
	}
}

func TestIPv6Pool(t *testing.T) {
	c := ipamtest.NewCluster(0, 1)
	a := startHost(t, c, "a", []string{"a"})
	b := startHost(t, c, "b", []string{"a"})
	pa := mustPool(t, a, "acme", "fd00:1::/64", "")
	pb := mustPool(t, b, "acme", "fd00:1::/64", "")
	if pa != pb {
		t.Fatalf("hosts disagree on the pool: %+v vs %+v", pa, pb)
	}
	got := map[netip.Addr]string{}
	for i := range 200 {
		h := a
		if i%2 == 1 {
			h = b
		}
		p, err := h.m.RequestAddress(ctxT(t), pa.ID, ipam.AddressRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if prev, dup := got[p.Addr()]; dup {
			t.Fatalf("%s given to %s and %s", p.Addr(), prev, h.name)
		}
		got[p.Addr()] = h.name
	}
	if _, err := b.m.RequestAddress(ctxT(t), pa.ID, ipam.AddressRequest{Addr: netip.MustParseAddr("fd00:1::abcd:1")}); err != nil {
		t.Fatalf("--ip6 in a far block: %v", err)
	}
}

func TestHandoverToNonSeed(t *testing.T) {
	c := ipamtest.NewCluster(2*time.Millisecond, 7)
	a := startHost(t, c, "a", []string{"a"})
	b := startHost(t, c, "b", []string{"a"})
	p := mustPool(t, a, "acme", "10.4.0.0/24", "")
	mustPool(t, b, "acme", "10.4.0.0/24", "")
	x, err := b.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
	if err != nil {
		t.Fatal(err)
	}
	y, err := a.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if x == y {
		t.Fatalf("both hosts got %s", x)
	}
	sb, _ := b.m.Status(p.ID)
	sa, _ := a.m.Status(p.ID)
	for _, bb := range sb.Blocks {
		for _, ba := range sa.Blocks {
			if bb.Prefix.Overlaps(ba.Prefix) {
				t.Fatalf("block %s owned by both", bb.Prefix)
			}
		}
	}
	// --ip in a block the seed owns but has not used: handed over whole.
	if _, err := b.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{Addr: netip.MustParseAddr("10.4.0.200")}); err != nil {
		t.Fatalf("--ip in a free block of another host: %v", err)
	}
	// --ip of an address the seed uses: refused with a clear error, nothing changes.
	_, err = b.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{Addr: y.Addr()})
	if !errors.Is(err, ipam.ErrInUse) || !strings.Contains(err.Error(), "on host a") {
		t.Fatalf("--ip of an address another host uses: err = %v", err)
	}
	// --ip of a free address in a block the seed uses: the seed splits off
	// a part holding it.
	if _, err := b.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{Addr: y.Addr().Next()}); err != nil {
		t.Fatalf("--ip of a free address in a used block of another host: %v", err)
	}
	if _, err := a.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{Addr: y.Addr().Next()}); !errors.Is(err, ipam.ErrInUse) {
		t.Fatalf("the seed asking for the address it handed over: err = %v", err)
	}
}

func TestRestartKeepsAllocations(t *testing.T) {
	c := ipamtest.NewCluster(0, 1)
	store := &ipam.MemStore{}
	h := startHost(t, c, "h1", []string{"h1"}, func(cfg *ipam.Config) { cfg.Store = store })
	p := mustPool(t, h, "acme", "10.5.0.0/24", "")
	var before []netip.Addr
	for range 70 {
		a, err := h.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, a.Addr())
	}
	h.halt()
	h2 := startHost(t, c, "h1", []string{"h1"}, func(cfg *ipam.Config) { cfg.Store = store })
	st, err := h2.m.Status(p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(st.Addresses) != fmt.Sprint(before) {
		t.Fatalf("after restart: %v\nbefore: %v", st.Addresses, before)
	}
	a, err := h2.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range before {
		if a.Addr() == b {
			t.Fatalf("restarted host handed out %s again", b)
		}
	}
	// Docker has not replayed RequestPool (no reference yet): releasing
	// every address must not make the pool vanish under the network.
	for _, x := range append(before, a.Addr()) {
		if err := h2.m.ReleaseAddress(ctxT(t), p.ID, x); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h2.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{}); err != nil {
		t.Fatalf("pool gone after its addresses were released: %v", err)
	}
}

func TestRemoveHost(t *testing.T) {
	c := ipamtest.NewCluster(time.Millisecond, 3)
	seeds := []string{"a", "b", "c"}
	a := startHost(t, c, "a", seeds)
	b := startHost(t, c, "b", seeds)
	d := startHost(t, c, "c", seeds)
	p := mustPool(t, a, "acme", "10.6.0.0/24", "")
	mustPool(t, b, "acme", "10.6.0.0/24", "")
	mustPool(t, d, "acme", "10.6.0.0/24", "")
	dead, err := d.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.m.RemoveHost(ctxT(t), "c"); !errors.Is(err, ipam.ErrUnsafe) {
		t.Fatalf("removing a live host: err = %v, want ErrUnsafe", err)
	}
	// Let everyone see c's claim on its block before c dies, so the heir
	// has to take the block explicitly.
	eventually(t, 5*time.Second, func() error {
		for _, n := range []string{"a", "b"} {
			found := false
			for _, e := range c.Node(n).List("ipam/block/") {
				found = found || e.Host == "c"
			}
			if !found {
				return fmt.Errorf("host %s has not seen c's block entry", n)
			}
		}
		return nil
	})
	d.halt()
	c.Kill("c")
	// Two admins at once, and one of them twice.
	errs := make(chan error, 3)
	go func() { errs <- a.m.RemoveHost(ctxT(t), "c") }()
	go func() { errs <- b.m.RemoveHost(ctxT(t), "c") }()
	go func() { errs <- b.m.RemoveHost(ctxT(t), "c") }()
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Exactly one heir is recorded: the lowest-named requester (a, unless b
	// saw a's request before its own admin command ran).
	var heir string
	eventually(t, 10*time.Second, func() error {
		heirs := map[string]bool{}
		for _, e := range c.Node("a").List("ipam/removal/c") {
			var v struct {
				Heir string `json:"heir"`
				Done bool   `json:"done"`
			}
			if err := json.Unmarshal(e.Value, &v); err != nil {
				return err
			}
			if v.Done {
				heirs[v.Heir] = true
				heir = v.Heir
			}
		}
		if len(heirs) != 1 {
			return fmt.Errorf("heirs recorded: %v, want exactly one", heirs)
		}
		return nil
	})
	hh, other := a, b
	if heir == "b" {
		hh, other = b, a
	}
	// The removed host's containers are gone for good, so its addresses are
	// free again on the heir, and only there.
	eventually(t, 10*time.Second, func() error {
		_, err := hh.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{Addr: dead.Addr()})
		return err
	})
	// The other host refuses it too: until gossip brings it the completed
	// reclaim, because the reclaim is under way; then because the heir
	// uses it.
	eventually(t, 10*time.Second, func() error {
		_, err := other.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{Addr: dead.Addr()})
		if err == nil {
			t.Fatalf("%s was given the reclaimed address the heir reused", other.name)
		}
		if !errors.Is(err, ipam.ErrInUse) {
			return fmt.Errorf("%s asking for the reclaimed address the heir reused: err = %v, want ErrInUse", other.name, err)
		}
		return nil
	})
	// A free address of the reclaimed block: the heir hands a part over.
	if _, err := other.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{Addr: dead.Addr().Next()}); err != nil {
		t.Fatalf("%s asking for a free address of the reclaimed block: %v", other.name, err)
	}
	if _, err := hh.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{Addr: dead.Addr().Next()}); !errors.Is(err, ipam.ErrInUse) {
		t.Fatalf("heir asking for the address it handed over: err = %v, want ErrInUse", err)
	}
	checkEpochs(t, c.Node("a"))
	checkEpochs(t, c.Node("b"))
	// Running it again after completion changes nothing.
	if err := b.m.RemoveHost(ctxT(t), "c"); err != nil {
		t.Fatal(err)
	}
	// The removed host comes back anyway: it learns it was removed and
	// allocates nothing more.
	c.Revive("c")
	back := startHost(t, c, "c", seeds)
	mustPool(t, back, "acme", "10.6.0.0/24", "")
	eventually(t, 10*time.Second, func() error {
		_, err := back.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
		if !errors.Is(err, ipam.ErrRemoved) {
			return fmt.Errorf("returning removed host: err = %v, want ErrRemoved", err)
		}
		return nil
	})
}

func TestRemoveHostRefusedDuringPartition(t *testing.T) {
	c := ipamtest.NewCluster(0, 3)
	seeds := []string{"a", "b", "c"}
	a := startHost(t, c, "a", seeds)
	startHost(t, c, "b", seeds)
	startHost(t, c, "c", seeds)
	c.Partition([]string{"a", "c"}, []string{"b"})
	c.Kill("c")
	err := a.m.RemoveHost(ctxT(t), "c")
	if !errors.Is(err, ipam.ErrUnsafe) || !strings.Contains(err.Error(), "host b is unreachable") {
		t.Fatalf("err = %v, want ErrUnsafe naming b", err)
	}
	for _, bad := range []string{"a", "", "x/y"} {
		if err := a.m.RemoveHost(ctxT(t), bad); err == nil {
			t.Errorf("RemoveHost(%q) succeeded", bad)
		}
	}
}

// TestReservedAcrossHosts: hosts given different --gateway and --aux-address
// flags still never hand another host's gateway or aux address to a
// container.
func TestReservedAcrossHosts(t *testing.T) {
	c := ipamtest.NewCluster(time.Millisecond, 5)
	seeds := []string{"a", "b"}
	small := func(cfg *ipam.Config) { cfg.BlockBitsV4 = 28 }
	a := startHost(t, c, "a", seeds, small)
	b := startHost(t, c, "b", seeds, small)
	p := mustPool(t, a, "acme", "10.7.0.0/27", "") // block .0/28 is a's, .16/28 is b's
	mustPool(t, b, "acme", "10.7.0.0/27", "")
	// b's network has the default gateway, as Docker's gateway request says.
	if _, err := b.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{Kind: ipam.KindGateway}); err != nil {
		t.Fatal(err)
	}
	gw := netip.MustParseAddr("10.7.0.30") // in b's block
	aux := netip.MustParseAddr("10.7.0.20")
	for _, r := range []ipam.AddressRequest{{Kind: ipam.KindGateway, Addr: gw}, {Kind: ipam.KindAux, Addr: aux}} {
		if _, err := a.m.RequestAddress(ctxT(t), p.ID, r); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, func() error {
		for _, h := range []*host{a, b} {
			for _, n := range []string{"a", "b"} {
				found := false
				for _, e := range c.Node(h.name).List("ipam/pool/") {
					found = found || e.Host == n
				}
				if !found {
					return fmt.Errorf("%s has not seen %s's pool entry", h.name, n)
				}
			}
		}
		return nil
	})
	got := map[netip.Addr]bool{}
	for _, h := range []*host{a, b} {
		for {
			x, err := h.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
			if errors.Is(err, ipam.ErrExhausted) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got[x.Addr()] = true
		}
	}
	for _, r := range []string{"10.7.0.1", "10.7.0.30", "10.7.0.20", "10.7.0.0", "10.7.0.31"} {
		if got[netip.MustParseAddr(r)] {
			t.Errorf("reserved %s handed to a container", r)
		}
	}
	if len(got) != 32-5 {
		t.Errorf("handed out %d addresses, want 27", len(got))
	}
}

func TestReleasePoolAndUnknownAddress(t *testing.T) {
	c := ipamtest.NewCluster(0, 1)
	a := startHost(t, c, "a", []string{"a"})
	b := startHost(t, c, "b", []string{"a"})
	p := mustPool(t, a, "acme", "10.8.0.0/24", "")
	mustPool(t, a, "acme", "10.8.0.0/24", "") // a second reference (Docker's replay)
	mustPool(t, b, "acme", "10.8.0.0/24", "")
	x, err := a.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// b never handed x out: releasing it there is an error that changes nothing.
	if err := b.m.ReleaseAddress(ctxT(t), p.ID, x.Addr()); !errors.Is(err, ipam.ErrNotOwned) {
		t.Fatalf("release on a host that does not own the block: err = %v", err)
	}
	if st, _ := a.m.Status(p.ID); len(st.Addresses) != 1 {
		t.Fatalf("a refused release changed a: %v", st.Addresses)
	}
	for range 2 {
		if err := a.m.ReleasePool(ctxT(t), p.ID); err != nil {
			t.Fatal(err)
		}
	}
	// Still known: an address is allocated in it.
	if _, err := a.m.Status(p.ID); err != nil {
		t.Fatalf("pool dropped while an address is allocated: %v", err)
	}
	if err := a.m.ReleaseAddress(ctxT(t), p.ID, x.Addr()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.m.Status(p.ID); !errors.Is(err, ipam.ErrUnknownPool) {
		t.Fatalf("pool with no reference and no address still known: %v", err)
	}
	if err := a.m.ReleasePool(ctxT(t), p.ID); err != nil {
		t.Fatalf("ReleasePool is idempotent: %v", err)
	}
	if err := a.m.ReleaseAddress(ctxT(t), p.ID, x.Addr()); err != nil {
		t.Fatalf("release after the pool is gone is a no-op: %v", err)
	}
}

// TestRestartWithoutStoreReplay: a host that lost its local state but not
// the cluster's keeps the blocks it obtained (its entries are in the
// replicated table), and Docker's request replay (RequiresRequestReplay)
// re-allocates its containers' addresses there.
func TestRestartWithoutStoreReplay(t *testing.T) {
	c := ipamtest.NewCluster(time.Millisecond, 9)
	seeds := []string{"a"}
	startHost(t, c, "a", seeds)
	b := startHost(t, c, "b", seeds)
	p := mustPool(t, b, "acme", "10.9.0.0/24", "")
	var had []netip.Addr
	for range 70 { // more than one block, all obtained from a
		x, err := b.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
		if err != nil {
			t.Fatal(err)
		}
		had = append(had, x.Addr())
	}
	before, _ := b.m.Status(p.ID)
	b.halt()
	b2 := startHost(t, c, "b", seeds)
	// Before Docker replays, another host asks for b's blocks: b has lost
	// its allocations, so it must not give any of them away.
	cc := startHost(t, c, "c", seeds)
	mustPool(t, cc, "acme", "10.9.0.0/24", "")
	for {
		x, err := cc.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
		if errors.Is(err, ipam.ErrExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(had, x.Addr()) {
			t.Fatalf("c got %s, still used by a container of b", x.Addr())
		}
	}
	mustPool(t, b2, "acme", "10.9.0.0/24", "") // replayed RequestPool
	after, _ := b2.m.Status(p.ID)
	if fmt.Sprint(blocksOf(after)) != fmt.Sprint(blocksOf(before)) {
		t.Fatalf("blocks after restart %v, before %v", blocksOf(after), blocksOf(before))
	}
	for _, x := range had { // replayed RequestAddress with the stored address
		if _, err := b2.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{Addr: x}); err != nil {
			t.Fatalf("replay of %s: %v", x, err)
		}
	}
	y, err := b2.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range had {
		if x == y.Addr() {
			t.Fatalf("%s handed out twice", x)
		}
	}
}

func blocksOf(s ipam.PoolStatus) []netip.Prefix {
	var out []netip.Prefix
	for _, b := range s.Blocks {
		out = append(out, b.Prefix)
	}
	return out
}

// TestImpossibleConflictResolved forges what the protocol never produces:
// another host claiming, at a higher epoch, a block this host allocates
// from. It is resolved the same way on every host (highest epoch, then
// lowest name), this host keeps its allocated addresses but adds none
// from that block, and nothing else breaks.
func TestImpossibleConflictResolved(t *testing.T) {
	c := ipamtest.NewCluster(0, 1)
	a := startHost(t, c, "a", []string{"a"})
	p := mustPool(t, a, "acme", "10.11.0.0/24", "")
	first, err := a.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
	if err != nil {
		t.Fatal(err)
	}
	block := netip.PrefixFrom(first.Addr(), 26).Masked()
	forger := c.Node("x")
	forger.Put("ipam/block/"+p.ID+"|"+block.String(), []byte(`{"epoch":7,"to":"x"}`))
	eventually(t, 5*time.Second, func() error {
		x, err := a.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{})
		if err != nil {
			return err
		}
		if block.Contains(x.Addr()) {
			return fmt.Errorf("still allocating %s from the block claimed by x", x.Addr())
		}
		return nil
	})
	st, _ := a.m.Status(p.ID)
	if !slices.Contains(st.Addresses, first.Addr()) {
		t.Fatalf("the container's address %s was dropped: %v", first.Addr(), st.Addresses)
	}
	for _, x := range st.Addresses {
		if block.Contains(x) {
			if err := a.m.ReleaseAddress(ctxT(t), p.ID, x); err != nil {
				t.Fatalf("releasing an address of the lost block: %v", err)
			}
		}
	}
	st, _ = a.m.Status(p.ID)
	for _, b := range st.Blocks {
		if b.Prefix == block {
			t.Fatalf("emptied block %s lost to x is still held", block)
		}
	}
}

// TestConfigMismatchLogged: hosts configured with different seeds break the
// uniqueness argument; one host cannot prevent it, so it is logged loudly.
func TestConfigMismatchLogged(t *testing.T) {
	c := ipamtest.NewCluster(0, 1)
	var buf syncBuffer
	a := startHost(t, c, "a", []string{"a"}, func(cfg *ipam.Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(&buf, nil))
	})
	b := startHost(t, c, "b", []string{"a", "b"})
	mustPool(t, a, "acme", "10.12.0.0/24", "")
	mustPool(t, b, "acme", "10.12.0.0/24", "")
	eventually(t, 5*time.Second, func() error {
		if !strings.Contains(buf.String(), "hosts disagree on Seeds or block size") {
			return fmt.Errorf("no loud log yet")
		}
		return nil
	})
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
