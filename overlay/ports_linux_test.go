package overlay_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tenet-net/tenet/e2e"
	"github.com/tenet-net/tenet/overlay"
)

// TestPublishedPortsReachOnlyTheirContainer runs two tenants with the same
// container address on host 0, each publishing its own port, with the
// host's FORWARD policy DROP (as Docker sets it). Host 1 (on the underlay)
// and host 0 itself (by its address and by 127.0.0.1) reach each port's
// container and no other; nothing else gets in, not even straight to a
// tenant's uplink; a port another program holds is refused and gets no
// rule; a new Datapath (a restarted tenetd) keeps the ports working and
// takes their reservations back; withdrawn ports are gone.
func TestPublishedPortsReachOnlyTheirContainer(t *testing.T) {
	hs := newHosts(t, 2)
	ctx := t.Context()
	h0 := hs[0].vtep.String()
	for _, cmd := range []struct{ ns, args string }{
		{hs[0].netns, "iptables -P FORWARD DROP"},
		{hs[0].netns, "iptables -N DOCKER-USER"}, // as Docker leaves them
		{hs[0].netns, "iptables -A FORWARD -j DOCKER-USER"},
		{hs[1].netns, "ip route add 169.254.0.0/16 via " + h0},
	} {
		if out, err := runIn(cmd.ns, strings.Fields(cmd.args)...); err != nil {
			t.Fatalf("%s: %v: %s", cmd.args, err, out)
		}
	}
	gw := netip.MustParsePrefix("10.1.0.1/24")
	acme := overlay.Network{Tenant: "acme", Name: "web", VNI: 4097, Gateway: gw, Egress: true}
	globex := overlay.Network{Tenant: "globex", Name: "web", VNI: 5000, Gateway: gw, Egress: true}
	a, g := ep("a", 4097, "10.1.0.10"), ep("g", 5000, "10.1.0.10")
	a.Ports = []overlay.Port{{Proto: overlay.TCP, HostPort: 8080, Port: 80}, {Proto: overlay.UDP, HostPort: 5353, Port: 53}}
	g.Ports = []overlay.Port{{Proto: overlay.TCP, HostPort: 8081, Port: 80}, {Proto: overlay.TCP, HostIP: hs[0].vtep, HostPort: 8090, Port: 80}}
	s := overlay.State{Networks: []overlay.Network{acme, globex}, Endpoints: []overlay.Endpoint{a, g},
		Infra: overlay.Infra{Deny: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}}
	if err := hs[0].dp.Reconcile(ctx, s); err != nil {
		t.Fatal(err)
	}
	ls := map[string]*listener{}
	var ca string
	for name, e := range map[string]overlay.Endpoint{"a": a, "g": g} {
		c := attach(t, hs[0], e, 24)
		if _, err := c.in(ctx, "ip", "route", "add", "default", "via", "10.1.0.1"); err != nil {
			t.Fatal(err)
		}
		ls[name+":80"] = listen(t, c.ns, "0.0.0.0:80")
		ls[name+":53"] = listen(t, c.ns, "0.0.0.0:53")
		ls[name+":8082"] = listen(t, c.ns, "0.0.0.0:8082")
		if name == "a" {
			ca = c.ns
		}
	}
	reach := func(from, addr, want string) {
		t.Helper()
		before := map[string]int{}
		for k, l := range ls {
			before[k] = l.count("tcp")
		}
		e2e.Eventually(t, 5*time.Second, func() error {
			if err := dialFrom(from, addr, time.Second); err != nil {
				return err
			}
			if l := ls[want]; l != nil && l.count("tcp") == before[want] {
				return fmt.Errorf("tcp %s from %s: connected, but not to %s", addr, from, want)
			}
			return nil
		})
		for k, l := range ls {
			if got := l.count("tcp") - before[k]; k != want && got > 0 {
				t.Errorf("tcp %s from %s: %s got %d connections", addr, from, k, got)
			}
		}
	}
	reach(hs[1].netns, h0+":8080", "a:80")
	reach(hs[1].netns, h0+":8081", "g:80")
	reach(hs[0].netns, h0+":8080", "a:80")
	reach(hs[0].netns, "127.0.0.1:8081", "g:80")
	reach(hs[1].netns, h0+":8090", "g:80") // published on one address
	reach(hs[0].netns, h0+":8090", "g:80")
	if err := dialFrom(hs[0].netns, "127.0.0.1:8090", 500*time.Millisecond); err == nil {
		t.Error("a port published on the host's address answered on 127.0.0.1")
	}
	e2e.Eventually(t, 5*time.Second, func() error {
		if err := sendUDP(hs[1].netns, h0+":5353", "hi"); err != nil {
			return err
		}
		if ls["a:53"].count("udp:hi") == 0 {
			return errors.New("udp 5353: nothing arrived in container a")
		}
		return nil
	})
	if n := ls["g:53"].count("udp:hi"); n > 0 {
		t.Errorf("container g got %d datagrams for acme's port", n)
	}
	// A container reaches no published port of its host, its own tenant's
	// or another's: the host's addresses are infrastructure.
	for _, addr := range []string{h0 + ":8081", h0 + ":8080", "169.254.0.10:8081"} {
		if err := dialFrom(ca, addr, 500*time.Millisecond); err == nil {
			t.Errorf("container a reached %s", addr)
		}
	}
	// Nothing else gets in: not an unpublished port, not straight to the
	// tenants' uplinks (host 1 routes 169.254.0.0/16 to host 0).
	for _, addr := range []string{h0 + ":8082", "169.254.0.6:80", "169.254.0.6:8080", "169.254.0.10:80", "169.254.0.10:8081"} {
		if err := dialFrom(hs[1].netns, addr, 500*time.Millisecond); err == nil {
			t.Errorf("host 1 connected to %s", addr)
		}
	}
	for k, l := range ls {
		if strings.HasSuffix(k, ":8082") && l.count("tcp") > 0 {
			t.Errorf("%s got a connection", k)
		}
	}

	// A port another program holds: refused, with no rule leading to it,
	// and the other ports stay.
	held := listen(t, hs[0].netns, h0+":9090")
	busy := s
	busy.Endpoints = []overlay.Endpoint{a, g}
	busy.Endpoints[0].Ports = append(append([]overlay.Port{}, a.Ports...), overlay.Port{Proto: overlay.TCP, HostPort: 9090, Port: 80})
	err := hs[0].dp.ReconcileScope(ctx, busy, overlay.Scope{Endpoints: []string{"a"}})
	var inUse *overlay.PortInUseError
	if !errors.As(err, &inUse) || inUse.Res.Port != 9090 || !strings.Contains(err.Error(), "tcp port 9090 on 0.0.0.0 is in use on this host") {
		t.Fatalf("publishing a port in use: %v", err)
	}
	snap, err := hs[0].dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.String(); strings.Contains(got, "9090") || !strings.Contains(got, "host: reserve tcp 0.0.0.0:8080") {
		t.Errorf("after the refused port:\n%s", got)
	}
	reach(hs[1].netns, h0+":9090", "") // the program's own listener, no container
	// Its accept loop notes the connection after the dial returns.
	e2e.Eventually(t, 5*time.Second, func() error {
		if held.count("tcp") == 0 {
			return errors.New("the program holding 9090 lost its connection")
		}
		return nil
	})
	if err := bindIn(hs[0].netns, "tcp", "0.0.0.0:8080"); err == nil {
		t.Error("another program could bind the published port 8080")
	}

	// A restarted tenetd: the ports work while no Datapath runs, and the
	// new one takes the reservations back and changes nothing else.
	if err := hs[0].dp.Close(); err != nil {
		t.Fatal(err)
	}
	reach(hs[1].netns, h0+":8080", "a:80")
	cfg := overlay.DefaultConfig()
	cfg.VTEP, cfg.HostNetns, cfg.NetnsPrefix = hs[0].vtep, "/run/netns/"+hs[0].netns, hs[0].netns+"-"
	dp, err := overlay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dp.Close() })
	hs[0].dp = dp
	want, err := dp.Desired(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, op := range overlay.Plan(want, got) {
		ops = append(ops, op.String())
	}
	if fmt.Sprint(ops) != "[host: reserve tcp 0.0.0.0:8080 (its rules exist) host: reserve tcp 0.0.0.0:8081 (its rules exist) "+
		"host: reserve tcp 198.51.100.10:8090 (its rules exist) host: reserve udp 0.0.0.0:5353 (its rules exist)]" {
		t.Errorf("after a restart, the plan is %q", ops)
	}
	if err := dp.Reconcile(ctx, s); err != nil {
		t.Fatal(err)
	}
	reach(hs[1].netns, h0+":8081", "g:80")

	// Withdrawn: unreachable, no rule, the port free for others.
	s.Endpoints = []overlay.Endpoint{ep("a", 4097, "10.1.0.10"), g}
	if err := dp.ReconcileScope(ctx, s, overlay.Scope{Endpoints: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(hs[1].netns, h0+":8080", 500*time.Millisecond); err == nil {
		t.Error("host 1 connected to the withdrawn port 8080")
	}
	if err := bindIn(hs[0].netns, "tcp", "0.0.0.0:8080"); err != nil {
		t.Errorf("the withdrawn port 8080 is still held: %v", err)
	}
	snap, err = dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.String(); strings.Contains(got, "8080") || strings.Contains(got, "5353") || !strings.Contains(got, "8081") {
		t.Errorf("after withdrawing a's ports:\n%s", got)
	}
	// The host's iptables hold Tenet's accepts until the last egress
	// network goes.
	// after Docker's jump to DOCKER-USER, where an admin's rules go.
	if out, err := runIn(hs[0].netns, "iptables", "-S", "FORWARD"); err != nil ||
		!strings.Contains(out, "-A FORWARD -j DOCKER-USER\n-A FORWARD -j TENET-FORWARD\n") {
		t.Errorf("FORWARD chain: %v\n%s", err, out)
	}
	if err := dp.Reconcile(ctx, overlay.State{}); err != nil {
		t.Fatal(err)
	}
	if out, err := runIn(hs[0].netns, "iptables", "-S"); err != nil || strings.Contains(out, "TENET") {
		t.Errorf("iptables after the last tenant: %v\n%s", err, out)
	}
	if err := bindIn(hs[0].netns, "tcp", "0.0.0.0:8081"); err != nil {
		t.Errorf("port 8081 still held after its tenant went: %v", err)
	}
}

// bindIn binds (and closes) a listener inside namespace ns.
func bindIn(ns, network, addr string) error {
	return inNetns(ns, func() error {
		l, err := net.Listen(network, addr)
		if err == nil {
			_ = l.Close()
		}
		return err
	})
}
