package ipam_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tenet-net/tenet/ipam"
	"github.com/tenet-net/tenet/ipam/ipamtest"
)

// docker issues RequestAddress calls as Docker 20.10 does, through the
// driver glue's decoding: no option for endpoints (the driver no longer asks
// for RequiresMACAddress) nor for aux addresses, RequestAddressType for the
// gateway; haveNetwork is whether the driver already has the network.
type docker struct {
	t      *testing.T
	h      *host
	poolID string
}

func (d docker) request(addr string, opts map[string]string, haveNetwork bool) (netip.Prefix, error) {
	d.t.Helper()
	r, err := ipam.ParseAddressRequest(d.poolID, addr, opts, haveNetwork)
	if err != nil {
		return netip.Prefix{}, err
	}
	return d.h.m.RequestAddress(ctxT(d.t), d.poolID, r)
}

var gatewayOpts = map[string]string{ipam.OptRequestAddressType: ipam.OptGatewayType}

// create runs `docker network create --subnet S [--gateway G] [--aux-address ...]`:
// RequestPool, the gateway, each aux address, then (not here) CreateNetwork.
func (d docker) create(t *testing.T, subnet, gateway string, aux ...string) {
	t.Helper()
	mustPool(t, d.h, "acme", subnet, "")
	if _, err := d.request(gateway, gatewayOpts, false); err != nil {
		t.Fatalf("gateway %q: %v", gateway, err)
	}
	for _, a := range aux {
		if got, err := d.request(a, nil, false); err != nil || got.Addr().String() != a {
			t.Fatalf("aux address %s = %v, %v", a, got, err)
		}
	}
}

// replay runs what dockerd does at its start (RequiresRequestReplay): per
// network, RequestPool, the gateway it stored, the aux addresses, then each
// stored endpoint's address, all once the driver has the network.
func (d docker) replay(t *testing.T, subnet, gateway string, aux []string, endpoints []string) []error {
	t.Helper()
	mustPool(t, d.h, "acme", subnet, "")
	if _, err := d.request(gateway, gatewayOpts, true); err != nil {
		t.Fatalf("replayed gateway %s: %v", gateway, err)
	}
	for _, a := range aux {
		if got, err := d.request(a, nil, true); err != nil || got.Addr().String() != a {
			t.Fatalf("replayed aux address %s = %v, %v", a, got, err)
		}
	}
	var errs []error
	for _, e := range endpoints {
		_, err := d.request(e, nil, true)
		errs = append(errs, err)
	}
	return errs
}

func wantRefused(t *testing.T, what string, err error, reason string) {
	t.Helper()
	if !errors.Is(err, ipam.ErrInUse) || !strings.Contains(err.Error(), reason) {
		t.Errorf("%s: err = %v, want ErrInUse naming %q", what, err, reason)
	}
}

// TestDockerSequences walks the call sequences Docker 20.10 makes without
// RequiresMACAddress (issue 10, point 1): network create with aux
// addresses, docker run with and without --ip, dockerd's replay at its
// start, tenetd restarted with its store, and a host rebooted (both). An
// aux address is reserved at create, accepted again when replayed, and
// refused to any container, every time. On f959d08, where no option meant
// an aux address, `docker run --ip` was reserved as an aux address (answer
// 200, no allocation) and so was every replayed endpoint.
func TestDockerSequences(t *testing.T) {
	c := ipamtest.NewCluster(0, 41)
	store := &ipam.MemStore{}
	withStore := func(cfg *ipam.Config) { cfg.Store = store }
	h := startHost(t, c, "a", []string{"a"}, withStore)
	const subnet = "10.1.0.0/24"
	d := docker{t: t, h: h, poolID: "acme/" + subnet}
	aux := []string{"10.1.0.3", "10.1.0.4"}
	d.create(t, subnet, "", aux...)
	// CreateNetwork done: from now on the driver has the network.
	ep, err := d.request("", nil, true)
	if err != nil || ep.Addr().String() != "10.1.0.2" {
		t.Fatalf("endpoint = %v, %v; want 10.1.0.2", ep, err)
	}
	ep2, err := d.request("", map[string]string{ipam.OptEndpointName: "web"}, true)
	if err != nil || ep2.Addr().String() != "10.1.0.5" {
		t.Fatalf("endpoint (newer Docker) = %v, %v; want 10.1.0.5, past the aux addresses", ep2, err)
	}
	if got, err := d.request("10.1.0.9", nil, true); err != nil || got.Addr().String() != "10.1.0.9" {
		t.Fatalf("docker run --ip 10.1.0.9 = %v, %v", got, err)
	}
	_, err = d.request("10.1.0.3", nil, true)
	wantRefused(t, "docker run --ip <aux address>", err, "aux address")
	st, _ := h.m.Status(d.poolID)
	if fmt.Sprint(st.Addresses) != "[10.1.0.2 10.1.0.5 10.1.0.9]" {
		t.Fatalf("allocated %v, want [10.1.0.2 10.1.0.5 10.1.0.9]", st.Addresses)
	}

	// dockerd restarts (crashed: its endpoints are still in its store).
	errs := d.replay(t, subnet, "10.1.0.1", aux, []string{"10.1.0.2", "10.1.0.9"})
	for _, err := range errs { // still allocated here: Docker warns and goes on
		if !errors.Is(err, ipam.ErrInUse) {
			t.Errorf("replayed endpoint still allocated: err = %v, want ErrInUse", err)
		}
	}
	_, err = d.request("10.1.0.4", nil, true)
	wantRefused(t, "docker run --ip <aux address> after the replay", err, "aux address")
	_, err = d.request("10.1.0.4", nil, true)
	wantRefused(t, "a second replay of an aux address", err, "aux address")

	// tenetd restarts with its store; dockerd keeps running.
	h.halt()
	h = startHost(t, c, "a", []string{"a"}, withStore)
	d.h = h
	for _, a := range aux {
		_, err = d.request(a, nil, true)
		wantRefused(t, "docker run --ip <aux address> after a tenetd restart", err, "aux address")
	}
	_, err = d.request("10.1.0.1", nil, true)
	wantRefused(t, "docker run --ip <gateway> after a tenetd restart", err, "gateway")
	if got, err := d.request("", nil, true); err != nil || got.Addr().String() != "10.1.0.6" {
		t.Fatalf("endpoint after a tenetd restart = %v, %v; want 10.1.0.6", got, err)
	}

	// The host reboots: tenetd starts with its store, then dockerd replays.
	h.halt()
	h = startHost(t, c, "a", []string{"a"}, withStore)
	d.h = h
	d.replay(t, subnet, "10.1.0.1", aux, nil)
	// The stale endpoints are deleted by Docker (ReleaseAddress), and the
	// containers start again.
	for _, a := range []string{"10.1.0.2", "10.1.0.5", "10.1.0.6", "10.1.0.9"} {
		if err := h.m.ReleaseAddress(ctxT(t), d.poolID, netip.MustParseAddr(a)); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]bool{}
	for range 10 {
		a, err := d.request("", nil, true)
		if err != nil {
			t.Fatal(err)
		}
		got[a.Addr().String()] = true
	}
	for _, r := range append([]string{"10.1.0.0", "10.1.0.1"}, aux...) {
		if got[r] {
			t.Fatalf("reserved %s handed to a container after a reboot: %v", r, got)
		}
	}
	// Docker removes the network: gateway, aux addresses, pool.
	for _, a := range append([]string{"10.1.0.1"}, aux...) {
		if err := h.m.ReleaseAddress(ctxT(t), d.poolID, netip.MustParseAddr(a)); err != nil {
			t.Fatal(err)
		}
	}
	if a, err := d.request("10.1.0.3", nil, true); err != nil {
		t.Fatalf("a released aux address as --ip: %v, %v", a, err)
	}
}

// TestReplayWithoutStore: tenetd lost its state and dockerd replays. The
// driver still has the network, so the aux addresses look like --ip: they
// are allocated here (never handed to another container) rather than lost.
func TestReplayWithoutStore(t *testing.T) {
	c := ipamtest.NewCluster(0, 42)
	h := startHost(t, c, "a", []string{"a"})
	d := docker{t: t, h: h, poolID: "acme/10.1.0.0/24"}
	d.replay(t, "10.1.0.0/24", "10.1.0.1", []string{"10.1.0.3"}, nil)
	for range 5 {
		a, err := d.request("", nil, true)
		if err != nil || a.Addr().String() == "10.1.0.3" || a.Addr().String() == "10.1.0.1" {
			t.Fatalf("endpoint = %v, %v", a, err)
		}
	}
}

// TestNetworkAddressesRefusedWithReason: a container never gets the
// network address, the broadcast address, the gateway or an aux address,
// whichever way it asks, and the error says which one it named (issue 10,
// point 7). On f959d08, the same wire requests for the gateway and the
// broadcast address were answered 200 (taken as aux addresses).
func TestNetworkAddressesRefusedWithReason(t *testing.T) {
	c := ipamtest.NewCluster(0, 43)
	seeds := []string{"a", "b"}
	a := startHost(t, c, "a", seeds)
	b := startHost(t, c, "b", seeds)
	d := docker{t: t, h: a, poolID: "acme/10.1.0.0/24"}
	d.create(t, "10.1.0.0/24", "", "10.1.0.3")
	db := docker{t: t, h: b, poolID: d.poolID}
	db.create(t, "10.1.0.0/24", "", "10.1.0.77") // another host's aux address
	eventually(t, 5*time.Second, func() error {
		_, err := d.request("10.1.0.77", map[string]string{ipam.OptEndpointName: "x"}, true)
		if err == nil {
			// Too early: a handed it out. Give it back and ask again.
			if rerr := a.m.ReleaseAddress(ctxT(t), d.poolID, netip.MustParseAddr("10.1.0.77")); rerr != nil {
				t.Fatal(rerr)
			}
			return fmt.Errorf("b's aux address not yet known on a: 10.1.0.77 was handed out")
		}
		if !strings.Contains(err.Error(), "host b") {
			return fmt.Errorf("b's aux address not yet known on a: %v", err)
		}
		return nil
	})
	for _, tc := range []struct{ addr, reason string }{
		{"10.1.0.0", "the network address of 10.1.0.0/24"},
		{"10.1.0.255", "the broadcast address of 10.1.0.0/24"},
		{"10.1.0.1", "the network's gateway"},
		{"10.1.0.3", "an aux address of the network"},
		{"10.1.0.77", "reserved as gateway or aux address by host b"},
	} {
		for _, opts := range []map[string]string{nil, {ipam.OptEndpointName: "web"}, {ipam.OptMACAddress: "02:00:00:00:00:01"}} {
			_, err := d.request(tc.addr, opts, true)
			wantRefused(t, fmt.Sprintf("container asking for %s with options %v", tc.addr, opts), err, tc.reason)
			if err != nil && !strings.Contains(err.Error(), tc.addr) {
				t.Errorf("error %q does not name %s", err, tc.addr)
			}
		}
	}
	// Aux addresses that cannot be.
	mustPool(t, a, "acme", "10.2.0.0/24", "")
	d2 := docker{t: t, h: a, poolID: "acme/10.2.0.0/24"}
	if _, err := d2.request("", gatewayOpts, false); err != nil {
		t.Fatal(err)
	}
	for addr, reason := range map[string]string{"10.2.0.0": "network address", "10.2.0.255": "broadcast address", "10.2.0.1": "gateway"} {
		if _, err := d2.request(addr, nil, false); err == nil || !strings.Contains(err.Error(), reason) {
			t.Errorf("--aux-address %s: err = %v, want one naming the %s", addr, err, reason)
		}
	}
	if st, _ := a.m.Status(d.poolID); len(st.Addresses) != 0 {
		t.Fatalf("refused requests allocated %v", st.Addresses)
	}
}

// TestSameGatewayEverywhereLogsNoDisagreement: hosts that create the
// network with the same --gateway log no disagreement, even when one sees
// another between its RequestPool and its gateway request; a host with a
// different gateway is still reported (issue 10, point 12). On f959d08,
// RequestPool published the default gateway before --gateway came, and b
// logged "hosts disagree on the pool's gateway" naming a's 10.1.0.1.
func TestSameGatewayEverywhereLogsNoDisagreement(t *testing.T) {
	c := ipamtest.NewCluster(0, 44)
	var logs syncBuffer
	logTo := func(cfg *ipam.Config) { cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil)) }
	seeds := []string{"b"}
	const subnet, gw = "10.1.0.0/24", "10.1.0.254"
	hosts := map[string]*host{}
	for _, n := range []string{"a", "b", "c", "d"} {
		hosts[n] = startHost(t, c, n, seeds, logTo)
	}
	dk := func(n string) docker { return docker{t: t, h: hosts[n], poolID: "acme/" + subnet} }
	dk("b").create(t, subnet, gw)
	mustPool(t, hosts["a"], "acme", subnet, "") // a's gateway request is still to come
	eventually(t, 5*time.Second, func() error {
		for _, e := range c.Node("b").List("ipam/pool/") {
			if e.Host == "a" {
				return nil
			}
		}
		return errors.New("b has not seen a's pool entry")
	})
	// c needs space from b, which answers in a reconcile that sees a's
	// entry as it is between a's RequestPool and a's gateway request.
	dk("c").create(t, subnet, gw)
	if _, err := dk("c").request("", nil, true); err != nil {
		t.Fatal(err)
	}
	if _, err := dk("a").request(gw, gatewayOpts, false); err != nil {
		t.Fatal(err)
	}
	dk("d").create(t, subnet, "10.1.0.253") // a real disagreement
	eventually(t, 5*time.Second, func() error {
		for _, n := range []string{"a", "b", "c"} {
			if !strings.Contains(logs.String(), "host="+n+" pool=acme/10.1.0.0/24 other=d their_gateway=10.1.0.253") {
				return fmt.Errorf("%s has not reported d's different gateway", n)
			}
		}
		return nil
	})
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "disagree on the pool's gateway") && !strings.Contains(line, "host=d") && !strings.Contains(line, "other=d") {
			t.Errorf("hosts with the same gateway reported a disagreement: %s", line)
		}
	}
	// Every host keeps the gateway (and d's) from containers.
	for _, n := range []string{"a", "b", "c"} {
		for _, r := range []string{gw, "10.1.0.253"} {
			if _, err := dk(n).request(r, nil, true); !errors.Is(err, ipam.ErrInUse) {
				t.Errorf("%s: --ip %s: err = %v, want ErrInUse", n, r, err)
			}
		}
	}
}

// TestStats: the metrics summary agrees with Status and moves with
// allocations and handovers.
func TestStats(t *testing.T) {
	c := ipamtest.NewCluster(0, 45)
	a := startHost(t, c, "a", []string{"a"})
	b := startHost(t, c, "b", []string{"a"})
	p := mustPool(t, a, "acme", "10.1.0.0/26", "")
	mustPool(t, b, "acme", "10.1.0.0/26", "")
	for range 3 {
		if _, err := a.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.m.RequestAddress(ctxT(t), p.ID, ipam.AddressRequest{}); err != nil {
		t.Fatal(err)
	}
	sa, sb := statsOf(t, a, p.ID), statsOf(t, b, p.ID)
	if sa.Used != 3 || sb.Used != 1 || sa.Given != 1 || sb.Received != 1 || sa.Blocks != 1 || sb.Blocks != 1 {
		t.Fatalf("stats a %+v, b %+v", sa, sb)
	}
	// 64 addresses, 3 reserved (network, gateway, broadcast), 4 used.
	if sa.Owned+sb.Owned != 64 || sa.Free+sb.Free != 64-3-4 {
		t.Fatalf("owned %d+%d, free %d+%d; want 64 and 57", sa.Owned, sb.Owned, sa.Free, sb.Free)
	}
	st, _ := a.m.Status(p.ID)
	free := 0
	for _, bl := range st.Blocks {
		free += bl.Avail
	}
	if free != sa.Free || len(st.Addresses) != sa.Used {
		t.Fatalf("Status says %d free, %d used; Stats %+v", free, len(st.Addresses), sa)
	}
	if len(a.m.Stats()) != 1 {
		t.Fatalf("stats of %d pools, want 1", len(a.m.Stats()))
	}
}
