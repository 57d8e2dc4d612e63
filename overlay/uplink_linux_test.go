package overlay_test

import (
	"net/netip"
	"testing"

	"github.com/tenet-net/tenet/overlay"
)

// TestUplinksInUseAreFoundOnTheHost: the /30s of the uplink net in use are
// found from the host namespace's addresses, on a link that is down too and
// whatever the address's prefix length, so that a new tenant's uplink takes
// none of them, in a scoped pass and in a full one; each tenant keeps its
// index, and its host end is found by name. (A host end taken down stays
// down: observation does not read a link's state.)
func TestUplinksInUseAreFoundOnTheHost(t *testing.T) {
	h := newHosts(t, 1)[0]
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
	if err := h.dp.Reconcile(ctx, overlay.State{}); err != nil {
		t.Fatal(err)
	}
}
