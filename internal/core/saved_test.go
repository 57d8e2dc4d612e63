package core_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/core/coretest"
	"github.com/tenet-net/tenet/overlay"
)

// TestWhatASaveLeavesOnDiskIsTheLocalState: the saver writes only what
// changed since its last write (the core notes each change), so a change
// it was not told of would be lost at the next restart. Random operations
// through the core's API, failed ones included, each followed by reading
// the state directory into a fresh core: it must hold exactly the running
// core's networks and endpoints, every time. Also across a restart in the
// middle and through garbage collection.
func TestWhatASaveLeavesOnDiskIsTheLocalState(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 7))
	dir, nsdir := t.TempDir(), t.TempDir()
	dp := &coretest.Datapath{MTU: 1450}
	// Garbage collection changes endpoints too: it marks a namespace
	// seen, and removes an endpoint whose seen namespace is gone.
	cfg := config(t, dir)
	cfg.GCInterval = 20 * time.Millisecond
	h := start(t, dp, coretest.NewCluster("h0"), cfg)
	ns := func(i int) string { return filepath.Join(nsdir, fmt.Sprint("ns", i)) }
	for i := range 2 {
		if err := os.WriteFile(ns(i), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	nets := []core.NetworkSpec{web(),
		{Tenant: "acme", Name: "db", Subnet: netip.MustParsePrefix("10.2.0.0/24"), Ref: "docker-n2"},
		{Tenant: "globex", Name: "web", Subnet: netip.MustParsePrefix("10.1.0.0/24"), Internal: true}}
	epOn := func(n core.NetworkSpec, i int) core.EndpointSpec {
		a := n.Subnet.Addr().As4()
		a[3] = byte(10 + i)
		return core.EndpointSpec{ID: fmt.Sprintf("%s-%s-%02d", n.Tenant, n.Name, i), Network: n.Key(),
			IP: netip.PrefixFrom(netip.AddrFrom4(a), 24)}
	}
	pick := func() core.NetworkSpec { return nets[rnd.IntN(len(nets))] }
	someEndpoint := func() (core.Endpoint, bool) {
		eps := h.c.Endpoints()
		if len(eps) == 0 {
			return core.Endpoint{}, false
		}
		return eps[rnd.IntN(len(eps))], true
	}
	failNext := func() bool {
		if rnd.IntN(6) == 0 {
			dp.FailNext(errors.New("injected"))
			return true
		}
		return false
	}
	// differ says how the state on disk differs from the core's ("" if
	// it does not).
	differ := func() string {
		fresh, err := core.New(cfg, &coretest.Datapath{MTU: 1450}, coretest.NewCluster("h0"))
		if err != nil {
			return "read the state: " + err.Error()
		}
		if got, want := fresh.Networks(), h.c.Networks(); !reflect.DeepEqual(got, want) {
			return fmt.Sprintf("networks on disk\n%+v\nin memory\n%+v", got, want)
		}
		got, want := normal(fresh.Endpoints()), normal(h.c.Endpoints())
		if !reflect.DeepEqual(got, want) {
			return fmt.Sprintf("endpoints on disk\n%sin memory\n%s", dump(got), dump(want))
		}
		return ""
	}
	// A failed call is undone in the background (its endpoint was on
	// disk while pending): wait for the undo's save.
	check := func(step int, what string) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for {
			d := differ()
			if d == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("step %d (%s): %s", step, what, d)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	c := ctx(t)
	created := 0
	for step := range 400 {
		var what string
		switch op := rnd.IntN(20); {
		case op < 2:
			n := pick()
			what = "create network " + n.Key()
			if failNext() {
				what += " (failing)"
			}
			_, _ = h.c.CreateNetwork(c, n)
		case op < 3:
			n := pick()
			what = "delete network " + n.Key()
			_ = h.c.DeleteNetwork(c, n.Key())
		case op < 10:
			n := pick()
			e := epOn(n, rnd.IntN(12))
			what = "create endpoint " + e.ID
			if failNext() {
				what += " (failing)"
			}
			if _, err := h.c.CreateEndpoint(c, e); err == nil {
				created++
			}
		case op < 13:
			e, ok := someEndpoint()
			if !ok {
				continue
			}
			what = "delete endpoint " + e.ID
			_ = h.c.DeleteEndpoint(c, e.ID)
		case op < 15:
			e, ok := someEndpoint()
			if !ok {
				continue
			}
			what = "attach endpoint " + e.ID
			_, _, _ = h.c.AttachEndpoint(c, e.ID, ns(rnd.IntN(3)))
		case op < 17:
			e, ok := someEndpoint()
			if !ok {
				continue
			}
			names := [][]string{nil, {"db"}, {"db", "primary"}, {"cache"}}[rnd.IntN(4)]
			what = fmt.Sprintf("names of %s: %v", e.ID, names)
			_ = h.c.SetEndpointNames(c, e.ID, names)
		case op < 18:
			// ns1 comes and goes (ns0 stays, ns2 never appears).
			what = "namespace ns1 comes or goes"
			if _, err := os.Stat(ns(1)); err == nil {
				_ = os.Remove(ns(1))
			} else {
				_ = os.WriteFile(ns(1), nil, 0o600)
			}
		case op < 19:
			e, ok := someEndpoint()
			if !ok {
				continue
			}
			var reqs []core.PortRequest
			if rnd.IntN(3) > 0 {
				reqs = []core.PortRequest{{Proto: overlay.TCP, HostPort: uint16(8000 + rnd.IntN(4)), Port: 80}}
			}
			what = fmt.Sprintf("ports of %s: %v", e.ID, reqs)
			if failNext() {
				what += " (failing)"
			}
			_, _ = h.c.PublishPorts(c, e.ID, reqs)
		default:
			what = "restart"
			h.stop()
			h = start(t, dp, coretest.NewCluster("h0"), cfg)
		}
		check(step, what)
	}
	if created < 20 {
		t.Errorf("only %d endpoints were created: the operations did not reach their goal", created)
	}
}

// normal drops what a reload does not keep apart from the running core:
// the nil/empty distinction of slices, the MAC's capacity.
func normal(eps []core.Endpoint) []core.Endpoint {
	out := make([]core.Endpoint, len(eps))
	for i, e := range eps {
		e.MAC = append([]byte(nil), e.MAC...)
		if len(e.Names) == 0 {
			e.Names = nil
		}
		if len(e.Ports) == 0 {
			e.Ports = nil
		}
		out[i] = e
	}
	return out
}

func dump(eps []core.Endpoint) string {
	var b strings.Builder
	for _, e := range eps {
		fmt.Fprintf(&b, "  %+v\n", e)
	}
	return b.String()
}
