package overlay_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"

	"github.com/tenet-net/tenet/overlay"
)

// oldTable makes, in namespace ns, a table "tenet" of family with one base
// chain named chain, as an earlier layout of the rules had.
func oldTable(t *testing.T, ns string, family nftables.TableFamily, chain string, hook *nftables.ChainHook) {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	tb := &nftables.Table{Family: family, Name: "tenet"}
	c.DelTable(tb)
	_ = c.Flush() // absent is fine
	tb = c.AddTable(tb)
	policy := nftables.ChainPolicyAccept
	c.AddChain(&nftables.Chain{Name: chain, Table: tb, Type: nftables.ChainTypeFilter, Hooknum: hook,
		Priority: nftables.ChainPriorityFilter, Policy: &policy})
	if err := c.Flush(); err != nil {
		t.Fatalf("old table %s in %s: %v", chain, ns, err)
	}
}

// TestAdoptsTheRulesOfAnEarlierLayout: a host upgraded from the layout with
// digests of whole rule sets (f959d08: bridge table of port rules, ip
// tables rewritten on each change) gets the current layout from one full
// reconcile, and the old bridge table is gone.
func TestAdoptsTheRulesOfAnEarlierLayout(t *testing.T) {
	hs := newHosts(t, 1)
	h := hs[0]
	ctx := t.Context()
	s := overlay.State{Networks: []overlay.Network{{Tenant: "acme", Name: "web", VNI: 4097,
		Gateway: netip.MustParsePrefix("10.1.0.1/24"), Egress: true}},
		Endpoints: []overlay.Endpoint{ep("e1", 4097, "10.1.0.5")}}
	if err := h.dp.Reconcile(ctx, s); err != nil {
		t.Fatal(err)
	}
	tenant := h.netns + "-acme"
	oldTable(t, tenant, nftables.TableFamilyBridge, "pre-0badc0de", nftables.ChainHookPrerouting)
	oldTable(t, tenant, nftables.TableFamilyIPv4, "fwd-0badc0de", nftables.ChainHookForward)
	oldTable(t, h.netns, nftables.TableFamilyIPv4, "fwd-0badc0de", nftables.ChainHookForward)
	before, err := h.dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(before.String(), "legacy table bridge tenet") {
		t.Errorf("the old bridge table is not seen:\n%s", before)
	}
	if err := h.dp.Reconcile(ctx, s); err != nil {
		t.Fatal(err)
	}
	want, err := h.dp.Desired(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := h.dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ops := overlay.Plan(want, got); len(ops) != 0 {
		t.Errorf("after adopting, left to do: %q\nkernel:\n%s", ops, got)
	}
	if strings.Contains(got.String(), "legacy") || strings.Contains(got.String(), "0badc0de") {
		t.Errorf("old rules left:\n%s", got)
	}
}

// TestMTUAboveTheUnderlaysIsRefused: on a 1500-byte underlay, 1450 is the
// largest network MTU; a larger one is refused by Reconcile and
// ReconcileScope with the reason, and nothing is made.
func TestMTUAboveTheUnderlaysIsRefused(t *testing.T) {
	hs := newHosts(t, 1)
	dp := hs[0].dp
	ctx := t.Context()
	max, err := dp.MaxMTU()
	if err != nil || max != 1450 {
		t.Fatalf("MaxMTU = %d, %v; want 1450 on a 1500 underlay", max, err)
	}
	big := overlay.State{Networks: []overlay.Network{{Tenant: "acme", Name: "web", VNI: 4097, MTU: 1451}}}
	for name, err := range map[string]error{
		"Reconcile":      dp.Reconcile(ctx, big),
		"ReconcileScope": dp.ReconcileScope(ctx, big, overlay.Scope{Networks: []uint32{4097}}),
	} {
		if !errors.Is(err, overlay.ErrInvalid) || !strings.Contains(err.Error(), "network acme/web: mtu 1451: above 1450") {
			t.Errorf("%s with mtu 1451: %v", name, err)
		}
	}
	snap, err := dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s := snap.String(); s != "" {
		t.Errorf("a refused network left:\n%s", s)
	}
	big.Networks[0].MTU = 1450
	if err := dp.ReconcileScope(ctx, big, overlay.Scope{Networks: []uint32{4097}}); err != nil {
		t.Errorf("mtu 1450: %v", err)
	}
}
