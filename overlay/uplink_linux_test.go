package overlay_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tenet-net/tenet/overlay"
)

// TestUplinksInUseAreFoundOnTheHost: the /30s of the uplink net in use are
// found from the host namespace's addresses, on a link that is down too and
// whatever the address's prefix length, so that a new tenant's uplink takes
// none of them, in a scoped pass and in a full one; each tenant keeps its
// index, and its host end is found by name. A host end taken down (by
// hand, or by a network manager) reads as not ready, Diagnose names it,
// and the next full pass brings it back up; before, it stayed down and
// the tenant had no egress, unreported.
//
// With an IPv6 VTEP too (the host's addresses of both families are read):
// before, such a host saw no uplink in use. And with the VTEP's local route
// gone (as on a link enslaved to a VRF, whose local routes are in the
// VRF's table): the addresses are then listed.
func TestUplinksInUseAreFoundOnTheHost(t *testing.T) {
	for _, variant := range []string{"ipv4", "ipv6", "ipv4 vtep not in the local table"} {
		t.Run(variant, func(t *testing.T) {
			h := newHosts(t, 1)[0]
			switch variant {
			case "ipv6":
				h = withIPv6VTEP(t, h)
			case "ipv4 vtep not in the local table":
				if out, err := runIn(h.netns, "ip", "route", "del", "local", h.vtep.String(), "table", "local"); err != nil {
					t.Fatalf("delete the vtep's local route: %v: %s", err, out)
				}
			}
			uplinksInUse(t, h)
		})
	}
}

// withIPv6VTEP gives h's underlay link an IPv6 address and h a Datapath
// using it as the VTEP.
func withIPv6VTEP(t *testing.T, h *host) *host {
	t.Helper()
	out, err := runIn(h.netns, "ip", "-o", "-4", "addr", "show", "to", h.vtep.String())
	if err != nil || len(strings.Fields(out)) < 2 {
		t.Fatalf("underlay link of %s: %v: %q", h.vtep, err, out)
	}
	vtep := netip.MustParseAddr("2001:db8:7e::10")
	if out, err := runIn(h.netns, "ip", "-6", "addr", "add", vtep.String()+"/64", "dev", strings.Fields(out)[1], "nodad"); err != nil {
		t.Fatalf("add %s: %v: %s", vtep, err, out)
	}
	if err := h.dp.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := overlay.DefaultConfig()
	cfg.VTEP, cfg.HostNetns, cfg.NetnsPrefix = vtep, "/run/netns/"+h.netns, h.netns+"-"
	dp, err := overlay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dp.Close() })
	return &host{name: h.name, netns: h.netns, vtep: vtep, dp: dp}
}

func uplinksInUse(t *testing.T, h *host) {
	ctx := t.Context()
	acme := overlay.Network{Tenant: "acme", Name: "web", VNI: 4097, Gateway: netip.MustParsePrefix("10.1.0.1/24"), Egress: true}
	globex := overlay.Network{Tenant: "globex", Name: "web", VNI: 4098, Gateway: netip.MustParsePrefix("10.2.0.1/24"), Egress: true}
	s := overlay.State{Networks: []overlay.Network{acme}}
	if err := h.dp.Reconcile(ctx, s); err != nil {
		t.Fatal(err)
	}
	uplinks := func() map[string]overlay.Uplink {
		t.Helper()
		snap, err := h.dp.Observe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]overlay.Uplink{}
		for tenant, o := range snap.Tenants {
			if o.Uplink == nil {
				t.Fatalf("tenant %s has no uplink", tenant)
			}
			if i, ok := snap.HostUplinks[o.Uplink.HostLink]; !ok || i != o.Uplink.Index {
				t.Errorf("tenant %s: host end %s found at index %d (%v), want %d", tenant, o.Uplink.HostLink, i, ok, o.Uplink.Index)
			}
			out[tenant] = *o.Uplink
		}
		return out
	}
	up := uplinks()
	if up["acme"].Index != 1 {
		t.Fatalf("acme's uplink index %d, want 1", up["acme"].Index)
	}
	// Another program's address where index 2's host end would be, with
	// a /16, on a link that is down; acme's own host end taken down.
	for _, argv := range [][]string{
		{"ip", "link", "add", "zzother", "type", "veth", "peer", "name", "zzother-p"},
		{"ip", "addr", "add", "169.254.0.9/16", "dev", "zzother"},
		{"ip", "link", "set", up["acme"].HostLink, "down"},
	} {
		if out, err := runIn(h.netns, argv...); err != nil {
			t.Fatalf("%v: %v: %s", argv, err, out)
		}
	}
	if up := uplinks(); up["acme"].Ready {
		t.Error("acme's uplink reads as ready with its host end down")
	}
	fs, err := h.dp.Diagnose(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(fs, func(f overlay.Finding) bool { return strings.Contains(f.Object, "an end down") }) {
		t.Errorf("Diagnose does not name the uplink's end down: %v", fs)
	}
	s.Networks = append(s.Networks, globex)
	if err := h.dp.ReconcileScope(ctx, s, overlay.Scope{Networks: []uint32{globex.VNI}}); err != nil {
		t.Fatal(err)
	}
	up = uplinks()
	if up["acme"].Index != 1 || up["globex"].Index != 3 {
		t.Errorf("after a scoped pass: acme at %d, globex at %d; want 1 and 3", up["acme"].Index, up["globex"].Index)
	}
	if err := h.dp.Reconcile(ctx, s); err != nil {
		t.Fatal(err)
	}
	up = uplinks()
	if up["acme"].Index != 1 || up["globex"].Index != 3 {
		t.Errorf("after a full pass: acme at %d, globex at %d; want 1 and 3", up["acme"].Index, up["globex"].Index)
	}
	if !up["acme"].Ready || !up["globex"].Ready {
		t.Errorf("after a full pass: acme ready %t, globex ready %t; want both", up["acme"].Ready, up["globex"].Ready)
	}
	if out, err := runIn(h.netns, "ip", "-o", "link", "show", up["acme"].HostLink); err != nil || !strings.Contains(out, ",UP") {
		t.Errorf("acme's host end after a full pass: %v: %s", err, out)
	}
	if err := h.dp.Reconcile(ctx, overlay.State{}); err != nil {
		t.Fatal(err)
	}
}
