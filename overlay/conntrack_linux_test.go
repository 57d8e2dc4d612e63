package overlay_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/tenet-net/tenet/e2e"
	"github.com/tenet-net/tenet/overlay"
)

// conntrack lists the IPv4 conntrack entries of namespace ns as
// "proto src:sport > dst:dport".
func conntrack(t *testing.T, ns string) []string {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	flows, err := nh.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("conntrack of %s: %v", ns, err)
	}
	var out []string
	for _, f := range flows {
		out = append(out, fmt.Sprintf("%d %s:%d > %s:%d", f.Forward.Protocol, f.Forward.SrcIP, f.Forward.SrcPort,
			f.Forward.DstIP, f.Forward.DstPort))
	}
	return out
}

// TestTunnelsAreNotTracked: with egress, the host namespace has conntrack
// on (the egress NAT needs it), yet the VXLAN datagrams of Tenet's tunnels,
// in and out, make no conntrack entry; a tenant's NATed flow does.
func TestTunnelsAreNotTracked(t *testing.T) {
	hs := newHosts(t, 2)
	ctx := t.Context()
	web := overlay.Network{Tenant: "acme", Name: "web", VNI: 4097, Gateway: netip.MustParsePrefix("10.1.0.1/24"), Egress: true}
	e1, e2 := ep("e1", 4097, "10.1.0.10"), ep("e2", 4097, "10.1.0.11")
	c := &cluster{hosts: hs, networks: []overlay.Network{web}, eps: map[*host][]overlay.Endpoint{hs[0]: {e1}, hs[1]: {e2}}}
	c.reconcile(t)
	c1, c2 := attach(t, hs[0], e1, 24), attach(t, hs[1], e2, 24)
	if _, err := c1.in(ctx, "ip", "route", "add", "default", "via", "10.1.0.1"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := c1.ping(ctx, c2.ip); err != nil {
			t.Fatal(err)
		}
		if err := c2.ping(ctx, c1.ip); err != nil {
			t.Fatal(err)
		}
	}
	// A NATed flow out of the tenant shows that conntrack is on.
	if err := c1.ping(ctx, hs[1].vtep); err != nil {
		t.Fatalf("egress ping: %v", err)
	}
	e2e.Eventually(t, 5*time.Second, func() error {
		for _, f := range conntrack(t, hs[0].netns) {
			if strings.HasPrefix(f, "1 169.254.") { // ICMP from the tenant's uplink
				return nil
			}
		}
		return fmt.Errorf("no conntrack entry for the egress ping: %q", conntrack(t, hs[0].netns))
	})
	for _, h := range hs {
		for _, f := range conntrack(t, h.netns) {
			if strings.HasPrefix(f, "17 ") && strings.HasSuffix(f, ":4789") {
				t.Errorf("%s tracks a tunnel datagram: %s", h.name, f)
			}
		}
	}
}
