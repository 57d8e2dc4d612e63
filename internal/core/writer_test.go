package core

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/internal/rules"
	"github.com/tenet-net/tenet/overlay"
)

// gateDatapath counts passes and holds each until the gate opens.
type gateDatapath struct {
	mu     sync.Mutex
	passes int
	last   overlay.State
	gate   chan struct{}
	// failVNI: every pass whose state has a network of this VNI fails, as
	// the kernel refusing it would.
	failVNI uint32
}

// has says whether the last pass programmed a network of vni.
func (g *gateDatapath) has(vni uint32) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.ContainsFunc(g.last.Networks, func(n overlay.Network) bool { return n.VNI == vni })
}

// hold makes the passes from now on wait until release is called.
func (g *gateDatapath) hold() (release func()) {
	gate := make(chan struct{})
	g.mu.Lock()
	g.gate = gate
	g.mu.Unlock()
	return func() { close(gate) }
}

func (g *gateDatapath) Apply(ctx context.Context, s overlay.State, _ Scope) error {
	if err := s.Validate(); err != nil {
		return err
	}
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	select {
	case <-gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failVNI != 0 && slices.ContainsFunc(s.Networks, func(n overlay.Network) bool { return n.VNI == g.failVNI }) {
		return fmt.Errorf("the kernel refuses vni %d", g.failVNI)
	}
	g.passes++
	g.last = s
	return nil
}

func (g *gateDatapath) MaxMTU() (int, error) { return 0, nil }

// runGated runs a core over a gateDatapath whose gate is shut (the core
// stops at the test's cleanup).
func runGated(t *testing.T, configure ...func(*Config)) (*Core, *gateDatapath) {
	t.Helper()
	c, dp, _ := startGated(t, configure...)
	return c, dp
}

// startGated is runGated that also returns a function stopping the core
// (the test's cleanup calls it too; calling it twice is harmless).
func startGated(t *testing.T, configure ...func(*Config)) (*Core, *gateDatapath, func()) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Host, cfg.VTEP, cfg.StateDir = "h0", netip.MustParseAddr("198.51.100.10"), t.TempDir()
	for _, f := range configure {
		f(&cfg)
	}
	dp := &gateDatapath{gate: make(chan struct{})}
	c, err := New(cfg, dp, &memCluster{eps: map[string]bool{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return c, dp, stop
}

func TestConcurrentCallsAreBatched(t *testing.T) {
	c, dp := runGated(t)
	close(dp.gate) // the start-up pass and the network pass them freely
	if _, err := c.CreateNetwork(t.Context(), NetworkSpec{Tenant: "acme", Name: "web", Subnet: netip.MustParsePrefix("10.1.0.0/22")}); err != nil {
		t.Fatal(err)
	}
	dp.mu.Lock()
	dp.gate = make(chan struct{})
	before := dp.passes
	dp.mu.Unlock()

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			a := netip.AddrFrom4([4]byte{10, 1, byte(i / 200), byte(10 + i%200)})
			_, err := c.CreateEndpoint(t.Context(), EndpointSpec{ID: fmt.Sprintf("e%03d", i), Network: "acme/web", IP: netip.PrefixFrom(a, 22)})
			errs <- err
		})
	}
	// Wait until every call is queued or in the pass held at the gate.
	deadline := time.Now().Add(10 * time.Second)
	for {
		q, busy, _ := c.w.depth()
		if q+busy == n {
			break
		}
		if time.Now().After(deadline) {
			close(dp.gate)
			t.Fatalf("only %d+%d calls queued", q, busy)
		}
		time.Sleep(time.Millisecond)
	}
	dp.mu.Lock()
	close(dp.gate)
	dp.mu.Unlock()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if len(dp.last.Endpoints) != n {
		t.Fatalf("%d endpoints programmed, want %d", len(dp.last.Endpoints), n)
	}
	if passes := dp.passes - before; passes > 3 {
		t.Errorf("%d datapath passes for %d concurrent calls; want them batched into at most 3", passes, n)
	}
}

// A call that gives up on a pass held up in the kernel says so, and leaves
// nothing: the endpoint is not created, and the state is as before.
func TestAGiveUpSaysThePassWasUnderWay(t *testing.T) {
	c, dp := runGated(t)
	close(dp.gate)
	if _, err := c.CreateNetwork(t.Context(), NetworkSpec{Tenant: "acme", Name: "web", Subnet: netip.MustParsePrefix("10.1.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	dp.mu.Lock()
	dp.gate = make(chan struct{}) // the next pass hangs, as on a held RTNL lock
	dp.mu.Unlock()

	cctx, ccancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer ccancel()
	_, err := c.CreateEndpoint(cctx, EndpointSpec{ID: "e1", Network: "acme/web", IP: netip.MustParsePrefix("10.1.0.10/24")})
	if err == nil || !strings.Contains(err.Error(), "gave up waiting for the datapath (a pass has been under way for") {
		t.Fatalf("CreateEndpoint on a held datapath: %v", err)
	}
	if eps := c.Endpoints(); len(eps) != 0 {
		t.Errorf("a call that gave up left endpoints: %v", eps)
	}
	close(dp.gate)
}

// TestDiagnoseGivesUpOnAHeldWriterAndLeavesItWorking: Diagnose runs
// between passes; while one hangs, a caller's deadline ends the wait with
// an error saying so, and once the pass ends the writer serves the next
// call (the abandoned diagnosis does not block it).
func TestDiagnoseGivesUpOnAHeldWriterAndLeavesItWorking(t *testing.T) {
	c, dp := runGated(t)
	close(dp.gate)
	if _, err := c.CreateNetwork(t.Context(), NetworkSpec{Tenant: "acme", Name: "web", Subnet: netip.MustParsePrefix("10.1.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	dp.mu.Lock()
	gate := make(chan struct{})
	dp.gate = gate
	dp.mu.Unlock()
	hung := make(chan error, 1)
	go func() {
		_, err := c.CreateEndpoint(t.Context(), EndpointSpec{ID: "e1", Network: "acme/web", IP: netip.MustParsePrefix("10.1.0.10/24")})
		hung <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for q, busy, _ := c.w.depth(); busy == 0 && q == 0; q, busy, _ = c.w.depth() {
		if time.Now().After(deadline) {
			t.Fatal("the pass never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Diagnose(cctx); err == nil || !strings.Contains(err.Error(), "gave up waiting for the datapath writer") {
		t.Fatalf("Diagnose on a held writer: %v", err)
	}
	close(gate)
	if err := <-hung; err != nil {
		t.Fatalf("the held call, released: %v", err)
	}
	if _, err := c.Diagnose(t.Context()); err != nil {
		t.Fatalf("Diagnose after the pass ended: %v", err)
	}
	if _, ok := c.Endpoint("e1"); !ok {
		t.Error("the released call's endpoint is missing")
	}
}

// awaitIdle waits until the writer has nothing queued or under way.
func awaitIdle(t *testing.T, c *Core) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for q, busy, _ := c.w.depth(); q+busy > 0; q, busy, _ = c.w.depth() {
		if time.Now().After(deadline) {
			t.Fatalf("the writer is still busy: %d queued, %d in the pass", q, busy)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// giveUpOn creates spec while the datapath is held, with a deadline that
// ends first, then releases the datapath and waits for the held pass.
func giveUpOn(t *testing.T, c *Core, dp *gateDatapath, spec NetworkSpec) {
	t.Helper()
	release := dp.hold()
	cctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err := c.CreateNetwork(cctx, spec)
	if err == nil || !strings.Contains(err.Error(), "gave up waiting for the datapath (a pass has been under way for") {
		t.Fatalf("CreateNetwork on a held datapath: %v", err)
	}
	if _, ok := c.Network(spec.Key()); ok {
		t.Fatalf("a creation given up on left network %s", spec.Key())
	}
	release()
	awaitIdle(t, c)
}

// A network whose creation the caller gave up on while the kernel built it
// (a slow host) stays in the datapath, so that the caller's retry finds it
// built rather than removing it and starting over, which on a host slower
// than the call's deadline never ends. With keeping off, it goes at once.
func TestANetworkGivenUpOnIsKeptForItsRetry(t *testing.T) {
	web := NetworkSpec{Tenant: "acme", Name: "web", Subnet: netip.MustParsePrefix("10.1.0.0/24"), Ref: "first"}
	vni := rules.DeriveVNI(web.Key())
	t.Run("kept", func(t *testing.T) {
		c, dp := runGated(t)
		close(dp.gate)
		awaitIdle(t, c)
		giveUpOn(t, c, dp, web)
		if !dp.has(vni) {
			t.Fatal("the network given up on was removed before its retry")
		}
		retry := web
		retry.Ref = "second"
		n, err := c.CreateNetwork(t.Context(), retry)
		if err != nil {
			t.Fatalf("the retry: %v", err)
		}
		if n.Ref != "second" || !dp.has(vni) {
			t.Errorf("after the retry: ref %q, programmed %v", n.Ref, dp.has(vni))
		}
		c.mu.Lock()
		kept := len(c.kept)
		c.mu.Unlock()
		if kept != 0 {
			t.Errorf("%d networks still kept after the retry adopted its own", kept)
		}
	})
	t.Run("off", func(t *testing.T) {
		c, dp := runGated(t, func(cfg *Config) { cfg.AbandonedKeep = 0 })
		close(dp.gate)
		awaitIdle(t, c)
		giveUpOn(t, c, dp, web)
		deadline := time.Now().Add(5 * time.Second)
		for dp.has(vni) {
			if time.Now().After(deadline) {
				t.Fatal("with AbandonedKeep 0, the network given up on is still programmed")
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// A kept network nobody retries goes after AbandonedKeep.
func TestAKeptNetworkGoesWhenNotRetried(t *testing.T) {
	c, dp := runGated(t, func(cfg *Config) { cfg.AbandonedKeep = 3 * time.Second })
	close(dp.gate)
	awaitIdle(t, c)
	web := NetworkSpec{Tenant: "acme", Name: "web", Subnet: netip.MustParsePrefix("10.1.0.0/24")}
	giveUpOn(t, c, dp, web)
	if !dp.has(rules.DeriveVNI(web.Key())) {
		t.Fatal("the network given up on was removed before AbandonedKeep")
	}
	deadline := time.Now().Add(10 * time.Second)
	for dp.has(rules.DeriveVNI(web.Key())) {
		if time.Now().After(deadline) {
			t.Fatal("a kept network nobody retried is still programmed after AbandonedKeep")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A kept network never stands in the way: a network it conflicts with
// (here the same subnet in the same tenant) is created, and the kept one
// goes in the same pass; a retry with another subnet replaces it.
func TestAKeptNetworkGivesWay(t *testing.T) {
	c, dp := runGated(t)
	close(dp.gate)
	awaitIdle(t, c)
	web := NetworkSpec{Tenant: "acme", Name: "web", Subnet: netip.MustParsePrefix("10.1.0.0/24")}
	giveUpOn(t, c, dp, web)
	db := NetworkSpec{Tenant: "acme", Name: "db", Subnet: netip.MustParsePrefix("10.1.0.0/24")}
	if _, err := c.CreateNetwork(t.Context(), db); err != nil {
		t.Fatalf("a network conflicting with a kept one: %v", err)
	}
	if dp.has(rules.DeriveVNI(web.Key())) || !dp.has(rules.DeriveVNI(db.Key())) {
		t.Errorf("programmed: web %v (want gone), db %v", dp.has(rules.DeriveVNI(web.Key())), dp.has(rules.DeriveVNI(db.Key())))
	}

	app := NetworkSpec{Tenant: "acme", Name: "app", Subnet: netip.MustParsePrefix("10.2.0.0/24"), Gateway: netip.MustParseAddr("10.2.0.1")}
	giveUpOn(t, c, dp, app)
	app.Subnet, app.Gateway = netip.MustParsePrefix("10.3.0.0/24"), netip.MustParseAddr("10.3.0.1")
	if _, err := c.CreateNetwork(t.Context(), app); err != nil {
		t.Fatalf("a retry with another subnet: %v", err)
	}
	dp.mu.Lock()
	var gw []netip.Prefix
	for _, n := range dp.last.Networks {
		if n.Name == "app" {
			gw = append(gw, n.Gateway)
		}
	}
	dp.mu.Unlock()
	if want := netip.MustParsePrefix("10.3.0.1/24"); len(gw) != 1 || gw[0] != want {
		t.Errorf("app is programmed with gateways %v, want only %v", gw, want)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.kept) != 0 {
		t.Errorf("%d networks still kept", len(c.kept))
	}
}

// A kept network whose own pass failed is no network to adopt, and would
// fail every pass over its tenant: it goes at once, and the tenant's next
// network is created.
func TestAKeptNetworkWhosePassFailedGoes(t *testing.T) {
	c, dp := runGated(t)
	close(dp.gate)
	awaitIdle(t, c)
	web := NetworkSpec{Tenant: "acme", Name: "web", Subnet: netip.MustParsePrefix("10.1.0.0/24")}
	dp.mu.Lock()
	dp.failVNI = rules.DeriveVNI(web.Key())
	dp.mu.Unlock()
	giveUpOn(t, c, dp, web)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		kept := len(c.kept)
		c.mu.Unlock()
		if kept == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a network whose pass failed is still kept")
		}
		time.Sleep(5 * time.Millisecond)
	}
	db := NetworkSpec{Tenant: "acme", Name: "db", Subnet: netip.MustParsePrefix("10.2.0.0/24")}
	if _, err := c.CreateNetwork(t.Context(), db); err != nil {
		t.Fatalf("the tenant's next network, after a failed one was given up on: %v", err)
	}
}

// A kept network keeps its flood peers through a pass over its tenant (a
// pass reads gossip's view only of the networks its scope reaches, and a
// kept network is one of them).
func TestAKeptNetworkKeepsItsPeers(t *testing.T) {
	c, dp := runGated(t)
	web := NetworkSpec{Tenant: "acme", Name: "web", Subnet: netip.MustParsePrefix("10.1.0.0/24")}
	peer := netip.MustParseAddr("198.51.100.11")
	cl := c.cl.(*memCluster)
	cl.mu.Lock()
	cl.peers = map[string][]Peer{web.Key(): {{Host: "h1", VTEP: peer}}}
	cl.mu.Unlock()
	close(dp.gate)
	awaitIdle(t, c)
	giveUpOn(t, c, dp, web)
	db := NetworkSpec{Tenant: "acme", Name: "db", Subnet: netip.MustParsePrefix("10.2.0.0/24")}
	if _, err := c.CreateNetwork(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	dp.mu.Lock()
	defer dp.mu.Unlock()
	for _, n := range dp.last.Networks {
		if n.Name == "web" {
			if !slices.Contains(n.Peers, peer) {
				t.Errorf("the kept network lost its peer %v in a pass over its tenant: %v", peer, n.Peers)
			}
			return
		}
	}
	t.Errorf("the kept network is not programmed: %v", dp.last.Networks)
}

// A kept network is in neither the state file nor gossip: a restart does
// not bring it back (the start-up pass, over everything, leaves it out, so
// the kernel's copy goes), and a retry after the restart creates it anew.
func TestAKeptNetworkIsNotRestoredByARestart(t *testing.T) {
	dir := t.TempDir()
	inDir := func(cfg *Config) { cfg.StateDir = dir }
	c, dp, stop := startGated(t, inDir)
	close(dp.gate)
	awaitIdle(t, c)
	web := NetworkSpec{Tenant: "acme", Name: "web", Subnet: netip.MustParsePrefix("10.1.0.0/24")}
	vni := rules.DeriveVNI(web.Key())
	giveUpOn(t, c, dp, web)
	if !dp.has(vni) {
		t.Fatal("the network given up on is not kept")
	}
	stop()

	c2, dp2, _ := startGated(t, inDir)
	close(dp2.gate)
	awaitIdle(t, c2)
	if nets := c2.Networks(); len(nets) != 0 {
		t.Errorf("the restarted core has networks: %v", nets)
	}
	if dp2.has(vni) {
		t.Error("the restarted core's start-up pass keeps the network given up on")
	}
	if _, err := c2.CreateNetwork(t.Context(), web); err != nil {
		t.Fatalf("the retry after the restart: %v", err)
	}
	if !dp2.has(vni) {
		t.Error("the retry after the restart did not program the network")
	}
}
