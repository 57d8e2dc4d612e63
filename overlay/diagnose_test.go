package overlay

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func findingStrings(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Problem+" "+f.Object)
	}
	return out
}

func TestFindingsNameWhatDiffers(t *testing.T) {
	rmac := "02:7e:0a:01:00:07"
	s := State{Networks: []Network{{Tenant: "acme", Name: "web", VNI: 4097, Peers: []netip.Addr{vtep1}, Egress: true,
		Gateway: netip.MustParsePrefix("10.1.0.1/24")}},
		Endpoints: []Endpoint{{ID: "ep1", VNI: 4097, IPs: ips("10.1.0.5")}},
		Remotes:   []Remote{{VNI: 4097, MAC: mac(rmac), IPs: ips("10.1.0.7"), VTEP: vtep1}},
		Infra:     Infra{Deny: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}}
	want := des(s)
	if fs := Findings(Plan(want, want), want); len(fs) != 0 {
		t.Fatalf("a kernel that matches has findings: %v", fs)
	}
	port := BridgeVeth("ep1")
	tests := []struct {
		name   string
		break_ func(o *TenantObjects, snap *Snapshot)
		want   []string
		check  func(t *testing.T, f Finding)
	}{
		{
			name:   "fdb entry deleted",
			break_: func(o *TenantObjects, _ *Snapshot) { delete(o.FDB, FDBEntry{Dev: "vx4097", MAC: rmac, Dst: vtep1}) },
			want:   []string{"missing fdb 02:7e:0a:01:00:07 dev vx4097 dst 198.51.100.11"},
			check: func(t *testing.T, f Finding) {
				if f.VNI != 4097 || f.MAC != rmac || f.Tenant != "acme" || !strings.Contains(f.Fix, "fdb append") {
					t.Errorf("finding %+v: want VNI 4097, MAC %s, tenant acme and an fdb append", f, rmac)
				}
			},
		},
		{
			name: "fdb entry to another vtep",
			break_: func(o *TenantObjects, _ *Snapshot) {
				delete(o.FDB, FDBEntry{Dev: "vx4097", MAC: rmac, Dst: vtep1})
				o.FDB[FDBEntry{Dev: "vx4097", MAC: rmac, Dst: vtep2}] = true
			},
			want: []string{"differs fdb 02:7e:0a:01:00:07 dev vx4097 dst 198.51.100.12 (want dst 198.51.100.11)"},
		},
		{
			name: "stale fdb entry",
			break_: func(o *TenantObjects, _ *Snapshot) {
				o.FDB[FDBEntry{Dev: "vx4097", MAC: "02:00:00:00:00:99", Dst: vtep2}] = true
			},
			want: []string{"stale fdb 02:00:00:00:00:99 dev vx4097 dst 198.51.100.12"},
		},
		{
			name:   "flood entry deleted",
			break_: func(o *TenantObjects, _ *Snapshot) { delete(o.FDB, FDBEntry{Dev: "vx4097", MAC: floodMAC, Dst: vtep1}) },
			want:   []string{"missing fdb 00:00:00:00:00:00 dev vx4097 dst 198.51.100.11 (flood entry to a peer)"},
		},
		{
			name: "neighbour with another mac",
			break_: func(o *TenantObjects, _ *Snapshot) {
				delete(o.Neigh, NeighEntry{Dev: "vx4097", IP: netip.MustParseAddr("10.1.0.7"), MAC: rmac})
				o.Neigh[NeighEntry{Dev: "vx4097", IP: netip.MustParseAddr("10.1.0.7"), MAC: "02:00:00:00:00:01"}] = true
			},
			want: []string{"differs neigh 10.1.0.7 lladdr 02:00:00:00:00:01 dev vx4097 (want lladdr 02:7e:0a:01:00:07)"},
		},
		{
			name: "mtu and master",
			break_: func(o *TenantObjects, _ *Snapshot) {
				l := o.Links["vx4097"]
				l.MTU, l.Master = 1400, ""
				o.Links["vx4097"] = l
			},
			want: []string{`differs link vx4097: mtu 1400 (want 1450), master "" (want "br4097")`},
		},
		{
			name: "guard rule deleted",
			break_: func(o *TenantObjects, _ *Snapshot) {
				o.Guards[port] = Guard{Port: port, MAC: "unreadable"}
			},
			want: []string{`differs guard ` + port + `: its filters are incomplete or altered, want the filter of mac ` +
				DeriveMAC(ips("10.1.0.5"), "ep1").String() + ` ip 10.1.0.5`},
			check: func(t *testing.T, f Finding) {
				if f.Port != port {
					t.Errorf("finding %+v: want port %s", f, port)
				}
			},
		},
		{
			name:   "guard chain deleted",
			break_: func(o *TenantObjects, _ *Snapshot) { delete(o.Guards, port) },
			want:   []string{"missing guard " + port + " mac " + DeriveMAC(ips("10.1.0.5"), "ep1").String() + " ip 10.1.0.5"},
		},
		{
			name: "veth made anew",
			break_: func(o *TenantObjects, _ *Snapshot) {
				l := o.Links[port]
				l.Kind = "dummy"
				o.Links[port] = l
			},
			want: []string{"differs link " + port + " type dummy mtu 1450 master br4097 up (must be made anew): " + port + " type veth mtu 1450 master br4097 up"},
		},
		{
			name: "host element deleted",
			break_: func(_ *TenantObjects, snap *Snapshot) {
				delete(snap.HostElems, Elem{Set: "deny4", Key: "198.51.100.0-198.51.100.255"})
			},
			want: []string{"missing nft element { 198.51.100.0-198.51.100.255 } of set deny4"},
		},
		{
			name:   "namespace gone",
			break_: func(_ *TenantObjects, snap *Snapshot) { delete(snap.Tenants, "acme") },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			observed := clone(want)
			tc.break_(observed.Tenants["acme"], &observed)
			fs := Findings(Plan(want, observed), observed)
			if len(fs) == 0 {
				t.Fatal("no findings")
			}
			if tc.want != nil {
				if d := cmp.Diff(tc.want, findingStrings(fs)); d != "" {
					t.Errorf("findings (-want +got):\n%s", d)
				}
			}
			if tc.check != nil {
				tc.check(t, fs[0])
			}
			if tc.name == "namespace gone" && fs[0].Problem != Missing || fs[0].Fix == "" {
				t.Errorf("first finding %+v", fs[0])
			}
		})
	}
}
