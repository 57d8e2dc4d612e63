package overlay_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/tenet-net/tenet/overlay"
)

func TestDiagnoseNamesWhatWasBrokenByHand(t *testing.T) {
	hs := newHosts(t, 2)
	ctx := t.Context()
	e1, e2 := ep("e1", 4097, "10.1.0.1"), ep("e2", 4097, "10.1.0.2")
	c := &cluster{hosts: hs, networks: []overlay.Network{{Tenant: "acme", Name: "web", VNI: 4097}},
		eps: map[*host][]overlay.Endpoint{hs[0]: {e1}, hs[1]: {e2}}}
	c.reconcile(t)
	dp, s := hs[0].dp, c.state(hs[0])
	if fs, err := dp.Diagnose(ctx, s); err != nil || len(fs) != 0 {
		t.Fatalf("after reconcile: findings %v, err %v", fs, err)
	}
	before, err := dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}

	tenantNS := hs[0].netns + "-acme"
	remoteMAC := overlay.DeriveMAC(e2.IPs, e2.ID).String()
	for _, cmd := range [][]string{
		{"bridge", "fdb", "del", remoteMAC, "dev", "vx4097", "dst", hs[1].vtep.String()},
		{"bridge", "fdb", "append", "02:00:00:00:00:99", "dev", "vx4097", "dst", "198.51.100.99", "self", "permanent"},
		{"ip", "link", "set", "br4097", "mtu", "1400"},
	} {
		if out, err := exec.Command("ip", append([]string{"netns", "exec", tenantNS}, cmd...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", cmd, err, out)
		}
	}
	// A filter beside the guard, as an admin might add by hand.
	if out, err := runIn(tenantNS, "tc", "filter", "add", "dev", overlay.BridgeVeth(e1.ID), "ingress", "prio", "7",
		"protocol", "ip", "u32", "match", "ip", "src", "10.0.0.0/8", "classid", "1:1"); err != nil {
		t.Fatalf("add a filter beside %s's guard: %v: %s", e1.ID, err, out)
	}

	fs, err := dp.Diagnose(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fs {
		got = append(got, f.Problem+" "+f.Object)
		t.Logf("finding: %v", f)
	}
	for _, want := range []string{
		"missing fdb " + remoteMAC + " dev vx4097 dst " + hs[1].vtep.String(),
		"stale fdb 02:00:00:00:00:99 dev vx4097 dst 198.51.100.99",
		"differs link br4097: mtu 1400 (want 1450)",
		"differs guard " + overlay.BridgeVeth(e1.ID) + ": its filters are incomplete or altered",
	} {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, want) }) {
			t.Errorf("no finding %q in:\n%s", want, strings.Join(got, "\n"))
		}
	}
	if len(fs) != 4 {
		t.Errorf("%d findings, want 4:\n%s", len(fs), strings.Join(got, "\n"))
	}
	after, err := dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.String() == before.String() {
		t.Error("the kernel reads as before the damage: the test broke nothing")
	}
	c.reconcile(t)
	if fs, err := dp.Diagnose(ctx, s); err != nil || len(fs) != 0 {
		t.Errorf("after repair: findings %v, err %v", fs, err)
	}
}
