package overlay_test

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/e2e"
	"github.com/tenet-net/tenet/overlay"
)

// listener accepts TCP connections and UDP datagrams on an address inside
// a namespace and remembers who came.
type listener struct {
	mu   sync.Mutex
	seen map[string]int // "tcp" or "udp:<payload>" -> count
}

func listen(t *testing.T, ns string, addr string) *listener {
	t.Helper()
	l := &listener{seen: map[string]int{}}
	var tl net.Listener
	var ul net.PacketConn
	err := inNetns(ns, func() error {
		var err error
		if tl, err = net.Listen("tcp", addr); err != nil {
			return err
		}
		ul, err = net.ListenPacket("udp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { _ = tl.Close(); _ = ul.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			l.note("tcp")
			_ = c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			n, _, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			l.note("udp:" + string(buf[:n]))
		}
	}()
	return l
}

func (l *listener) note(k string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[k]++
}

func (l *listener) count(k string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[k]
}

// dialFrom connects over TCP from inside namespace ns.
func dialFrom(ns, addr string, timeout time.Duration) error {
	return inNetns(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err == nil {
			_ = c.Close()
		}
		return err
	})
}

// sendUDP sends one datagram from inside namespace ns.
func sendUDP(ns, addr, payload string) error {
	return inNetns(ns, func() error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(payload))
		return err
	})
}

func runIn(ns string, argv ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...).CombinedOutput()
	return string(out), err
}

// TestTenantsReachNoInfrastructureUnlessAllowed runs a container with
// egress on host 0 against listeners on host 1's underlay address, on an
// outside address routed through host 1, and on host 0 itself, each on a
// service port and on the gossip port (7946), TCP and UDP. With State.Infra
// naming the underlay and gossip's port, the container reaches the outside
// service only; an operator's allow list then lets it reach the hosts.
func TestTenantsReachNoInfrastructureUnlessAllowed(t *testing.T) {
	hs := newHosts(t, 2)
	ctx := t.Context()
	const outside = "203.0.113.5"
	for _, cmd := range []struct{ ns, args string }{
		{hs[1].netns, "addr add " + outside + "/32 dev eth0"},
		{hs[0].netns, "route add " + outside + "/32 via " + hs[1].vtep.String()},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", cmd.ns}, strings.Fields(cmd.args)...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", cmd.args, err, out)
		}
	}
	h1 := hs[1].vtep.String()
	h0 := hs[0].vtep.String()
	targets := map[string]*listener{}
	for _, a := range []struct{ ns, addr string }{
		{hs[1].netns, h1 + ":8080"}, {hs[1].netns, h1 + ":7946"},
		{hs[1].netns, outside + ":8080"}, {hs[1].netns, outside + ":7946"},
		{hs[0].netns, h0 + ":8080"}, {hs[1].netns, h1 + ":4789"},
	} {
		if a.addr == h1+":4789" {
			continue // the VXLAN socket itself: datagrams only, checked by capture below
		}
		targets[a.addr] = listen(t, a.ns, a.addr)
	}
	web := overlay.Network{Tenant: "acme", Name: "web", VNI: 4097, Gateway: netip.MustParsePrefix("10.1.0.1/24"), Egress: true}
	e0 := ep("e0", 4097, "10.1.0.10")
	s := overlay.State{Networks: []overlay.Network{web}, Endpoints: []overlay.Endpoint{e0}}
	if err := hs[0].dp.Reconcile(ctx, s); err != nil {
		t.Fatal(err)
	}
	c0 := attach(t, hs[0], e0, 24)
	if _, err := c0.in(ctx, "ip", "route", "add", "default", "via", "10.1.0.1"); err != nil {
		t.Fatal(err)
	}
	reaches := func(addr string) error {
		if err := dialFrom(c0.ns, addr, 2*time.Second); err != nil {
			return fmt.Errorf("tcp %s: %w", addr, err)
		}
		l := targets[addr]
		e2e.Eventually(t, 5*time.Second, func() error {
			if err := sendUDP(c0.ns, addr, "hello"); err != nil {
				return err
			}
			if l.count("udp:hello") == 0 {
				return fmt.Errorf("udp %s: nothing arrived", addr)
			}
			return nil
		})
		return nil
	}
	// denied checks that nothing from the container arrives, TCP or UDP,
	// while it keeps trying until a deadline.
	denied := func(addr string) {
		t.Helper()
		l := targets[addr]
		before := l.count("tcp")
		deadline := time.Now().Add(1500 * time.Millisecond)
		for time.Now().Before(deadline) {
			if err := dialFrom(c0.ns, addr, 300*time.Millisecond); err == nil {
				t.Errorf("the container connected to %s", addr)
				return
			}
			_ = sendUDP(c0.ns, addr, "denied")
		}
		if n := l.count("udp:denied"); n > 0 || l.count("tcp") != before {
			t.Errorf("%s received %d datagrams from the container", addr, n)
		}
	}
	apply := func(in overlay.Infra) {
		t.Helper()
		s.Infra = in
		want, err := hs[0].dp.Desired(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := hs[0].dp.Observe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Changing the infrastructure is a few set elements, nothing more.
		for _, op := range overlay.Plan(want, got) {
			if op.Kind != overlay.OpElemAdd && op.Kind != overlay.OpElemDel || op.Tenant != "" {
				t.Errorf("updating the infrastructure takes %q", op)
			}
		}
		if err := hs[0].dp.ReconcileScope(ctx, s, overlay.Scope{Infra: true}); err != nil {
			t.Fatal(err)
		}
	}

	// As on f959d08: the container reaches the other host's gossip port,
	// where its packets arrive from host 0's address, a trusted peer.
	for _, a := range []string{h1 + ":7946", h1 + ":8080", outside + ":7946", outside + ":8080"} {
		if err := reaches(a); err != nil {
			t.Fatalf("without infra rules: %v", err)
		}
	}
	// With the infrastructure named: no underlay address, no gossip port
	// anywhere; the outside service is still there.
	apply(overlay.Infra{
		Deny:  []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix(h1 + "/32")},
		Ports: []overlay.L4Port{{Proto: overlay.TCP, Port: 7946}, {Proto: overlay.UDP, Port: 7946}},
	})
	if err := reaches(outside + ":8080"); err != nil {
		t.Errorf("with infra rules: %v", err)
	}
	for _, a := range []string{h1 + ":7946", h1 + ":8080", outside + ":7946", h0 + ":8080"} {
		denied(a)
	}
	if err := c0.ping(ctx, hs[1].vtep); err == nil {
		t.Errorf("the container pinged host 1's underlay address")
	}
	// Nor VXLAN to host 1, with the infrastructure allowed or not.
	vx := startCapture(t, hs[1].netns, "eth0", "udp dst port 4789 and udp[8:4] = 0x494e4a45")
	_ = sendUDP(c0.ns, outside+":4789", "INJECTED")
	_ = sendUDP(c0.ns, h1+":4789", "INJECTED")

	// Allowed by the operator: both hosts, the outside gossip port stays
	// denied.
	apply(overlay.Infra{
		Deny:  []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix(h1 + "/32")},
		Ports: []overlay.L4Port{{Proto: overlay.TCP, Port: 7946}, {Proto: overlay.UDP, Port: 7946}},
		Allow: []netip.Prefix{netip.MustParsePrefix(h1 + "/32"), netip.MustParsePrefix(h0 + "/32")},
	})
	for _, a := range []string{h1 + ":7946", h1 + ":8080", h0 + ":8080"} {
		if err := reaches(a); err != nil {
			t.Errorf("allowed: %v", err)
		}
	}
	denied(outside + ":7946")
	if pkts := vx.stop(); len(pkts) > 0 {
		t.Errorf("the container sent VXLAN datagrams onto the underlay:\n%s", strings.Join(pkts, "\n"))
	}
	// Back to the default: denied again.
	apply(overlay.Infra{Deny: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
		Ports: []overlay.L4Port{{Proto: overlay.TCP, Port: 7946}}})
	denied(h1 + ":8080")
	snap, err := hs[0].dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.String(); !strings.Contains(got, "host: element deny4 { 198.51.100.0-198.51.100.255 }") ||
		!strings.Contains(got, "host: element ports { tcp . 7946 }") || strings.Contains(got, "allow4") {
		t.Errorf("host elements after the update:\n%s", got)
	}
}
