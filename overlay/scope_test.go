package overlay

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// randomState draws a state from a fixed pool of networks, endpoints and
// remotes (a VNI always belongs to the same tenant, an ID to the same
// network), with random peers, egress, remote VTEPs and infrastructure.
func randomState(rng *rand.Rand) State {
	var s State
	gw := func(p string) netip.Prefix { return netip.MustParsePrefix(p) }
	pick := func(vs ...netip.Addr) []netip.Addr {
		var out []netip.Addr
		for _, v := range vs {
			if rng.IntN(2) == 0 {
				out = append(out, v)
			}
		}
		return out
	}
	pool := []Network{
		{Tenant: "acme", Name: "web", VNI: 4097, Gateway: gw("10.1.0.1/24")},
		{Tenant: "acme", Name: "db", VNI: 4099, Gateway: gw("10.2.0.1/24"), MTU: 1400},
		{Tenant: "globex", Name: "web", VNI: 5000, Gateway: gw("10.1.0.1/24")},
		{Tenant: "initech", Name: "x", VNI: 6000},
	}
	have, egress := map[uint32]bool{}, map[uint32]bool{}
	for _, n := range pool {
		if rng.IntN(4) == 0 {
			continue
		}
		n.Peers = pick(vtep1, vtep2)
		n.Egress = n.Gateway.IsValid() && rng.IntN(2) == 0
		n.Encrypted = rng.IntN(3) == 0
		s.Networks = append(s.Networks, n)
		have[n.VNI], egress[n.VNI] = true, n.Egress
	}
	// Published ports, on networks with egress: a and g have the same
	// address in two tenants.
	ports := map[string][][]Port{
		"a": {{{Proto: TCP, HostPort: 8080, Port: 80}, {Proto: UDP, HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 5353, Port: 53}},
			{{Proto: TCP, HostPort: 8080, Port: 8080}}},
		"c": {{{Proto: TCP, HostIP: vtep0, HostPort: 8082, Port: 80}, {Proto: TCP, HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8082, Port: 80}}},
		"g": {{{Proto: TCP, HostPort: 8081, Port: 80}}, {{Proto: TCP, HostIP: vtep0, HostPort: 9000, Port: 80}}},
	}
	for _, e := range []Endpoint{
		{ID: "a", VNI: 4097, IPs: ips("10.1.0.5")},
		{ID: "c", VNI: 4097, MAC: mac("02:00:00:00:00:0c"), IPs: ips("10.1.0.6")},
		{ID: "b", VNI: 4099, IPs: ips("10.2.0.1", "fd00::1")},
		{ID: "g", VNI: 5000, IPs: ips("10.1.0.5")},
		{ID: "i", VNI: 6000},
	} {
		if have[e.VNI] && rng.IntN(3) > 0 {
			if choices := ports[e.ID]; egress[e.VNI] && len(choices) > 0 && rng.IntN(3) > 0 {
				e.Ports = choices[rng.IntN(len(choices))]
			}
			s.Endpoints = append(s.Endpoints, e)
		}
	}
	for _, r := range []Remote{
		{VNI: 4097, MAC: mac("02:7e:0a:01:00:02"), IPs: ips("10.1.0.2")},
		{VNI: 4097, MAC: mac("02:7e:0a:01:00:03"), IPs: ips("10.1.0.3", "fd00::3")},
		{VNI: 4097, MAC: mac("02:00:00:00:00:44"), IPs: ips("10.1.0.44")},
		{VNI: 4099, MAC: mac("02:7e:0a:02:00:09"), IPs: ips("10.2.0.9")},
		{VNI: 5000, MAC: mac("02:7e:0a:01:00:02"), IPs: ips("10.1.0.2")},
	} {
		if have[r.VNI] && rng.IntN(3) > 0 {
			r.VTEP = []netip.Addr{vtep1, vtep2}[rng.IntN(2)]
			if rng.IntN(4) == 0 { // the same MAC at another address
				b := r.IPs[0].As4()
				r.IPs = []netip.Addr{netip.AddrFrom4([4]byte{b[0], b[1], b[2], b[3] + 100})}
			}
			s.Remotes = append(s.Remotes, r)
		}
	}
	if rng.IntN(2) == 0 {
		s.Infra.Deny = []netip.Prefix{gw("198.51.100.0/24"), gw("198.51.100.12/32")}
	} else {
		s.Infra.Deny = []netip.Prefix{gw("198.51.100.11/32"), gw("203.0.113.0/25"), gw("203.0.113.128/25")}
	}
	if rng.IntN(2) == 0 {
		s.Infra.Allow = []netip.Prefix{gw("198.51.100.11/32")}
	}
	if rng.IntN(2) == 0 {
		s.Infra.Ports = []L4Port{{TCP, 7946}, {UDP, 7946}}
	}
	// Two keys for this host, and peers that come, go and change keys.
	s.Crypt.Key = PrivateKey{0, byte(1 + rng.IntN(2))}
	for i, v := range []netip.Addr{vtep1, vtep2} {
		if rng.IntN(3) > 0 {
			s.Crypt.Peers = append(s.Crypt.Peers, CryptPeer{VTEP: v, Port: 51820, Key: PublicKey{byte(10*i + 1 + rng.IntN(2))}})
		}
	}
	return s
}

// diffScope names everything that differs between a and b, as a caller
// that knows what changed would: a network with a new MTU brings its
// endpoints (their ports carry it), and a remote at a VTEP new to its
// network brings the network (the flood list is the network's).
func diffScope(a, b State) Scope {
	var sc Scope
	nets := func(s State) map[uint32]Network {
		m := map[uint32]Network{}
		for _, n := range s.Networks {
			m[n.VNI] = n
		}
		return m
	}
	na, nb := nets(a), nets(b)
	// The flood list is the network's: its peers and its remotes' VTEPs.
	flood := func(s State, vni uint32) []netip.Addr {
		var out []netip.Addr
		for _, n := range s.Networks {
			if n.VNI == vni {
				out = append(out, n.Peers...)
			}
		}
		for _, r := range s.Remotes {
			if r.VNI == vni {
				out = append(out, r.VTEP)
			}
		}
		slices.SortFunc(out, netip.Addr.Compare)
		return slices.Compact(out)
	}
	changed := map[uint32]bool{}
	for _, vni := range []uint32{4097, 4099, 5000, 6000} {
		if !reflect.DeepEqual(na[vni], nb[vni]) || !slices.Equal(flood(a, vni), flood(b, vni)) {
			sc.Networks = append(sc.Networks, vni)
			changed[vni] = true
		}
	}
	eps := func(s State) map[string]Endpoint {
		m := map[string]Endpoint{}
		for _, e := range s.Endpoints {
			m[e.ID] = e
		}
		return m
	}
	ea, eb := eps(a), eps(b)
	for _, id := range []string{"a", "b", "c", "g", "i"} {
		if !reflect.DeepEqual(ea[id], eb[id]) || changed[eb[id].VNI] {
			sc.Endpoints = append(sc.Endpoints, id)
		}
	}
	rems := func(s State) map[RemoteKey]Remote {
		m := map[RemoteKey]Remote{}
		for _, r := range s.Remotes {
			m[r.Key()] = r
		}
		return m
	}
	ra, rb := rems(a), rems(b)
	keys := map[RemoteKey]bool{}
	for k := range ra {
		keys[k] = true
	}
	for k := range rb {
		keys[k] = true
	}
	for k := range keys {
		if !reflect.DeepEqual(ra[k], rb[k]) {
			sc.Remotes = append(sc.Remotes, k)
		}
	}
	slices.SortFunc(sc.Remotes, func(x, y RemoteKey) int { return strings.Compare(fmt.Sprint(x), fmt.Sprint(y)) })
	sc.Infra = !reflect.DeepEqual(a.Infra, b.Infra)
	sc.Crypt = !reflect.DeepEqual(a.Crypt, b.Crypt)
	return sc
}

// tenantsOf lists the tenants a scope's objects belong to in a or b.
func tenantsOf(sc Scope, a, b State) []string {
	seen := map[string]bool{}
	for _, s := range []State{a, b} {
		nets := netIndex(s)
		for _, vni := range sc.Networks {
			if n := nets[vni]; n != nil {
				seen[n.Tenant] = true
			}
		}
		for _, e := range s.Endpoints {
			if slices.Contains(sc.Endpoints, e.ID) {
				seen[nets[e.VNI].Tenant] = true
			}
		}
		for _, r := range s.Remotes {
			if slices.Contains(sc.Remotes, r.Key()) {
				seen[nets[r.VNI].Tenant] = true
			}
		}
	}
	return slices.Sorted(func(yield func(string) bool) {
		for t := range seen {
			if !yield(t) {
				return
			}
		}
	})
}

// locate finds in a snapshot the tenants of what sc names that s lacks,
// as Datapath.viewLocked does in the kernel.
func locate(snap Snapshot, s State, sc Scope) (map[uint32]string, map[string]string) {
	where := func(link string) string {
		for t, o := range snap.Tenants {
			if _, ok := o.Links[link]; ok {
				return t
			}
		}
		return ""
	}
	nets := netIndex(s)
	ln, le := map[uint32]string{}, map[string]string{}
	for _, vni := range append(slices.Clone(sc.Networks), remoteVNIs(sc.Remotes)...) {
		if nets[vni] == nil {
			if t := cmpOr(where(bridgeName(vni)), where(vxlanName(vni))); t != "" {
				ln[vni] = t
			}
		}
	}
	for _, id := range sc.Endpoints {
		if t := where(BridgeVeth(id)); t != "" {
			le[id] = t
		}
	}
	return ln, le
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// opInView reports whether op changes only an object of v.
func opInView(op Op, v *view, tags map[string]bool) bool {
	t := op.Tenant
	switch op.Kind {
	case OpNetnsAdd, OpNetnsDel:
		return v.hasNS(t)
	case OpHostDel:
		return v.hasHostLink(op.Link.Name, tags)
	case OpLinkAdd, OpLinkSet, OpLinkDel:
		return v.hasLink(t, op.Link.Name)
	case OpFDBAdd, OpFDBDel:
		return v.hasFDB(t, op.FDB)
	case OpNeighSet, OpNeighDel:
		return v.hasNeigh(t, op.Neigh)
	case OpGuardSet, OpGuardDel:
		return v.hasGuard(t, op.Guard.Port)
	case OpLegacyDel:
		return v.hasLegacy(t)
	case OpElemAdd, OpElemDel:
		if t == "" {
			return v.hasHostElem(op.Elem)
		}
		return v.hasElem(t, op.Elem)
	case OpPortBind, OpPortFree:
		return v.hasReserved()
	case OpHostFilter:
		return v.all
	case OpUplinkSet, OpUplinkDel:
		return v.hasUplink(t)
	case OpHostRules:
		return v.hasHostRules()
	case OpCryptSet, OpPeerSet, OpPeerDel, OpCryptDel:
		return v.hasCrypt()
	}
	return false
}

// converge programs s on an empty kernel.
func converge(t *testing.T, s State) Snapshot {
	t.Helper()
	want, ok := Desire(s, host0, newSnapshot())
	if !ok {
		t.Fatal("uplink net full")
	}
	return simulate(t, newSnapshot(), Plan(want, newSnapshot()))
}

// TestScopedReconcileConvergesTouchingOnlyItsScope goes from random state a
// (programmed) to random state b with one scoped reconcile naming what
// changed (the objects, or their whole tenants), and checks that: the
// scoped desire is the whole desire restricted to the view; every op is of
// an object in the view; and afterwards a full Plan has nothing left to do.
func TestScopedReconcileConvergesTouchingOnlyItsScope(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 400 {
		a, b := randomState(rng), randomState(rng)
		for _, s := range []State{a, b} {
			if err := s.Validate(); err != nil {
				t.Fatalf("round %d: pool state invalid: %v", round, err)
			}
		}
		cur := converge(t, a)
		sc := diffScope(a, b)
		if round%3 == 0 {
			sc = Scope{Tenants: tenantsOf(sc, a, b), Infra: sc.Infra, Crypt: sc.Crypt}
		}
		nets, err := b.validateScope(sc, nil)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		ln, le := locate(cur, b, sc)
		v := newView(b, nets, sc, ln, le)
		observed := restrict(cur, v)
		desired, ok := desire(b, nets, host0, v, observed)
		if !ok {
			t.Fatal("uplink net full")
		}
		full, _ := Desire(b, host0, cur)
		if diff := cmp.Diff(normalizeUplinks(restrict(full, v), cur), normalizeUplinks(desired, cur)); diff != "" {
			t.Fatalf("round %d, scope %+v: scoped desire is not the whole one restricted (-whole +scoped):\n%s", round, sc, diff)
		}
		tags := map[string]bool{}
		for tn, o := range cur.Tenants {
			if v.whole[tn] {
				for name := range o.Links {
					if tag, ok := strings.CutPrefix(name, "tv"); ok {
						tags[tag] = true
					}
				}
			}
		}
		ops := Plan(desired, observed)
		for _, op := range ops {
			if !opInView(op, v, tags) {
				t.Fatalf("round %d, scope %+v: op %q is outside the scope", round, sc, op)
			}
		}
		next := simulate(t, cur, ops)
		want, _ := Desire(b, host0, next)
		if rest := Plan(want, next); len(rest) != 0 {
			t.Fatalf("round %d, scope %+v:\nscoped ops %q\nleft for a full reconcile: %q\nfrom %+v\nto %+v",
				round, sc, planStrings(ops), planStrings(rest), a, b)
		}
	}
}

// normalizeUplinks zeroes the index of uplinks that cur lacks: a new one
// gets the lowest free index, which depends on how many are made at once.
func normalizeUplinks(s Snapshot, cur Snapshot) string {
	s = clone(s)
	for t, o := range s.Tenants {
		if o.Uplink != nil && (cur.Tenants[t] == nil || cur.Tenants[t].Uplink == nil) {
			o.Uplink.Index = 0
		}
	}
	return s.String()
}

// TestScopedReconcileOfAnEndpointIgnoresRemotes: with 10,000 remotes in
// the state, the scoped desire of one endpoint holds its port and guard
// only, and the plan from an observed kernel without it adds just those.
func TestScopedReconcileOfAnEndpointIgnoresRemotes(t *testing.T) {
	s := State{Networks: []Network{web(vtep1)}}
	for i := range 10000 {
		ip := netip.AddrFrom4([4]byte{10, 1, byte(1 + i>>8), byte(i)})
		s.Remotes = append(s.Remotes, Remote{VNI: 4097, MAC: DeriveMAC([]netip.Addr{ip}, ""), IPs: []netip.Addr{ip}, VTEP: vtep1})
	}
	s.Endpoints = []Endpoint{{ID: "new", VNI: 4097, IPs: ips("10.1.0.9")}}
	sc := Scope{Endpoints: []string{"new"}}
	nets, err := s.validateScope(sc, nil)
	if err != nil {
		t.Fatal(err)
	}
	v := newView(s, nets, sc, nil, nil)
	observed := newSnapshot()
	observed.Tenants["acme"] = newTenantObjects()
	// The host's rules (no egress: only VXLAN's notrack) exist already.
	observed.HostRules = hostRulesDigest(host0.UplinkNet, host0.Port, false)
	desired, _ := desire(s, nets, host0, v, observed)
	got := planStrings(Plan(desired, observed))
	want := []string{
		"acme: link add " + BridgeVeth("new") + " type veth peer " + ContainerVeth("new") + " address 02:7e:0a:01:00:09 mtu 1450 master br4097 up",
		"acme: guard " + BridgeVeth("new") + " mac 02:7e:0a:01:00:09 ip 10.1.0.9",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("plan (-want +got):\n%s", diff)
	}
	// The scoped validation still sees every claim in the network.
	s.Endpoints[0].IPs = ips("10.1.1.7")
	if _, err := s.validateScope(sc, nil); err == nil || !strings.Contains(err.Error(), "already used by remote endpoint") {
		t.Errorf("an endpoint taking a remote's address: %v", err)
	}
}

// TestEndpointScopeAllocatesNothingPerRemote: the in-memory work of adding
// one endpoint (scoped validation, view, desire, plan) allocates as much
// with 10,000 remotes in its network as with none; it once formatted a
// name for every remote it compared with, 20 ms for 10,000.
func TestEndpointScopeAllocatesNothingPerRemote(t *testing.T) {
	allocs := func(n int) float64 {
		s := State{Networks: []Network{web(vtep1)}}
		for i := range n {
			ip := netip.AddrFrom4([4]byte{10, 1, byte(1 + i>>8), byte(i)})
			s.Remotes = append(s.Remotes, Remote{VNI: 4097, MAC: DeriveMAC([]netip.Addr{ip}, ""), IPs: []netip.Addr{ip}, VTEP: vtep1})
		}
		s.Endpoints = []Endpoint{{ID: "new", VNI: 4097, IPs: ips("10.1.0.9")}}
		sc := Scope{Endpoints: []string{"new"}}
		observed := newSnapshot()
		observed.Tenants["acme"] = newTenantObjects()
		return testing.AllocsPerRun(5, func() {
			nets, err := s.validateScope(sc, nil)
			if err != nil {
				t.Fatal(err)
			}
			desired, _ := desire(s, nets, host0, newView(s, nets, sc, nil, nil), observed)
			Plan(desired, observed)
		})
	}
	if none, many := allocs(0), allocs(10000); many > none+5 {
		t.Errorf("one endpoint's scope allocates %.0f times with 10,000 remotes, %.0f with none", many, none)
	}
}

// BenchmarkScopedDesire compares the in-memory part of adding one endpoint
// with 0 and 10,000 remotes in the state (validation, view, desire, plan).
func BenchmarkScopedDesire(b *testing.B) {
	for _, n := range []int{0, 10000} {
		b.Run(fmt.Sprintf("remotes=%d", n), func(b *testing.B) {
			s := State{Networks: []Network{web(vtep1)}}
			for i := range n {
				ip := netip.AddrFrom4([4]byte{10, 1, byte(1 + i>>8), byte(i)})
				s.Remotes = append(s.Remotes, Remote{VNI: 4097, MAC: DeriveMAC([]netip.Addr{ip}, ""), IPs: []netip.Addr{ip}, VTEP: vtep1})
			}
			s.Endpoints = []Endpoint{{ID: "new", VNI: 4097, IPs: ips("10.1.0.9")}}
			sc := Scope{Endpoints: []string{"new"}}
			observed := newSnapshot()
			observed.Tenants["acme"] = newTenantObjects()
			// The host's rules are there already, as on any host with a
			// tenant: the plan is the endpoint's veth pair and guard.
			nets, err := s.validateScope(sc, nil)
			if err != nil {
				b.Fatal(err)
			}
			want, _ := desire(s, nets, host0, newView(s, nets, sc, nil, nil), observed)
			observed.HostRules = want.HostRules
			for b.Loop() {
				nets, err := s.validateScope(sc, nil)
				if err != nil {
					b.Fatal(err)
				}
				v := newView(s, nets, sc, nil, nil)
				desired, _ := desire(s, nets, host0, v, observed)
				if ops := Plan(desired, observed); len(ops) != 2 {
					b.Fatalf("unexpected plan %q", ops)
				}
			}
		})
	}
}

// Two Docker-style endpoint IDs whose interface tags (48 bits of SHA-256)
// are the same, found by a birthday search: their veth names collide.
const (
	collidingA = "000000000000000000000000000000000000000000000000000000000130fb42"
	collidingB = "0000000000000000000000000000000000000000000000000000000001f31e92"
)

// TestScopedValidationRefusesCollidingInterfaceNames: an endpoint whose
// interface names are another endpoint's is refused, with and without the
// memo of tags, before and after the memo learnt the other one's, and the
// memo forgets endpoints that are gone.
func TestScopedValidationRefusesCollidingInterfaceNames(t *testing.T) {
	if BridgeVeth(collidingA) != BridgeVeth(collidingB) {
		t.Fatalf("the test's IDs do not collide: %s, %s", BridgeVeth(collidingA), BridgeVeth(collidingB))
	}
	s := State{Networks: []Network{web(vtep1)}, Endpoints: []Endpoint{
		{ID: collidingA, VNI: 4097, IPs: ips("10.1.0.7")},
		{ID: "other", VNI: 4097, IPs: ips("10.1.0.8")},
	}}
	var memo tagMemo
	for _, m := range []*tagMemo{nil, &memo} {
		if _, err := s.validateScope(Scope{Endpoints: []string{collidingA}}, m); err != nil {
			t.Fatalf("memo %v: the first endpoint alone: %v", m != nil, err)
		}
	}
	s.Endpoints = append(s.Endpoints, Endpoint{ID: collidingB, VNI: 4097, IPs: ips("10.1.0.9")})
	for _, m := range []*tagMemo{nil, &memo, &memo} {
		_, err := s.validateScope(Scope{Endpoints: []string{collidingB}}, m)
		if err == nil || !strings.Contains(err.Error(), "interface names collide") || !strings.Contains(err.Error(), collidingA) {
			t.Errorf("memo %v: the colliding endpoint: %v, want refused naming %s", m != nil, err, collidingA)
		}
	}
	// The memo forgets the gone: 200 endpoints come and go, and it holds
	// at most twice the current ones (and a few more).
	for round := range 10 {
		s.Endpoints = s.Endpoints[:0]
		for i := range 20 {
			s.Endpoints = append(s.Endpoints, Endpoint{ID: fmt.Sprintf("r%d-%d", round, i), VNI: 4097, IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 1, 0, byte(10 + i)})}})
		}
		if _, err := s.validateScope(Scope{Endpoints: []string{s.Endpoints[0].ID}}, &memo); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(memo.m); n > 2*20+64 {
		t.Errorf("the memo holds %d tags for 20 endpoints", n)
	}
	for i, h := range memo.of(s.Endpoints) {
		if h != hash48(s.Endpoints[i].ID) {
			t.Fatalf("memo's tag of %s = %x, want %x", s.Endpoints[i].ID, h, hash48(s.Endpoints[i].ID))
		}
	}
}
