package core

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/tenet-net/tenet/overlay"
)

var (
	hostVTEP = netip.MustParseAddr("198.51.100.10")
	h1VTEP   = netip.MustParseAddr("198.51.100.11")
	h2VTEP   = netip.MustParseAddr("198.51.100.12")
	t0       = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
)

func mac(last byte) net.HardwareAddr { return net.HardwareAddr{2, 0x7e, 10, 1, 0, last} }

func ip(last byte) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, 0, last}) }

func webNet() Network {
	return Network{NetworkSpec: NetworkSpec{Tenant: "acme", Name: "web", VNI: 100, Subnet: netip.MustParsePrefix("10.1.0.0/24"),
		Gateway: netip.MustParseAddr("10.1.0.1")}}
}

func baseView() view {
	return view{host: "h0", vtep: hostVTEP, nets: []Network{webNet()},
		eps:     []Endpoint{{EndpointSpec: EndpointSpec{ID: "e5", Network: "acme/web", IP: netip.PrefixFrom(ip(5), 24), MAC: mac(5)}}},
		remotes: map[string][]Remote{}, peers: map[string][]Peer{}, adopted: map[uint32]adoptedRemotes{}}
}

func rem(id string, last byte, host string, vtep netip.Addr, version uint64) Remote {
	return Remote{ID: id, Network: "acme/web", MAC: mac(last), IP: ip(last), VTEP: vtep, Host: host, Version: version}
}

func remoteMACs(s overlay.State) []string {
	var out []string
	for _, r := range s.Remotes {
		out = append(out, r.MAC.String()+"@"+r.VTEP.String())
	}
	slices.Sort(out)
	return out
}

func TestDesiredFromAView(t *testing.T) {
	grace := time.Minute
	for _, tt := range []struct {
		name      string
		edit      func(*view)
		remotes   []string
		peers     []netip.Addr
		conflicts int
		next      time.Time
		ips       map[string][]netip.Addr // the addresses programmed for a remote MAC, where checked
	}{
		{name: "local only"},
		{
			name: "a remote and its host as a peer",
			edit: func(v *view) {
				v.remotes["acme/web"] = []Remote{rem("r9", 9, "h1", h1VTEP, 1)}
				v.peers["acme/web"] = []Peer{{Host: "h1", VTEP: h1VTEP}}
			},
			remotes: []string{"02:7e:0a:01:00:09@198.51.100.11"},
			peers:   []netip.Addr{h1VTEP},
		},
		{
			name: "a remote of a network this host lacks is left out",
			edit: func(v *view) {
				r := rem("x", 9, "h1", h1VTEP, 1)
				r.Network = "globex/web"
				v.remotes["globex/web"] = []Remote{r}
			},
		},
		{
			name: "a remote claiming a local address loses",
			edit: func(v *view) {
				v.remotes["acme/web"] = []Remote{rem("thief", 5, "h1", h1VTEP, 9)}
			},
			conflicts: 1,
		},
		{
			name: "remotes without an address claim none",
			edit: func(v *view) {
				a, b := rem("a", 9, "h1", h1VTEP, 1), rem("b", 10, "h2", h2VTEP, 2)
				a.IP, b.IP = netip.Addr{}, netip.Addr{}
				v.remotes["acme/web"] = []Remote{a, b}
			},
			remotes: []string{"02:7e:0a:01:00:09@198.51.100.11", "02:7e:0a:01:00:0a@198.51.100.12"},
		},
		{
			name: "of two remotes claiming one address the newer wins",
			edit: func(v *view) {
				old, newer := rem("old", 9, "h1", h1VTEP, 1), rem("new", 9, "h2", h2VTEP, 2)
				v.remotes["acme/web"] = []Remote{old, newer}
			},
			remotes:   []string{"02:7e:0a:01:00:09@198.51.100.12"},
			conflicts: 1,
		},
		{
			name: "a record of this host, or at its VTEP, is never tunnelled to",
			edit: func(v *view) {
				v.remotes["acme/web"] = []Remote{rem("self", 9, "h0", h1VTEP, 1), rem("loop", 10, "h1", hostVTEP, 1)}
				v.peers["acme/web"] = []Peer{{Host: "h0", VTEP: hostVTEP}}
			},
		},
		{
			name: "an invalid record is ignored",
			edit: func(v *view) {
				bad := rem("bad", 9, "h1", h1VTEP, 1)
				bad.MAC = net.HardwareAddr{1, 0, 0, 0, 0, 1}
				zero := rem("zero", 10, "h1", netip.IPv4Unspecified(), 1)
				v.remotes["acme/web"] = []Remote{bad, zero}
			},
		},
		{
			name: "a host down within the grace stays, and says when its grace ends",
			edit: func(v *view) {
				r := rem("r9", 9, "h1", h1VTEP, 1)
				r.DownSince = t0.Add(-10 * time.Second)
				v.remotes["acme/web"] = []Remote{r}
				v.peers["acme/web"] = []Peer{{Host: "h1", VTEP: h1VTEP, DownSince: t0.Add(-20 * time.Second)}}
			},
			remotes: []string{"02:7e:0a:01:00:09@198.51.100.11"},
			peers:   []netip.Addr{h1VTEP},
			next:    t0.Add(-20 * time.Second).Add(time.Minute),
		},
		{
			name: "a host down past the grace is gone",
			edit: func(v *view) {
				r := rem("r9", 9, "h1", h1VTEP, 1)
				r.DownSince = t0.Add(-2 * time.Minute)
				v.remotes["acme/web"] = []Remote{r}
				v.peers["acme/web"] = []Peer{{Host: "h1", VTEP: h1VTEP, DownSince: t0.Add(-2 * time.Minute)}}
			},
		},
		{
			name: "adopted kernel entries fill in, never over gossip's",
			edit: func(v *view) {
				v.remotes["acme/web"] = []Remote{rem("r9", 9, "h1", h1VTEP, 1)}
				v.adopted[100] = adoptedRemotes{
					remotes: []overlay.Remote{
						{VNI: 100, MAC: mac(9), VTEP: h2VTEP, IPs: []netip.Addr{ip(9)}},   // gossip says h1
						{VNI: 100, MAC: mac(8), VTEP: h2VTEP, IPs: []netip.Addr{ip(8)}},   // only in the kernel
						{VNI: 100, MAC: mac(7), VTEP: hostVTEP, IPs: []netip.Addr{ip(7)}}, // never to ourselves
					},
					peers: []netip.Addr{h2VTEP, hostVTEP},
				}
			},
			remotes: []string{"02:7e:0a:01:00:08@198.51.100.12", "02:7e:0a:01:00:09@198.51.100.11"},
			peers:   []netip.Addr{h2VTEP},
		},
		{
			// The network has no gossip entry: the local endpoints'
			// claims are indexed for the adopted ones all the same.
			name: "adopted entries never take a local endpoint's mac or address",
			edit: func(v *view) {
				v.adopted[100] = adoptedRemotes{
					remotes: []overlay.Remote{
						{VNI: 100, MAC: mac(5), VTEP: h2VTEP, IPs: []netip.Addr{ip(6)}},        // e5's MAC
						{VNI: 100, MAC: mac(8), VTEP: h2VTEP, IPs: []netip.Addr{ip(5), ip(8)}}, // e5's address, and its own
					},
					peers: []netip.Addr{h2VTEP},
				}
			},
			remotes: []string{"02:7e:0a:01:00:08@198.51.100.12"},
			peers:   []netip.Addr{h2VTEP},
			ips:     map[string][]netip.Addr{"02:7e:0a:01:00:08": {ip(8)}},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := baseView()
			if tt.edit != nil {
				tt.edit(&v)
			}
			s, conflicts, next := desired(v, t0, grace)
			if err := s.Validate(); err != nil {
				t.Fatalf("desired state is invalid: %v", err)
			}
			if diff := cmp.Diff(tt.remotes, remoteMACs(s)); diff != "" {
				t.Errorf("remotes (-want +got):\n%s", diff)
			}
			if len(s.Networks) != 1 || !slices.Equal(s.Networks[0].Peers, tt.peers) {
				t.Errorf("peers %v, want %v", s.Networks, tt.peers)
			}
			if len(conflicts) != tt.conflicts {
				t.Errorf("%d conflicts, want %d: %+v", len(conflicts), tt.conflicts, conflicts)
			}
			if !next.Equal(tt.next) {
				t.Errorf("next %v, want %v", next, tt.next)
			}
			for _, r := range s.Remotes {
				if want, ok := tt.ips[r.MAC.String()]; ok && !slices.Equal(r.IPs, want) {
					t.Errorf("remote %s programmed with %v, want %v", r.MAC, r.IPs, want)
				}
			}
			if len(s.Endpoints) != 1 || s.Endpoints[0].MAC.String() != mac(5).String() {
				t.Errorf("local endpoints %+v", s.Endpoints)
			}
		})
	}
}

func TestDesiredNetworkShapes(t *testing.T) {
	v := baseView()
	internal := webNet()
	internal.Name, internal.VNI, internal.Internal = "db", 101, true
	internal.Subnet = netip.MustParsePrefix("10.2.0.0/24")
	noGW := webNet()
	noGW.Name, noGW.VNI, noGW.Gateway = "raw", 102, netip.Addr{}
	noGW.Subnet = netip.MustParsePrefix("10.3.0.0/24")
	mtu := webNet()
	mtu.Tenant, mtu.VNI, mtu.MTU = "globex", 103, 1400
	v.nets = append(v.nets, internal, noGW, mtu)
	// An endpoint of a network that is not here (a race with its removal)
	// is left out rather than making the state invalid.
	v.eps = append(v.eps, Endpoint{EndpointSpec: EndpointSpec{ID: "stray", Network: "acme/gone", IP: netip.PrefixFrom(ip(6), 24), MAC: mac(6)}})
	s, _, _ := desired(v, t0, time.Minute)
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	got := map[string]overlay.Network{}
	for _, n := range s.Networks {
		got[n.Tenant+"/"+n.Name] = n
	}
	if n := got["acme/web"]; !n.Egress || n.Gateway != netip.MustParsePrefix("10.1.0.1/24") {
		t.Errorf("egress network: %+v", n)
	}
	if n := got["acme/db"]; n.Egress {
		t.Errorf("internal network has egress: %+v", n)
	}
	if n := got["acme/raw"]; n.Egress || n.Gateway.IsValid() {
		t.Errorf("network without gateway: %+v", n)
	}
	if n := got["globex/web"]; n.MTU != 1400 {
		t.Errorf("mtu: %+v", n)
	}
	if len(s.Endpoints) != 1 {
		t.Errorf("endpoints: %+v", s.Endpoints)
	}
	// Sorted, so that the same view always gives the same state.
	s2, _, _ := desired(v, t0, time.Minute)
	if a, b := fmt.Sprintf("%+v", s), fmt.Sprintf("%+v", s2); a != b {
		t.Errorf("desired is not deterministic:\n%s\n%s", a, b)
	}
}

// TestDesiredNamesWhoHoldsAConflictingClaim: the warning for a remote left
// out names who holds the address or MAC: a local endpoint, or another
// host's (even one named "adopted", which is not an adopted entry).
func TestDesiredNamesWhoHoldsAConflictingClaim(t *testing.T) {
	v := baseView()
	thief := rem("thief", 5, "h1", h1VTEP, 9) // e5's address and MAC
	older, newer := rem("older", 9, "h1", h1VTEP, 1), rem("newer", 9, "adopted", h2VTEP, 2)
	v.remotes["acme/web"] = []Remote{thief, older, newer}
	_, conflicts, _ := desired(v, t0, time.Minute)
	got := map[string]string{}
	for _, c := range conflicts {
		got[c.remote.ID] = c.with
	}
	want := map[string]string{"thief": "endpoint e5 on this host", "older": "endpoint newer on host adopted"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("conflicts (-want +got):\n%s", diff)
	}
}

// TestDesiredDoesNotDependOnTheListingsOrder: gossip lists a network's
// remote endpoints in no particular order; every order of the same entries,
// ties of version and ID on two hosts included, gives the same state and
// the same conflicts, so every host makes the same choice.
func TestDesiredDoesNotDependOnTheListingsOrder(t *testing.T) {
	list := []Remote{
		rem("a", 9, "h1", h1VTEP, 3), rem("a", 9, "h2", h2VTEP, 3), // one ID, one version, two hosts
		rem("b", 9, "h2", h2VTEP, 3), rem("c", 10, "h1", h1VTEP, 1), rem("d", 11, "h2", h2VTEP, 7),
		rem("e", 10, "h2", h2VTEP, 1), rem("f", 12, "h1", h1VTEP, 2),
	}
	run := func(order []Remote) (overlay.State, []string) {
		v := baseView()
		v.remotes["acme/web"] = order
		s, conflicts, _ := desired(v, t0, time.Minute)
		var cs []string
		for _, c := range conflicts {
			cs = append(cs, c.remote.ID+"@"+c.remote.Host+" lost to "+c.with)
		}
		slices.Sort(cs)
		return s, cs
	}
	wantState, wantConflicts := run(slices.Clone(list))
	if len(wantConflicts) != 3 {
		t.Fatalf("conflicts = %v, want 3 (two more claims of 10.1.0.9, one more of 10.1.0.10)", wantConflicts)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		order := slices.Clone(list)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		s, cs := run(order)
		if diff := cmp.Diff(wantState, s, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
			t.Fatalf("state differs for order %v (-first +this):\n%s", order, diff)
		}
		if diff := cmp.Diff(wantConflicts, cs); diff != "" {
			t.Fatalf("conflicts differ for order %v (-first +this):\n%s", order, diff)
		}
	}
}

// BenchmarkDesired: one pass over 1,000 local endpoints and 1,000 remote
// ones of their network (listed in random order, as gossip lists them),
// as every plugin call and remote event makes.
func BenchmarkDesired(b *testing.B) {
	v := baseView()
	v.nets[0].Subnet = netip.MustParsePrefix("10.1.0.0/16")
	v.eps = nil
	for i := range 1000 {
		a := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		v.eps = append(v.eps, Endpoint{EndpointSpec: EndpointSpec{ID: fmt.Sprintf("%064d", i), Network: "acme/web",
			IP: netip.PrefixFrom(a, 16), MAC: net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)}}})
		r := Remote{ID: fmt.Sprintf("r%063d", i), Network: "acme/web", MAC: net.HardwareAddr{2, 0, 0, 1, byte(i >> 8), byte(i)},
			IP: netip.AddrFrom4([4]byte{10, 1, 100 + byte(i>>8), byte(i)}), VTEP: h1VTEP, Host: "h1", Version: uint64(i)}
		v.remotes["acme/web"] = append(v.remotes["acme/web"], r)
	}
	// Gossip lists remotes in no particular order.
	rng := rand.New(rand.NewPCG(3, 4))
	rs := v.remotes["acme/web"]
	rng.Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
	for b.Loop() {
		desired(v, t0, time.Minute)
	}
}

// BenchmarkDesiredLocalOnly: one pass with a host's 1st endpoint against
// its 1,000th, in a network no other host has an endpoint in (issue 13's
// 1,000 endpoints on one host): side by side in one run.
func BenchmarkDesiredLocalOnly(b *testing.B) {
	for _, n := range []int{1, 1000} {
		v := baseView()
		v.nets[0].Subnet = netip.MustParsePrefix("10.1.0.0/16")
		v.eps = nil
		for i := range n {
			a := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
			v.eps = append(v.eps, Endpoint{EndpointSpec: EndpointSpec{ID: fmt.Sprintf("%064d", i), Network: "acme/web",
				IP: netip.PrefixFrom(a, 16), MAC: net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)}}})
		}
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			for b.Loop() {
				desired(v, t0, time.Minute)
			}
		})
	}
}

// TestDesiredIndexesOnlyNetworksWithRemotes: the claim index covers the
// local endpoints of networks with remote entries, also when they
// interleave by ID with endpoints of a network without any: a remote
// claiming such an endpoint's address is refused, one in the other
// network is programmed.
func TestDesiredIndexesOnlyNetworksWithRemotes(t *testing.T) {
	v := baseView()
	db := webNet()
	db.Name, db.VNI, db.Subnet, db.Gateway = "db", 101, netip.MustParsePrefix("10.2.0.0/24"), netip.MustParseAddr("10.2.0.1")
	v.nets = append(v.nets, db)
	local := func(id, network string, ip netip.Addr, m byte) Endpoint {
		return Endpoint{EndpointSpec: EndpointSpec{ID: id, Network: network, IP: netip.PrefixFrom(ip, 24), MAC: mac(m)}}
	}
	dbIP := func(last byte) netip.Addr { return netip.AddrFrom4([4]byte{10, 2, 0, last}) }
	v.eps = []Endpoint{local("e1", "acme/db", dbIP(11), 11), local("e2", "acme/web", ip(12), 12), local("e3", "acme/db", dbIP(13), 13),
		local("e4", "acme/web", ip(14), 14)}
	taken := rem("r1", 50, "h1", h1VTEP, 1)
	taken.IP = ip(14) // e4's address, in e4's network
	free := rem("r2", 51, "h1", h1VTEP, 1)
	v.remotes["acme/web"] = []Remote{taken, free}
	s, conflicts, _ := desired(v, t0, time.Minute)
	if len(conflicts) != 1 || conflicts[0].remote.ID != "r1" {
		t.Fatalf("conflicts %+v, want r1's only", conflicts)
	}
	if got := remoteMACs(s); !slices.Equal(got, []string{mac(51).String() + "@" + h1VTEP.String()}) {
		t.Errorf("remotes %v, want r2's only", got)
	}
	if len(s.Endpoints) != 4 {
		t.Errorf("%d local endpoints, want 4", len(s.Endpoints))
	}
}
