package overlay_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tenet-net/tenet/overlay"
)

// TestScopedReconcileOnTheKernel replays random transitions between states
// (networks with and without egress, endpoints, remotes that appear, move,
// change address or go, infrastructure) on a real host, each applied with
// one ReconcileScope naming what changed: the objects (networks,
// endpoints, remotes, infrastructure), or every third time their whole
// tenants. Before each, the scoped observation must equal the whole
// kernel's restricted to the scope; after it, the kernel must equal the
// desired state, with nothing left for a full reconcile.
func TestScopedReconcileOnTheKernel(t *testing.T) {
	hs := newHosts(t, 1)
	dp := hs[0].dp
	ctx := t.Context()
	rng := overlay.NewRandForTest(7)
	random := overlay.RandomStateForTest
	if err := dp.CryptSupport(); err != nil {
		// Encrypted networks need WireGuard (covered by the VM suite).
		t.Logf("random states without encrypted networks: %v", err)
		random = func(rng *rand.Rand) overlay.State {
			return overlay.WithoutEncryptionForTest(overlay.RandomStateForTest(rng))
		}
	}
	a := random(rng)
	if err := dp.Reconcile(ctx, a); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for round := range 24 {
		b := random(rng)
		sc := overlay.DiffScopeForTest(a, b)
		if round%3 == 2 {
			sc = overlay.Scope{Tenants: overlay.TenantsOfForTest(sc, a, b), Infra: sc.Infra}
		}
		for k, n := range map[string]int{"tenants": len(sc.Tenants), "networks": len(sc.Networks), "endpoints": len(sc.Endpoints),
			"remotes": len(sc.Remotes)} {
			kinds[k] += n
		}
		if sc.Infra {
			kinds["infra"]++
		}
		scoped, restricted, err := dp.ObserveScopeForTest(ctx, b, sc)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if diff := cmp.Diff(restricted.String(), scoped.String()); diff != "" {
			t.Fatalf("round %d, scope %+v: the scoped observation is not the kernel's in that scope (-kernel +scoped):\n%s", round, sc, diff)
		}
		if err := dp.ReconcileScope(ctx, b, sc); err != nil {
			t.Fatalf("round %d, scope %+v: %v", round, sc, err)
		}
		want, got, ops := againstKernel(t, dp, b)
		if len(ops) != 0 {
			t.Fatalf("round %d, scope %+v: left for a full reconcile: %q\nfrom %+v\nto %+v", round, sc, ops, a, b)
		}
		// The container ends wait in the host namespace (no container took
		// them): wanted, but not part of the desired snapshot.
		var kept []string
		for _, l := range strings.Split(got.String(), "\n") {
			if !strings.HasPrefix(l, "host: link tc") {
				kept = append(kept, l)
			}
		}
		if diff := cmp.Diff(want.String(), strings.Join(kept, "\n")); diff != "" {
			t.Fatalf("round %d: kernel (-want +got):\n%s", round, diff)
		}
		a = b
	}
	t.Logf("objects named over the rounds: %v", kinds)
	for _, k := range []string{"tenants", "networks", "endpoints", "remotes", "infra"} {
		if kinds[k] == 0 {
			t.Errorf("no round had a scope with %s", k)
		}
	}
	// Objects outside the scope are not touched, even where the state
	// says they should change: a scope naming nothing but the
	// infrastructure leaves a new network alone.
	b := a
	b.Networks = append(b.Networks, overlay.Network{Tenant: "zeta", Name: "x", VNI: 7000})
	if err := dp.ReconcileScope(ctx, b, overlay.Scope{Infra: true}); err != nil {
		t.Fatal(err)
	}
	got, err := dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got.String(), "zeta") {
		t.Errorf("a scope without network 7000 created it:\n%s", got)
	}
}

// TestAnEndpointWhoseVethWentIsRemovedByItsScope: a container's namespace
// that goes takes the endpoint's veth pair with it, and leaves its port
// guard and its published ports behind. A scope naming the endpoint alone
// (not its tenant, which would read every port of the tenant) finds them
// by its port and removes them, and leaves the other endpoint as it was.
// One merged pass removes such endpoints of two tenants and one whose veth
// is still there.
func TestAnEndpointWhoseVethWentIsRemovedByItsScope(t *testing.T) {
	hs := newHosts(t, 1)
	dp, ctx := hs[0].dp, t.Context()
	web := overlay.Network{Tenant: "acme", Name: "web", VNI: 4097, Gateway: netip.MustParsePrefix("10.1.0.1/24"), Egress: true}
	gweb := overlay.Network{Tenant: "globex", Name: "web", VNI: 5000, Gateway: netip.MustParsePrefix("10.1.0.1/24"), Egress: true}
	a, b, c, g := ep("a", 4097, "10.1.0.10"), ep("b", 4097, "10.1.0.11"), ep("c", 4097, "10.1.0.12"), ep("g", 5000, "10.1.0.10")
	a.Ports = []overlay.Port{{Proto: overlay.TCP, HostPort: 8080, Port: 80}}
	b.Ports = []overlay.Port{{Proto: overlay.TCP, HostPort: 8081, Port: 80}}
	g.Ports = []overlay.Port{{Proto: overlay.TCP, HostPort: 8082, Port: 80}}
	s := overlay.State{Networks: []overlay.Network{web, gweb}, Endpoints: []overlay.Endpoint{a, b, c, g}}
	if err := dp.Reconcile(ctx, s); err != nil {
		t.Fatal(err)
	}
	before, err := dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"guard " + overlay.BridgeVeth("a"), "guard " + overlay.BridgeVeth("g"), "8080", "8082"} {
		if !strings.Contains(before.String(), want) {
			t.Fatalf("%q is not in the kernel:\n%s", want, before)
		}
	}
	for _, id := range []string{"a", "g"} {
		if out, err := runIn(hs[0].netns, "ip", "link", "del", overlay.ContainerVeth(id)); err != nil {
			t.Fatalf("delete %s's veth pair: %v: %s", id, err, out)
		}
	}

	s.Endpoints = []overlay.Endpoint{b}
	if err := dp.ReconcileScope(ctx, s, overlay.Scope{Endpoints: []string{"a", "c", "g"}}); err != nil {
		t.Fatal(err)
	}
	_, got, ops := againstKernel(t, dp, s)
	if len(ops) != 0 {
		t.Fatalf("left for a full reconcile: %q", ops)
	}
	for _, gone := range []string{overlay.BridgeVeth("a"), overlay.BridgeVeth("c"), overlay.BridgeVeth("g"), "8080", "8082"} {
		if strings.Contains(got.String(), gone) {
			t.Errorf("%s is still in the kernel:\n%s", gone, got)
		}
	}
	if !strings.Contains(got.String(), "guard "+overlay.BridgeVeth("b")) || !strings.Contains(got.String(), "8081") {
		t.Errorf("b's guard or published port went too:\n%s", got)
	}
}

// TestAGuardTamperedWithIsFound: a port's guard filter deleted, a foreign
// filter beside it, or its qdisc gone is found by a scoped reconcile of
// its endpoint and made whole; an older tenetd's guard table that no port
// wants (Debian 12's kernel left them behind when a port went first) goes
// at a full reconcile. The kernel is read with tc and nft, not with the
// observation under test.
func TestAGuardTamperedWithIsFound(t *testing.T) {
	hs := newHosts(t, 1)
	dp, ctx := hs[0].dp, t.Context()
	tenantNs := hs[0].netns + "-acme"
	web := overlay.Network{Tenant: "acme", Name: "web", VNI: 4097, Gateway: netip.MustParsePrefix("10.1.0.1/24")}
	s := overlay.State{Networks: []overlay.Network{web}}
	ids := []string{"a", "b", "c", "d"}
	for i, id := range ids {
		s.Endpoints = append(s.Endpoints, ep(id, 4097, fmt.Sprintf("10.1.0.%d", 10+i)))
	}
	if err := dp.Reconcile(ctx, s); err != nil {
		t.Fatal(err)
	}
	in := func(args ...string) string {
		t.Helper()
		out, err := runIn(tenantNs, args...)
		if err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		return out
	}
	filters := func(id string) string {
		return in("tc", "filter", "show", "dev", overlay.BridgeVeth(id), "ingress")
	}
	for _, id := range ids {
		if f := filters(id); !strings.Contains(f, "tenet-guard-v2 "+overlay.BridgeVeth(id)) || !strings.Contains(f, "direct-action") {
			t.Fatalf("%s's port has no guard:\n%s", id, f)
		}
	}
	pb, pc, pd := overlay.BridgeVeth("b"), overlay.BridgeVeth("c"), overlay.BridgeVeth("d")
	in("tc", "filter", "del", "dev", pb, "ingress")
	in("tc", "filter", "add", "dev", pc, "ingress", "prio", "7", "protocol", "ip", "u32", "match", "ip", "src", "10.0.0.0/8", "classid", "1:1")
	in("tc", "qdisc", "del", "dev", pd, "clsact")
	if err := dp.ReconcileScope(ctx, s, overlay.Scope{Endpoints: []string{"b", "c", "d"}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"b", "c", "d"} {
		f := filters(id)
		if !strings.Contains(f, "tenet-guard-v2 "+overlay.BridgeVeth(id)) || strings.Contains(f, "u32") || strings.Count(f, " handle ") != 1 {
			t.Errorf("%s's guard was not made whole again:\n%s", id, f)
		}
	}

	const stray = "tv0123456789ab"
	in("nft", "add", "table", "netdev", "tenet-"+stray)
	in("nft", "add", "table", "netdev", "tenet")
	if err := dp.Reconcile(ctx, s); err != nil {
		t.Fatal(err)
	}
	if tables := in("nft", "list", "tables", "netdev"); strings.Contains(tables, "tenet") {
		t.Errorf("old guard tables are left by a full reconcile:\n%s", tables)
	}
	if _, _, ops := againstKernel(t, dp, s); len(ops) != 0 {
		t.Errorf("left for a full reconcile: %q", ops)
	}
}

// againstKernel returns the desired snapshot of s, the kernel's, and what
// a full reconcile would still do.
func againstKernel(t *testing.T, dp *overlay.Datapath, s overlay.State) (want, got overlay.Snapshot, ops []overlay.Op) {
	t.Helper()
	want, err := dp.Desired(s)
	if err != nil {
		t.Fatal(err)
	}
	if got, err = dp.Observe(t.Context()); err != nil {
		t.Fatal(err)
	}
	return want, got, overlay.Plan(want, got)
}
