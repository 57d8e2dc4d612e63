package overlay

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	uplinkNet = netip.MustParsePrefix("169.254.0.0/16")
	host0     = Host{VTEP: netip.MustParseAddr("198.51.100.10"), Port: 4789, UnderlayMTU: 1500, UplinkNet: uplinkNet, WireGuardPort: 51820}
	vtep0     = host0.VTEP
	vtep1     = netip.MustParseAddr("198.51.100.11")
	vtep2     = netip.MustParseAddr("198.51.100.12")
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func ips(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}

func web(peers ...netip.Addr) Network {
	return Network{Tenant: "acme", Name: "web", VNI: 4097, Peers: peers}
}

// des is the desired snapshot of s on host0, from an empty kernel.
func des(s State) Snapshot {
	snap, ok := Desire(s, host0, newSnapshot())
	if !ok {
		panic("uplink net full")
	}
	return snap
}

func planStrings(ops []Op) []string {
	var out []string
	for _, op := range ops {
		out = append(out, op.String())
	}
	return out
}

func TestPlan(t *testing.T) {
	oneEndpoint := State{Networks: []Network{web()}, Endpoints: []Endpoint{{ID: "ep1", VNI: 4097, IPs: ips("10.1.0.5")}}}
	withRemote := State{Networks: []Network{web(vtep1)},
		Remotes: []Remote{{VNI: 4097, MAC: mac("02:7e:0a:01:00:07"), IPs: ips("10.1.0.7"), VTEP: vtep1}}}
	tests := []struct {
		name     string
		desired  State
		observed Snapshot
		want     []string
	}{
		{
			name:     "empty to empty",
			observed: newSnapshot(),
		},
		{
			name:     "new network",
			desired:  State{Networks: []Network{web()}},
			observed: newSnapshot(),
			want: []string{
				"host: rules " + hostRulesDigest(uplinkNet, 4789, false) + " (new, 0 elements)",
				"netns add acme",
				"acme: link add br4097 type bridge address 02:7e:ff:00:10:01 mtu 1450 up",
				"acme: link add vx4097 type vxlan id 4097 dstport 4789 local 198.51.100.10 nolearning proxy mtu 1450 master br4097 up",
			},
		},
		{
			name:     "endpoint on an existing network",
			desired:  oneEndpoint,
			observed: des(State{Networks: []Network{web()}}),
			want: []string{
				"acme: link add " + BridgeVeth("ep1") + " type veth peer " + ContainerVeth("ep1") + " address 02:7e:0a:01:00:05 mtu 1450 master br4097 up",
				"acme: guard " + BridgeVeth("ep1") + " mac 02:7e:0a:01:00:05 ip 10.1.0.5",
			},
		},
		{
			name:     "remote endpoint: fdb, flood entry, neighbour",
			desired:  withRemote,
			observed: des(State{Networks: []Network{web()}}),
			want: []string{
				"acme: fdb append 00:00:00:00:00:00 dev vx4097 dst 198.51.100.11",
				"acme: fdb append 02:7e:0a:01:00:07 dev vx4097 dst 198.51.100.11",
				"acme: neigh replace 10.1.0.7 lladdr 02:7e:0a:01:00:07 dev vx4097 nud permanent",
			},
		},
		{
			name:     "remote endpoint withdrawn, host still has the network",
			desired:  State{Networks: []Network{web(vtep1)}},
			observed: des(withRemote),
			want: []string{
				"acme: neigh del 10.1.0.7 dev vx4097",
				"acme: fdb del 02:7e:0a:01:00:07 dev vx4097 dst 198.51.100.11",
			},
		},
		{
			name: "remote endpoint moved to another host",
			desired: State{Networks: []Network{web(vtep1, vtep2)},
				Remotes: []Remote{{VNI: 4097, MAC: mac("02:7e:0a:01:00:07"), IPs: ips("10.1.0.7"), VTEP: vtep2}}},
			observed: des(State{Networks: []Network{web(vtep1, vtep2)},
				Remotes: []Remote{{VNI: 4097, MAC: mac("02:7e:0a:01:00:07"), IPs: ips("10.1.0.7"), VTEP: vtep1}}}),
			want: []string{
				"acme: fdb del 02:7e:0a:01:00:07 dev vx4097 dst 198.51.100.11",
				"acme: fdb append 02:7e:0a:01:00:07 dev vx4097 dst 198.51.100.12",
			},
		},
		{
			name:     "vxlan with the wrong vni is re-created; wrong mtu is fixed in place",
			desired:  State{Networks: []Network{{Tenant: "acme", Name: "web", VNI: 4097, MTU: 1400}}},
			observed: withLink(des(State{Networks: []Network{web()}}), "acme", func(l *Link) { l.VNI = 9 }),
			want: []string{
				"acme: link del vx4097",
				"acme: link set br4097 mtu 1400 address 02:7e:ff:00:10:01 up",
				"acme: link add vx4097 type vxlan id 4097 dstport 4789 local 198.51.100.10 nolearning proxy mtu 1400 master br4097 up",
			},
		},
		{
			name:     "last network of a tenant gone: the namespace with all in it",
			desired:  State{},
			observed: des(oneEndpoint),
			want:     []string{"netns del acme", "host: rules del"},
		},
		{
			name:    "a guard that reads back wrong is made anew; a port made anew gets its guard anew",
			desired: oneEndpoint,
			observed: func() Snapshot {
				s := des(oneEndpoint)
				g := s.Tenants["acme"].Guards[BridgeVeth("ep1")]
				g.MAC = "unreadable"
				s.Tenants["acme"].Guards[g.Port] = g
				return s
			}(),
			want: []string{"acme: guard " + BridgeVeth("ep1") + " mac 02:7e:0a:01:00:05 ip 10.1.0.5"},
		},
		{
			name:    "port gone, then its guard (never a port without one), and an old layout's table",
			desired: State{Networks: []Network{web()}},
			observed: func() Snapshot {
				s := des(oneEndpoint)
				s.Tenants["acme"].Legacy = []string{"bridge tenet"}
				return s
			}(),
			want: []string{"acme: nft delete table bridge tenet", "acme: link del " + BridgeVeth("ep1"),
				"acme: guard " + BridgeVeth("ep1") + " del"},
		},
		{
			name:     "first egress network: gateway, uplink with its elements, host rules with the infrastructure",
			desired:  withEgress(oneEndpoint, Infra{Deny: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}),
			observed: des(oneEndpoint),
			want: []string{
				"host: rules " + hostRulesDigest(uplinkNet, 4789, true) + " (new, 3 elements)",
				"acme: link set br4097 mtu 1450 addr 10.1.0.1/24 address 02:7e:ff:00:10:01 up",
				"acme: uplink 1 via " + hostUplinkName("acme") + " rules " + tenantRulesDigest() + " (new, 2 elements)",
			},
		},
		{
			name: "second network of an egress tenant: two elements, nothing rewritten",
			desired: func() State {
				s := withEgress(oneEndpoint, Infra{})
				s.Networks = append(s.Networks, Network{Tenant: "acme", Name: "db", VNI: 4099, Gateway: netip.MustParsePrefix("10.2.0.1/24"), Egress: true})
				return s
			}(),
			observed: des(withEgress(oneEndpoint, Infra{})),
			want: []string{
				"acme: link add br4099 type bridge address 02:7e:ff:00:10:03 mtu 1450 addr 10.2.0.1/24 up",
				"acme: link add vx4099 type vxlan id 4099 dstport 4789 local 198.51.100.10 nolearning proxy mtu 1450 master br4099 up",
				"acme: nft add element pairs { br4099 . br4099 }",
				"acme: nft add element pairs { br4099 . up0 }",
			},
		},
		{
			name:     "a member joins and one leaves: elements of the host's sets",
			desired:  withEgress(oneEndpoint, Infra{Deny: []netip.Prefix{netip.MustParsePrefix("203.0.113.7/32"), netip.MustParsePrefix("198.51.100.0/24")}}),
			observed: des(withEgress(oneEndpoint, Infra{Deny: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.9/32")}})),
			want: []string{
				"host: nft delete element deny4 { 203.0.113.9-203.0.113.9 }",
				"host: nft add element deny4 { 203.0.113.7-203.0.113.7 }",
			},
		},
		{
			name:     "last egress gone: uplink and the host's egress rules removed",
			desired:  oneEndpoint,
			observed: des(withEgress(oneEndpoint, Infra{})),
			want: []string{"host: link del " + hostUplinkName("acme"), "acme: uplink del",
				"acme: link set br4097 mtu 1450 address 02:7e:ff:00:10:01 up",
				"host: rules " + hostRulesDigest(uplinkNet, 4789, false) + " (new, 0 elements)"},
		},
		{
			name:    "stray host links: an unmoved vxlan and an orphan container end",
			desired: oneEndpoint,
			observed: func() Snapshot {
				s := des(oneEndpoint)
				s.HostLinks["vx4097"] = Link{Name: "vx4097", Kind: "vxlan"}
				s.HostLinks[ContainerVeth("ep1")] = Link{Name: ContainerVeth("ep1"), Kind: "veth"}
				s.HostLinks[ContainerVeth("gone")] = Link{Name: ContainerVeth("gone"), Kind: "veth"}
				return s
			}(),
			want: []string{"host: link del " + ContainerVeth("gone"), "host: link del vx4097"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.desired.Validate(); err != nil {
				t.Fatal(err)
			}
			got := planStrings(Plan(des(tt.desired), tt.observed))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Plan (-want +got):\n%s", diff)
			}
		})
	}
}

// withEgress gives every network of s a gateway and egress, and s infra.
func withEgress(s State, infra Infra) State {
	out := s
	out.Networks = nil
	for i, n := range s.Networks {
		n.Gateway = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(1 + i), 0, 1}), 24)
		n.Egress = true
		out.Networks = append(out.Networks, n)
	}
	out.Infra = infra
	return out
}

func withLink(s Snapshot, tenant string, edit func(*Link)) Snapshot {
	for name, l := range s.Tenants[tenant].Links {
		if l.Kind == "vxlan" {
			edit(&l)
			s.Tenants[tenant].Links[name] = l
		}
	}
	return s
}

// clone deep-copies a snapshot.
func clone(s Snapshot) Snapshot {
	out := newSnapshot()
	out.HostRules, out.hostAll, out.HostFilter = s.HostRules, s.hostAll, s.HostFilter
	maps.Copy(out.HostLinks, s.HostLinks)
	maps.Copy(out.HostElems, s.HostElems)
	maps.Copy(out.UplinksUsed, s.UplinksUsed)
	maps.Copy(out.Reserved, s.Reserved)
	maps.Copy(out.HostUplinks, s.HostUplinks)
	if s.Crypt != nil {
		c := &CryptObjects{Device: s.Crypt.Device, Peers: maps.Clone(s.Crypt.Peers)}
		out.Crypt = c
	}
	for tn, o := range s.Tenants {
		c := newTenantObjects()
		maps.Copy(c.Links, o.Links)
		maps.Copy(c.FDB, o.FDB)
		maps.Copy(c.Neigh, o.Neigh)
		maps.Copy(c.Elems, o.Elems)
		maps.Copy(c.Guards, o.Guards)
		c.Legacy = slices.Clone(o.Legacy)
		if o.Uplink != nil {
			u := *o.Uplink
			c.Uplink = &u
		}
		out.Tenants[tn] = c
	}
	return out
}

// filterHost says simulate's host has iptables (as the desired host
// does in the tests that set Host.Filter).
var filterHost bool

// simulate applies ops to a copy of s the way the kernel would, failing on
// an op the kernel would refuse (a link added twice, an entry on a missing
// device, a namespace that is not there, an element of a missing set).
func simulate(t *testing.T, s Snapshot, ops []Op) Snapshot {
	t.Helper()
	out := clone(s)
	for _, op := range ops {
		o := out.Tenants[op.Tenant]
		switch op.Kind {
		case OpNetnsAdd:
			if o != nil {
				t.Fatalf("%v: namespace exists", op)
			}
			out.Tenants[op.Tenant] = newTenantObjects()
			continue
		case OpNetnsDel:
			delete(out.Tenants, op.Tenant)
			continue
		case OpHostDel:
			delete(out.HostLinks, op.Link.Name)
			continue
		case OpPortBind:
			if out.Reserved[op.Res] {
				t.Fatalf("%v: reserved already", op)
			}
			out.Reserved[op.Res] = true
			continue
		case OpPortFree:
			delete(out.Reserved, op.Res)
			continue
		case OpHostFilter:
			out.HostFilter = op.Rules
			continue
		case OpHostRules:
			out.HostRules = op.Rules
			if op.Rules == "" {
				out.HostFilter = ""
			} else if out.HostFilter == "" && filterHost {
				out.HostFilter = filterDigest()
			}
			out.HostElems = map[Elem]bool{}
			for _, e := range op.elems {
				out.HostElems[e] = true
			}
			continue
		case OpElemAdd, OpElemDel:
			if op.Tenant == "" {
				if out.HostRules == "" {
					t.Fatalf("%v: no host rules", op)
				}
				if op.Kind == OpElemAdd {
					out.HostElems[op.Elem] = true
				} else {
					delete(out.HostElems, op.Elem)
				}
				continue
			}
		case OpCryptSet:
			if out.Crypt == nil {
				out.Crypt = &CryptObjects{Peers: map[PublicKey]WGPeer{}}
			}
			out.Crypt.Device = op.Device
			continue
		case OpPeerSet, OpPeerDel:
			if out.Crypt == nil || out.Crypt.Device == (WGDevice{}) {
				t.Fatalf("%v: no wireguard device", op)
			}
			if op.Kind == OpPeerSet {
				for k, p := range out.Crypt.Peers {
					if p.Allowed == op.Peer.Allowed && k != op.Peer.Key {
						delete(out.Crypt.Peers, k) // the kernel moves allowed IPs
					}
				}
				out.Crypt.Peers[op.Peer.Key] = op.Peer
			} else {
				delete(out.Crypt.Peers, op.Peer.Key)
			}
			continue
		case OpCryptDel:
			out.Crypt = nil
			for _, o := range out.Tenants { // the kernel takes these down with it
				for name, l := range o.Links {
					if l.Encrypted {
						delete(o.Links, name)
					}
				}
			}
			continue
		}
		if o == nil {
			t.Fatalf("%v: no namespace", op)
		}
		switch op.Kind {
		case OpLinkAdd:
			if _, ok := o.Links[op.Link.Name]; ok {
				t.Fatalf("%v: link exists", op)
			}
			if op.Link.Master != "" {
				if _, ok := o.Links[op.Link.Master]; !ok {
					t.Fatalf("%v: no master", op)
				}
			}
			if op.Link.Encrypted && (out.Crypt == nil || out.Crypt.Device == (WGDevice{})) {
				t.Fatalf("%v: no crypt namespace with its device to make it in", op)
			}
			o.Links[op.Link.Name] = op.Link
		case OpLinkSet:
			l, ok := o.Links[op.Link.Name]
			if !ok {
				t.Fatalf("%v: no link", op)
			}
			l.MTU, l.Master, l.Up, l.Addr, l.MAC = op.Link.MTU, op.Link.Master, op.Link.Up, op.Link.Addr, op.Link.MAC
			o.Links[op.Link.Name] = l
		case OpLinkDel:
			delete(o.Links, op.Link.Name)
			for e := range o.FDB {
				if e.Dev == op.Link.Name {
					delete(o.FDB, e)
				}
			}
			for e := range o.Neigh {
				if e.Dev == op.Link.Name {
					delete(o.Neigh, e)
				}
			}
		case OpFDBAdd, OpNeighSet:
			dev := op.FDB.Dev + op.Neigh.Dev
			if _, ok := o.Links[dev]; !ok {
				t.Fatalf("%v: no device", op)
			}
			if op.Kind == OpFDBAdd {
				o.FDB[op.FDB] = true
			} else {
				for e := range o.Neigh {
					if e.Dev == op.Neigh.Dev && e.IP == op.Neigh.IP {
						delete(o.Neigh, e)
					}
				}
				o.Neigh[op.Neigh] = true
			}
		case OpFDBDel:
			delete(o.FDB, op.FDB)
		case OpNeighDel:
			delete(o.Neigh, op.Neigh)
		case OpGuardSet:
			if _, ok := o.Links[op.Guard.Port]; !ok {
				t.Fatalf("%v: no port", op)
			}
			o.Guards[op.Guard.Port] = op.Guard
		case OpGuardDel:
			delete(o.Guards, op.Guard.Port)
		case OpLegacyDel:
			o.Legacy = slices.DeleteFunc(o.Legacy, func(l string) bool { return l == op.Rules })
		case OpElemAdd, OpElemDel:
			if o.Uplink == nil || o.Uplink.Rules == "" {
				t.Fatalf("%v: no rules", op)
			}
			if op.Kind == OpElemAdd {
				o.Elems[op.Elem] = true
			} else {
				delete(o.Elems, op.Elem)
			}
		case OpUplinkSet:
			if !op.Rebuild && (o.Uplink == nil || o.Uplink.Rules != op.Uplink.Rules) {
				t.Fatalf("%v: rules not there to keep", op)
			}
			if o.Uplink != nil {
				delete(out.UplinksUsed, o.Uplink.Index)
			}
			u := *op.Uplink
			u.elems = nil
			o.Uplink = &u
			if op.Rebuild {
				o.Elems = map[Elem]bool{}
				for _, e := range op.Uplink.elems {
					o.Elems[e] = true
				}
			}
			out.UplinksUsed[u.Index] = true
			out.HostUplinks[u.HostLink] = u.Index
			out.HostLinks[u.HostLink] = Link{Name: u.HostLink, Kind: "veth", MTU: UplinkMTU, Up: true}
		case OpUplinkDel:
			if o.Uplink != nil {
				delete(out.HostLinks, o.Uplink.HostLink)
				delete(out.UplinksUsed, o.Uplink.Index)
				delete(out.HostUplinks, o.Uplink.HostLink)
			}
			o.Uplink = nil
			o.Elems = map[Elem]bool{}
		}
	}
	return out
}

// normalize drops what Observe cannot see, so simulated and desired
// snapshots compare like kernel ones.
func normalize(s Snapshot) string { return s.String() }

// TestPlanConvergesFromAnyState replays a set of states in shuffled orders:
// from whatever the kernel holds, one Plan reaches the desired state, and a
// second Plan is empty.
func TestPlanConvergesFromAnyState(t *testing.T) {
	states := []State{
		{},
		{Networks: []Network{web()}},
		{Networks: []Network{web(vtep1)}, Endpoints: []Endpoint{{ID: "a", VNI: 4097, IPs: ips("10.1.0.1")}}},
		{Networks: []Network{web(vtep1, vtep2), {Tenant: "acme", Name: "db", VNI: 4099, MTU: 1400}},
			Endpoints: []Endpoint{{ID: "a", VNI: 4097, IPs: ips("10.1.0.1")}, {ID: "b", VNI: 4099, IPs: ips("10.2.0.1", "fd00::1")}},
			Remotes: []Remote{{VNI: 4097, MAC: mac("02:7e:0a:01:00:02"), IPs: ips("10.1.0.2"), VTEP: vtep1},
				{VNI: 4097, MAC: mac("02:7e:0a:01:00:03"), IPs: ips("10.1.0.3", "fd00::3"), VTEP: vtep2}}},
		{Networks: []Network{{Tenant: "globex", Name: "web", VNI: 5000, Peers: []netip.Addr{vtep2}}},
			Endpoints: []Endpoint{{ID: "g", VNI: 5000, IPs: ips("10.1.0.1")}},
			Remotes:   []Remote{{VNI: 5000, MAC: mac("02:7e:0a:01:00:02"), IPs: ips("10.1.0.2"), VTEP: vtep2}}},
		{Networks: []Network{web(vtep2)},
			Remotes: []Remote{{VNI: 4097, MAC: mac("02:7e:0a:01:00:02"), IPs: ips("10.1.0.2"), VTEP: vtep2}}},
		{Networks: []Network{
			{Tenant: "acme", Name: "web", VNI: 4097, Gateway: netip.MustParsePrefix("10.1.0.1/24"), Egress: true},
			{Tenant: "acme", Name: "db", VNI: 4099},
			{Tenant: "globex", Name: "web", VNI: 5000, Gateway: netip.MustParsePrefix("10.1.0.1/24"), Egress: true}},
			Endpoints: []Endpoint{{ID: "a", VNI: 4097, IPs: ips("10.1.0.5")}, {ID: "g", VNI: 5000, IPs: ips("10.1.0.5")}}},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		cur := newSnapshot()
		for _, i := range rng.Perm(len(states)) {
			want, ok := Desire(states[i], host0, cur)
			if !ok {
				t.Fatal("uplink net full")
			}
			ops := Plan(want, cur)
			cur = simulate(t, cur, ops)
			if diff := cmp.Diff(normalize(want), normalize(cur)); diff != "" {
				t.Fatalf("round %d, state %d: not converged (-want +got):\n%s", round, i, diff)
			}
			if again := Plan(want, cur); len(again) != 0 {
				t.Fatalf("round %d, state %d: second plan not empty: %v", round, i, planStrings(again))
			}
		}
	}
}

func TestValidateRejectsBadInputNamingIt(t *testing.T) {
	good := Network{Tenant: "acme", Name: "web", VNI: 4097}
	tests := []struct {
		name  string
		state State
		want  string
	}{
		{"tenant with a slash", State{Networks: []Network{{Tenant: "ac/me", Name: "web", VNI: 1}}}, `tenant "ac/me"`},
		{"vni zero", State{Networks: []Network{{Tenant: "acme", Name: "web"}}}, "vni 0: must be 1-16777215"},
		{"vni too large", State{Networks: []Network{{Tenant: "acme", Name: "web", VNI: 1 << 24}}}, "vni 16777216"},
		{"mtu too small", State{Networks: []Network{{Tenant: "acme", Name: "web", VNI: 1, MTU: 500}}}, "mtu 500: must be 1280-9000"},
		{"vni twice", State{Networks: []Network{good, {Tenant: "globex", Name: "x", VNI: 4097}}}, "vni 4097 already used by network acme/web"},
		{"endpoint on unknown network", State{Networks: []Network{good}, Endpoints: []Endpoint{{ID: "e", VNI: 7}}}, "vni 7: no such network"},
		{"multicast mac", State{Networks: []Network{good}, Endpoints: []Endpoint{{ID: "e", VNI: 4097, MAC: mac("01:00:5e:00:00:01")}}}, "must be unicast"},
		{"same ip twice", State{Networks: []Network{good}, Endpoints: []Endpoint{{ID: "e", VNI: 4097, IPs: ips("10.1.0.1")}},
			Remotes: []Remote{{VNI: 4097, MAC: mac("02:00:00:00:00:09"), IPs: ips("10.1.0.1"), VTEP: vtep1}}}, "ip 10.1.0.1 already used by endpoint"},
		{"remote without vtep", State{Networks: []Network{good}, Remotes: []Remote{{VNI: 4097, MAC: mac("02:00:00:00:00:09")}}}, "vtep invalid IP"},
		{"the bridge's mac", State{Networks: []Network{good}, Endpoints: []Endpoint{{ID: "e", VNI: 4097, IPs: ips("fd00::ff00:1001")}}},
			"mac 02:7e:ff:00:10:01: is the bridge's of vni 4097"},
		{"endpoint id twice", State{Networks: []Network{good}, Endpoints: []Endpoint{{ID: "e", VNI: 4097, IPs: ips("10.1.0.1")}, {ID: "e", VNI: 4097, IPs: ips("10.1.0.2")}}}, "listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.state.Validate()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an ErrInvalid containing %q", err, tt.want)
			}
		})
	}
}

func TestDeriveMACIsStableAndLocal(t *testing.T) {
	tests := []struct {
		ips  []netip.Addr
		id   string
		want string
	}{
		{ips("10.1.0.5"), "x", "02:7e:0a:01:00:05"},
		{ips("fd00::1:2", "10.9.8.7"), "x", "02:7e:0a:09:08:07"},
		{ips("fd00::a:b0c"), "x", "02:7e:00:0a:0b:0c"},
	}
	for _, tt := range tests {
		if got := DeriveMAC(tt.ips, tt.id).String(); got != tt.want {
			t.Errorf("DeriveMAC(%v) = %s, want %s", tt.ips, got, tt.want)
		}
	}
	a, b := DeriveMAC(nil, "ep-a"), DeriveMAC(nil, "ep-b")
	if a.String() == b.String() || a.String() != DeriveMAC(nil, "ep-a").String() {
		t.Errorf("id-derived MACs not stable or not distinct: %s %s", a, b)
	}
	if a[0]&1 != 0 || a[0]&2 == 0 {
		t.Errorf("%s is not locally administered unicast", a)
	}
}

func TestNamesFitIFNAMSIZ(t *testing.T) {
	for _, n := range []string{bridgeName(MaxVNI), vxlanName(MaxVNI), BridgeVeth("x"), ContainerVeth("y")} {
		if len(n) > 15 {
			t.Errorf("%q is %d bytes, over 15", n, len(n))
		}
	}
	if BridgeVeth("e1") == BridgeVeth("e2") || BridgeVeth("e1") != BridgeVeth("e1") {
		t.Error("veth names not stable per endpoint or not distinct")
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "VTEP") {
		t.Errorf("no VTEP: %v", err)
	}
	c.VTEP = vtep0
	c.NetnsPrefix = "a/b"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "NetnsPrefix") {
		t.Errorf("bad prefix: %v", err)
	}
	c.NetnsPrefix, c.Port = "tenet-", 0
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "Port") {
		t.Errorf("port 0: %v", err)
	}
}

// TestANetworkHoldsWhatItsBridgeCan: a Linux bridge takes 1,023 ports, one
// the VXLAN device's; the 1,023rd endpoint of a network on one host is
// refused up front, naming it and the limit, by full and scoped validation
// alike (the kernel's own answer is "exchange full"); a scoped refusal names
// the endpoint asked for, wherever it sorts.
func TestANetworkHoldsWhatItsBridgeCan(t *testing.T) {
	s := State{Networks: []Network{web(), {Tenant: "acme", Name: "db", VNI: 4098}}}
	for i := range MaxEndpointsPerNetwork {
		s.Endpoints = append(s.Endpoints, Endpoint{ID: fmt.Sprintf("e%04d", i), VNI: 4097,
			IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 1, byte(1 + i>>8), byte(i)})}})
	}
	s.Endpoints = append(s.Endpoints, Endpoint{ID: "other", VNI: 4098, IPs: ips("10.2.0.2")})
	if err := s.Validate(); err != nil {
		t.Fatalf("%d endpoints in one network: %v", MaxEndpointsPerNetwork, err)
	}
	// One more, sorting first, as the core hands endpoints over.
	s.Endpoints = append([]Endpoint{{ID: "a-onetoomany", VNI: 4097, IPs: ips("10.1.9.9")}}, s.Endpoints...)
	want := `network acme/web would have 1023 endpoints on this host: its bridge holds at most 1022`
	if err := s.Validate(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
		t.Errorf("Validate() = %v, want %q", err, want)
	}
	if err := s.ValidateScope(Scope{Endpoints: []string{"a-onetoomany"}}); !errors.Is(err, ErrInvalid) ||
		!strings.Contains(err.Error(), `endpoint "a-onetoomany": `+want) {
		t.Errorf("ValidateScope(the 1,023rd) = %v, want it named and %q", err, want)
	}
	if err := s.ValidateScope(Scope{Endpoints: []string{"other"}}); err != nil {
		t.Errorf("ValidateScope(an endpoint of another network) = %v", err)
	}
}
