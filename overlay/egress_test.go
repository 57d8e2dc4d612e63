package overlay

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func TestMergeRangesMakesDisjointSortedIntervals(t *testing.T) {
	tests := []struct {
		in   []netip.Prefix
		want []string
	}{
		{nil, nil},
		{prefixes("198.51.100.11/32"), []string{"198.51.100.11-198.51.100.11"}},
		{prefixes("198.51.100.12/32", "198.51.100.0/24", "198.51.100.11/32"), []string{"198.51.100.0-198.51.100.255"}},
		{prefixes("203.0.113.128/25", "203.0.113.0/25"), []string{"203.0.113.0-203.0.113.255"}}, // adjacent
		{prefixes("10.0.0.5/24", "fd00::/64", "::ffff:10.9.0.0/120"), []string{"10.0.0.0-10.0.0.255"}},
		{prefixes("0.0.0.0/0", "10.0.0.0/8"), []string{"0.0.0.0-255.255.255.255"}},
		{prefixes("255.255.255.255/32", "255.255.255.254/32", "1.2.3.4/32"), []string{"1.2.3.4-1.2.3.4", "255.255.255.254-255.255.255.255"}},
	}
	for _, tt := range tests {
		var got []string
		for _, r := range mergeRanges(tt.in) {
			got = append(got, r.String())
			back, err := parseRange(r.String())
			if err != nil || back != r {
				t.Errorf("parseRange(%q) = %v, %v", r, back, err)
			}
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("mergeRanges(%v) (-want +got):\n%s", tt.in, diff)
		}
	}
	for _, bad := range []string{"10.0.0.2-10.0.0.1", "10.0.0.1", "fd00::1-fd00::2", "x-y"} {
		if _, err := parseRange(bad); err == nil {
			t.Errorf("parseRange(%q) accepted", bad)
		}
	}
}

func TestHostElemsAlwaysDenyTheVXLANPort(t *testing.T) {
	got := hostElems(Infra{Deny: prefixes("198.51.100.0/24"), Allow: prefixes("198.51.100.7/32"),
		Ports: []L4Port{{TCP, 7946}, {UDP, 7946}, {UDP, 4789}}}, 4789, 51820)
	want := []Elem{{setAllow, "198.51.100.7-198.51.100.7"}, {setDeny, "198.51.100.0-198.51.100.255"},
		{setPorts, "tcp . 7946"}, {setPorts, "udp . 4789"}, {setPorts, "udp . 51820"}, {setPorts, "udp . 7946"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("hostElems (-want +got):\n%s", diff)
	}
	if got := hostElems(Infra{}, 8472, 0); !cmp.Equal(got, []Elem{{setPorts, "udp . 8472"}}) {
		t.Errorf("no infra: %v", got)
	}
}

func TestAssignUplinksKeepsIndicesAndSkipsUsedOnes(t *testing.T) {
	observed := newSnapshot()
	observed.Tenants["b"] = newTenantObjects()
	observed.Tenants["b"].Uplink = &Uplink{Index: 3}
	observed.UplinksUsed = map[int]bool{1: true, 3: true} // 1: a tenant outside the view
	got, ok := assignUplinks([]string{"a", "b", "c"}, observed, uplinkNet)
	if !ok || !cmp.Equal(got, map[string]int{"a": 2, "b": 3, "c": 4}) {
		t.Errorf("assignUplinks = %v, %v", got, ok)
	}
	if _, ok := assignUplinks([]string{"a", "b"}, newSnapshot(), netip.MustParsePrefix("169.254.0.0/29")); ok {
		t.Error("a /29 holds one usable /30 after the first, yet two tenants got one")
	}
}

func TestValidateRefusesBadInfraScopeAndMTU(t *testing.T) {
	good := State{Networks: []Network{web()}}
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"port 0", State{Infra: Infra{Ports: []L4Port{{TCP, 0}}}}.Validate(), "infra: tcp port 0"},
		{"protocol", State{Infra: Infra{Ports: []L4Port{{Proto(1), 53}}}}.Validate(), "protocol 1: must be tcp (6) or udp (17)"},
		{"deny prefix", State{Infra: Infra{Deny: []netip.Prefix{{}}}}.Validate(), "infra: deny prefix invalid Prefix"},
		{"scope tenant", good.ValidateScope(Scope{Tenants: []string{"Acme"}}), `scope: tenant "Acme"`},
		{"scope vni", good.ValidateScope(Scope{Networks: []uint32{0}}), "scope: vni 0"},
		{"scope mac", good.ValidateScope(Scope{Remotes: []RemoteKey{{VNI: 4097, MAC: "02:7E:0A:01:00:05"}}}), "canonical form"},
		{"scope multicast mac", good.ValidateScope(Scope{Remotes: []RemoteKey{{VNI: 4097, MAC: "01:00:5e:00:00:01"}}}), "must be unicast"},
		{"scope endpoint", good.ValidateScope(Scope{Endpoints: []string{""}}), "empty id"},
		{"mtu above the underlay's", State{Networks: []Network{{Tenant: "acme", Name: "web", VNI: 1, MTU: 9000}}}.ValidateMTU(1450),
			"network acme/web: mtu 9000: above 1450"},
	} {
		if tt.err == nil || !strings.Contains(tt.err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error containing %q", tt.name, tt.err, tt.want)
		}
	}
	if err := good.ValidateMTU(1450); err != nil {
		t.Errorf("default mtu refused: %v", err)
	}
	if got := (Host{VTEP: vtep0, UnderlayMTU: 9000}).MaxMTU(); got != 8950 {
		t.Errorf("MaxMTU over IPv4 = %d", got)
	}
	if got := (Host{VTEP: netip.MustParseAddr("fd00::1"), UnderlayMTU: 1500}).MaxMTU(); got != 1430 {
		t.Errorf("MaxMTU over IPv6 = %d", got)
	}
}

// TestNoUplinkHoldsTheResolverOrMetadataAddress: the /30s of the name
// resolver (on every tenant namespace's lo) and of the cloud metadata
// service are never a tenant's uplink; every other /30 but the first is.
func TestNoUplinkHoldsTheResolverOrMetadataAddress(t *testing.T) {
	n := netip.MustParsePrefix("169.254.0.0/16")
	skipped := 0
	for i := range 1 << 14 {
		host, tenant := uplinkAddrs(n, i)
		holds := host.Masked().Contains(ResolverAddr) || host.Masked().Contains(metadataAddr)
		if usableUplink(n, i) == holds && i != 0 {
			t.Errorf("uplink %d (%v, %v): usable %v", i, host, tenant, usableUplink(n, i))
		}
		if !usableUplink(n, i) {
			skipped++
		}
	}
	if skipped != 3 { // index 0, the resolver's, the metadata's
		t.Errorf("%d uplinks skipped, want 3", skipped)
	}
}
