package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenet-net/tenet/e2e"
)

// listen starts a one-connection TCP listener on a host's underlay address
// and returns a function reporting what it received so far.
func listen(t *testing.T, h e2e.Host, port int) func() string {
	t.Helper()
	file := fmt.Sprintf("%s/listen-%d-%d", h.Dir(), port, time.Now().UnixNano())
	if _, err := h.Run(t.Context(), "sh", "-c", fmt.Sprintf("timeout 120 busybox nc -l -p %d > %s 2>&1 & echo $! > %s.pid", port, file, file)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = h.Run(context.Background(), "sh", "-c", "kill $(cat "+file+".pid) 2>/dev/null; true")
	})
	return func() string {
		out, _ := h.Run(t.Context(), "cat", file)
		return out
	}
}

// TestTenantsReachNoInfrastructure (issue 10, point 5): a container's
// egress reached other hosts' underlay addresses, including their gossip
// port, arriving as its host, a trusted peer. Now a tenant reaches no
// member's address (its own host's neither), and no gossip or VXLAN port
// anywhere, until an operator allows a destination with --allow-egress.
// Fails on f959d08.
func TestTenantsReachNoInfrastructure(t *testing.T) {
	c := e2e.NewCluster(t, 2)
	ds := c.StartTenetds(t)
	ctx := t.Context()
	net := createNetwork(t, c, "acme", "web", "10.1.0.0/24")
	run(t, c.Engine(0), "c0", net, "10.1.0.10")
	h0, h1 := c.Hosts[0], c.Hosts[1]
	try := func(addr string, port int) error {
		_, err := c.Engine(0).Docker(ctx, "exec", "c0", "sh", "-c", fmt.Sprintf("echo hello | nc -w 2 %s %d", addr, port))
		return err
	}
	for _, target := range []struct {
		name string
		addr string
	}{{"gossip port of another host", h1.Underlay().Addr().String()}, {"gossip port of its own host", h0.Underlay().Addr().String()}} {
		if err := try(target.addr, 7946); err == nil {
			t.Errorf("c0 connected to the %s (%s:7946)", target.name, target.addr)
		}
	}
	got := listen(t, h1, 8080)
	for range 3 {
		_ = try(h1.Underlay().Addr().String(), 8080)
	}
	if s := got(); s != "" {
		t.Errorf("a service on another host's underlay address received %q from a container", s)
	}
	// Containers still reach each other and the outside world, so the
	// checks above can fail.
	run(t, c.Engine(1), "c1", net, "10.1.0.74")
	e2e.AwaitPing(t, c.Engine(0), "c0", "10.1.0.74")
	e2e.AwaitPing(t, c.Engine(0), "c0", e2e.Outside.String())

	// The operator allows h1's address: c0 reaches it, and still not h0's
	// own services.
	if err := ds[0].RestartWith(ctx, "--allow-egress", h1.Underlay().Addr().String()); err != nil {
		t.Fatal(err)
	}
	got = listen(t, h1, 8081)
	tries := 0
	e2e.Eventually(t, 20*time.Second, func() error {
		tries++
		err := try(h1.Underlay().Addr().String(), 8081)
		if s := got(); !strings.Contains(s, "hello") {
			return fmt.Errorf("the allowed host received %q after %d tries; the last: %v", s, tries, err)
		}
		return nil
	})
	if err := try(h0.Underlay().Addr().String(), 7946); err == nil {
		t.Error("c0 connected to its own host's gossip port, which is not allowed")
	}
}
