package overlay

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func egressNet(tenant string, vni uint32) Network {
	return Network{Tenant: tenant, Name: "web", VNI: vni, Gateway: netip.MustParsePrefix("10.1.0.1/24"), Egress: true}
}

var (
	lo4     = netip.MustParseAddr("127.0.0.1")
	web8080 = Port{Proto: TCP, HostPort: 8080, Port: 80}
)

// TestPublishingAPortReservesItFirstThenAddsOneElementOnEachSide: the
// socket comes before any rule, then one element in the tenant's map and
// one in the host's; withdrawing removes exactly those.
func TestPublishingAPortReservesItFirstThenAddsOneElementOnEachSide(t *testing.T) {
	base := State{Networks: []Network{egressNet("acme", 4097)}, Endpoints: []Endpoint{{ID: "a", VNI: 4097, IPs: ips("10.1.0.5")}}}
	pub := base
	pub.Endpoints = []Endpoint{{ID: "a", VNI: 4097, IPs: ips("10.1.0.5"),
		Ports: []Port{web8080, {Proto: UDP, HostIP: lo4, HostPort: 5353, Port: 53}}}}
	cur := converge(t, base)
	want, _ := Desire(pub, host0, cur)
	got := planStrings(Plan(want, cur))
	up := "169.254.0.6" // uplink 1's tenant end
	wantOps := []string{
		"host: reserve tcp 0.0.0.0:8080",
		"host: reserve udp 127.0.0.1:5353",
		"acme: nft add element pub { tcp . 8080 : 10.1.0.5 . 80 }",
		"acme: nft add element pub { udp . 5353 : 10.1.0.5 . 53 }",
		"host: nft add element pubany { tcp . 8080 : " + up + " }",
		"host: nft add element pubip { udp . 127.0.0.1 . 5353 : " + up + " }",
	}
	if diff := cmp.Diff(wantOps, got); diff != "" {
		t.Errorf("publish (-want +got):\n%s", diff)
	}
	cur = simulate(t, cur, Plan(want, cur))
	back, _ := Desire(base, host0, cur)
	got = planStrings(Plan(back, cur))
	wantOps = []string{
		"acme: nft delete element pub { tcp . 8080 : 10.1.0.5 . 80 }",
		"acme: nft delete element pub { udp . 5353 : 10.1.0.5 . 53 }",
		"host: nft delete element pubany { tcp . 8080 : " + up + " }",
		"host: nft delete element pubip { udp . 127.0.0.1 . 5353 : " + up + " }",
		"host: release tcp 0.0.0.0:8080",
		"host: release udp 127.0.0.1:5353",
	}
	if diff := cmp.Diff(wantOps, got); diff != "" {
		t.Errorf("withdraw (-want +got):\n%s", diff)
	}
}

// TestTenantsWithTheSameAddressPublishToTheirOwnUplink: the same container
// address in two tenants; each host port leads to its own tenant's uplink.
func TestTenantsWithTheSameAddressPublishToTheirOwnUplink(t *testing.T) {
	s := State{Networks: []Network{egressNet("acme", 4097), egressNet("globex", 5000)},
		Endpoints: []Endpoint{
			{ID: "a", VNI: 4097, IPs: ips("10.1.0.5"), Ports: []Port{web8080}},
			{ID: "g", VNI: 5000, IPs: ips("10.1.0.5"), Ports: []Port{{Proto: TCP, HostPort: 8081, Port: 80}}},
		}}
	snap := converge(t, s)
	var lines []string
	for _, l := range strings.Split(snap.String(), "\n") {
		if strings.Contains(l, "pub") {
			lines = append(lines, l)
		}
	}
	want := []string{
		"host: element pubany { tcp . 8080 : 169.254.0.6 }",
		"host: element pubany { tcp . 8081 : 169.254.0.10 }",
		"tenant acme: element pub { tcp . 8080 : 10.1.0.5 . 80 }",
		"tenant globex: element pub { tcp . 8081 : 10.1.0.5 . 80 }",
	}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("port elements (-want +got):\n%s", diff)
	}
	if err := (State{Networks: s.Networks, Endpoints: []Endpoint{s.Endpoints[0],
		{ID: "g", VNI: 5000, IPs: ips("10.1.0.5"), Ports: []Port{web8080}}}}).Validate(); err == nil ||
		!strings.Contains(err.Error(), "host port 8080/tcp already published by endpoint \"a\"") {
		t.Errorf("the same host port in two tenants: %v", err)
	}
}

// TestRestartTakesReservationsBackWithoutTouchingRules: a kernel with the
// rules but a process without sockets (a restarted tenetd) binds again,
// softly, and changes nothing else.
func TestRestartTakesReservationsBackWithoutTouchingRules(t *testing.T) {
	s := State{Networks: []Network{egressNet("acme", 4097)},
		Endpoints: []Endpoint{{ID: "a", VNI: 4097, IPs: ips("10.1.0.5"), Ports: []Port{web8080}}}}
	cur := converge(t, s)
	cur.Reserved = map[Reservation]bool{}
	want, _ := Desire(s, host0, cur)
	if diff := cmp.Diff([]string{"host: reserve tcp 0.0.0.0:8080 (its rules exist)"}, planStrings(Plan(want, cur))); diff != "" {
		t.Errorf("after a restart (-want +got):\n%s", diff)
	}
}

func TestWithoutPortsDropsOnlyTheFailedPortsElements(t *testing.T) {
	s := State{Networks: []Network{egressNet("acme", 4097)},
		Endpoints: []Endpoint{{ID: "a", VNI: 4097, IPs: ips("10.1.0.5"), Ports: []Port{web8080, {Proto: TCP, HostPort: 9090, Port: 90}}}}}
	want, _ := Desire(s, host0, newSnapshot())
	ops := withoutPorts(Plan(want, newSnapshot()), map[L4Port]bool{{TCP, 8080}: true})
	for _, op := range ops {
		if strings.Contains(op.String(), "8080 :") {
			t.Errorf("op %q publishes the failed port", op)
		}
		var els []Elem
		switch op.Kind {
		case OpHostRules:
			els = op.elems
		case OpUplinkSet:
			els = op.Uplink.elems
		}
		for _, e := range els {
			if _, port, ok := elemPort(e); ok && port == 8080 {
				t.Errorf("%q makes a rule set with %v", op, e)
			}
		}
	}
	if !strings.Contains(strings.Join(planStrings(ops), "\n"), "reserve tcp 0.0.0.0:8080") {
		t.Error("the failed reservation itself was dropped")
	}
	got := simulate(t, newSnapshot(), ops)
	if !strings.Contains(got.String(), "pubany { tcp . 9090") {
		t.Errorf("the other port lost its rules:\n%s", got)
	}
}

func TestValidateRefusesBadPortsNamingThem(t *testing.T) {
	internal := Network{Tenant: "acme", Name: "db", VNI: 4099}
	ep := func(id string, vni uint32, ip string, ps ...Port) Endpoint {
		return Endpoint{ID: id, VNI: vni, IPs: ips(ip), Ports: ps}
	}
	nets := []Network{egressNet("acme", 4097), internal}
	tests := []struct {
		name string
		eps  []Endpoint
		want string
	}{
		{"internal network", []Endpoint{ep("a", 4099, "10.2.0.2", web8080)}, "has no egress"},
		{"sctp", []Endpoint{ep("a", 4097, "10.1.0.2", Port{Proto: 132, HostPort: 1, Port: 1})}, "protocol 132: must be tcp (6) or udp (17)"},
		{"host port 0", []Endpoint{ep("a", 4097, "10.1.0.2", Port{Proto: TCP, Port: 80})}, "ports must be 1-65535"},
		{"ipv6 host address", []Endpoint{ep("a", 4097, "10.1.0.2", Port{Proto: TCP, HostIP: netip.MustParseAddr("::1"), HostPort: 1, Port: 1})},
			"host address ::1: must be a unicast IPv4 address or 0.0.0.0"},
		{"two endpoints, one host port", []Endpoint{ep("a", 4097, "10.1.0.2", web8080), ep("b", 4097, "10.1.0.3", web8080)},
			`host port 8080/tcp already published by endpoint "a"`},
		{"one host port to two container ports", []Endpoint{ep("a", 4097, "10.1.0.2", web8080, Port{Proto: TCP, HostIP: lo4, HostPort: 8080, Port: 81})},
			"already published"},
		{"every address and one address", []Endpoint{ep("a", 4097, "10.1.0.2", web8080, Port{Proto: TCP, HostIP: lo4, HostPort: 8080, Port: 80})},
			"published twice on one address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := State{Networks: nets, Endpoints: tt.eps}
			for _, err := range []error{s.Validate(), s.ValidateScope(Scope{Endpoints: []string{tt.eps[len(tt.eps)-1].ID}})} {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("got %v, want an ErrInvalid containing %q", err, tt.want)
				}
			}
		})
	}
	ok := State{Networks: nets, Endpoints: []Endpoint{ep("a", 4097, "10.1.0.2", web8080, Port{Proto: UDP, HostPort: 8080, Port: 80},
		Port{Proto: TCP, HostIP: lo4, HostPort: 9090, Port: 90}, Port{Proto: TCP, HostIP: vtep0, HostPort: 9090, Port: 90})}}
	if err := ok.Validate(); err != nil {
		t.Errorf("tcp and udp on one port, one port on two addresses: %v", err)
	}
}

func TestElemPortReadsEveryPortMap(t *testing.T) {
	for _, tt := range []struct {
		e     Elem
		proto Proto
		port  uint16
	}{
		{pubElem(netip.MustParseAddr("10.1.0.5"), web8080), TCP, 8080},
		{hostPubElem(Port{Proto: UDP, HostPort: 53, Port: 53}, netip.MustParseAddr("169.254.0.6")), UDP, 53},
		{hostPubElem(Port{Proto: TCP, HostIP: lo4, HostPort: 65535, Port: 1}, netip.MustParseAddr("169.254.0.6")), TCP, 65535},
	} {
		proto, port, ok := elemPort(tt.e)
		if !ok || proto != tt.proto || port != tt.port {
			t.Errorf("elemPort(%v) = %v %d %t", tt.e, proto, port, ok)
		}
	}
	if _, _, ok := elemPort(Elem{Set: setPairs, Key: "br1 . up0"}); ok {
		t.Error("a pairs element publishes no port")
	}
}
