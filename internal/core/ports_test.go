package core_test

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/core/coretest"
	"github.com/tenet-net/tenet/overlay"
)

var lo4 = netip.MustParseAddr("127.0.0.1")

func tcp(hostPort, port uint16) core.PortRequest {
	return core.PortRequest{Proto: overlay.TCP, HostPort: hostPort, Port: port}
}

// portsOf returns the ports the datapath last got for endpoint id.
func portsOf(t *testing.T, h *harness, id string) string {
	t.Helper()
	s, _ := h.dp.Last()
	for _, e := range s.Endpoints {
		if e.ID == id {
			return fmt.Sprint(e.Ports)
		}
	}
	return "no endpoint"
}

func withEndpoints(t *testing.T, h *harness, ids ...string) {
	t.Helper()
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if _, err := h.c.CreateEndpoint(ctx(t), ep(id, fmt.Sprintf("10.1.0.%d", 10+i))); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPublishedPortsReachTheDatapathSurviveARestartAndGoWithTheEndpoint(t *testing.T) {
	dir := t.TempDir()
	h := start(t, &coretest.Datapath{MTU: 1450}, coretest.NewCluster("h0"), config(t, dir))
	withEndpoints(t, h, "e1")
	reqs := []core.PortRequest{
		tcp(8080, 80),
		{Proto: overlay.UDP, HostIP: lo4, HostPort: 5353, Port: 53},
		tcp(0, 81), // -p 81: any free port
		{Proto: overlay.TCP, HostPort: 7000, HostPortEnd: 7005, Port: 70}, // -p 7000-7005:70
		{Proto: overlay.TCP, HostIP: netip.IPv4Unspecified(), HostPort: 9000, Port: 90},
	}
	got, err := h.c.PublishPorts(ctx(t), "e1", reqs)
	if err != nil {
		t.Fatal(err)
	}
	want := "[tcp 0.0.0.0:8080 -> 80 udp 127.0.0.1:5353 -> 53 tcp 0.0.0.0:49153 -> 81 tcp 0.0.0.0:7000 -> 70 tcp 0.0.0.0:9000 -> 90]"
	if fmt.Sprint(got) != want {
		t.Fatalf("bindings %v, want %s", got, want)
	}
	if p := portsOf(t, h, "e1"); p != want {
		t.Fatalf("datapath has %s", p)
	}
	// Asked again (Docker's ProgramExternalConnectivity repeats): the same
	// ports, nothing to program.
	calls := len(h.dp.Calls())
	if again, err := h.c.PublishPorts(ctx(t), "e1", reqs); err != nil || fmt.Sprint(again) != want {
		t.Fatalf("asked again: %v %v", again, err)
	}
	if len(h.dp.Calls()) != calls {
		t.Error("asking for the same ports again reprogrammed the datapath")
	}
	if e, _ := h.c.Endpoint("e1"); fmt.Sprint(e.Ports) != want {
		t.Errorf("Endpoint reports %v", e.Ports)
	}
	if !strings.Contains(stateFile(t, h), `"host_port":49153`) {
		t.Errorf("state file lacks the ports:\n%s", stateFile(t, h))
	}
	// A restarted core programs them again from its state.
	h.stop()
	dp2 := &coretest.Datapath{MTU: 1450}
	h2 := start(t, dp2, coretest.NewCluster("h0"), config(t, dir))
	if p := portsOf(t, h2, "e1"); p != want {
		t.Errorf("after a restart the datapath has %s", p)
	}
	// Withdrawn (RevokeExternalConnectivity), then published again, then
	// gone with the endpoint.
	if _, err := h2.c.PublishPorts(ctx(t), "e1", nil); err != nil {
		t.Fatal(err)
	}
	if p := portsOf(t, h2, "e1"); p != "[]" {
		t.Errorf("after withdrawing: %s", p)
	}
	if _, err := h2.c.PublishPorts(ctx(t), "e1", reqs[:1]); err != nil {
		t.Fatal(err)
	}
	if err := h2.c.DeleteEndpoint(ctx(t), "e1"); err != nil {
		t.Fatal(err)
	}
	if p := portsOf(t, h2, "e1"); p != "no endpoint" {
		t.Errorf("after the endpoint went: %s", p)
	}
}

func TestPublishingATakenPortIsRefusedAndChangesNothing(t *testing.T) {
	h := newHarness(t)
	withEndpoints(t, h, "e1", "e2")
	if _, err := h.c.PublishPorts(ctx(t), "e1", []core.PortRequest{tcp(8080, 80), {Proto: overlay.TCP, HostIP: lo4, HostPort: 9090, Port: 90}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.PublishPorts(ctx(t), "e2", []core.PortRequest{tcp(8443, 443)}); err != nil {
		t.Fatal(err)
	}
	before, calls := stateFile(t, h), len(h.dp.Calls())
	for _, tt := range []struct {
		name string
		reqs []core.PortRequest
		kind error
		want string
	}{
		{"another endpoint's port", []core.PortRequest{tcp(8080, 80)}, core.ErrConflict,
			"host port 8080/tcp is already published by endpoint e1 (network acme/web) on this host"},
		{"another endpoint's port on another address", []core.PortRequest{{Proto: overlay.TCP, HostIP: vtep0, HostPort: 9090, Port: 90}}, core.ErrConflict,
			"already published by endpoint e1"},
		{"one port asked twice", []core.PortRequest{tcp(8443, 443), tcp(8443, 444)}, core.ErrConflict, "host port 8443/tcp is asked for twice"},
		{"a full range", []core.PortRequest{{Proto: overlay.TCP, HostPort: 8080, HostPortEnd: 8080, Port: 1}}, core.ErrConflict, "already published"},
		{"sctp", []core.PortRequest{{Proto: 132, HostPort: 1, Port: 1}}, core.ErrInvalid, "protocol 132: only tcp (6) and udp (17)"},
		{"ipv6 host address", []core.PortRequest{{Proto: overlay.TCP, HostIP: netip.MustParseAddr("::1"), HostPort: 1, Port: 1}}, core.ErrInvalid,
			"host address ::1: only IPv4"},
		{"reversed range", []core.PortRequest{{Proto: overlay.TCP, HostPort: 9, HostPortEnd: 8, Port: 1}}, core.ErrInvalid, "ends before it starts"},
		{"container port 0", []core.PortRequest{tcp(8000, 0)}, core.ErrInvalid, "container port must be 1-65535"},
		{"range from port 0", []core.PortRequest{{Proto: overlay.TCP, HostPortEnd: 9, Port: 1}}, core.ErrInvalid, "a host port range must start at 1"},
		{"multicast host address", []core.PortRequest{{Proto: overlay.UDP, HostIP: netip.MustParseAddr("239.1.1.1"), HostPort: 5, Port: 5}}, core.ErrInvalid,
			"host address 239.1.1.1: must be a unicast address"},
		{"broadcast host address", []core.PortRequest{{Proto: overlay.UDP, HostIP: netip.MustParseAddr("255.255.255.255"), HostPort: 5, Port: 5}}, core.ErrInvalid,
			"must be a unicast address"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.c.PublishPorts(ctx(t), "e2", tt.reqs)
			if !errors.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %v containing %q", err, tt.kind, tt.want)
			}
		})
	}
	if stateFile(t, h) != before || len(h.dp.Calls()) != calls {
		t.Error("a refused request changed the state file or the datapath")
	}
	// A range moves past a taken port.
	got, err := h.c.PublishPorts(ctx(t), "e2", []core.PortRequest{{Proto: overlay.TCP, HostPort: 8080, HostPortEnd: 8090, Port: 80}})
	if err != nil || fmt.Sprint(got) != "[tcp 0.0.0.0:8081 -> 80]" {
		t.Errorf("range past a taken port: %v %v", got, err)
	}
}

func TestPortsAnotherProgramHoldsAreRefusedOrSkipped(t *testing.T) {
	h := newHarness(t)
	withEndpoints(t, h, "e1")
	if _, err := h.c.PublishPorts(ctx(t), "e1", []core.PortRequest{tcp(8080, 80)}); err != nil {
		t.Fatal(err)
	}
	res := func(port uint16) overlay.Reservation {
		return overlay.Reservation{Proto: overlay.TCP, IP: netip.IPv4Unspecified(), Port: port}
	}
	h.dp.SetInUse(res(9000), res(49153), res(49154))
	_, err := h.c.PublishPorts(ctx(t), "e1", []core.PortRequest{tcp(8080, 80), tcp(9000, 90)})
	var inUse *overlay.PortInUseError
	if !errors.Is(err, core.ErrConflict) || !errors.As(err, &inUse) ||
		!strings.Contains(err.Error(), "publish ports of endpoint e1 (network acme/web): tcp port 9000 on 0.0.0.0 is in use on this host") {
		t.Fatalf("a port in use: %v", err)
	}
	eventually(t, "the datapath is back to the ports e1 had", func() bool { return portsOf(t, h, "e1") == "[tcp 0.0.0.0:8080 -> 80]" })
	if e, _ := h.c.Endpoint("e1"); fmt.Sprint(e.Ports) != "[tcp 0.0.0.0:8080 -> 80]" {
		t.Errorf("the endpoint's ports after the refusal: %v", e.Ports)
	}
	// Any free port: the ones in use are skipped.
	got, err := h.c.PublishPorts(ctx(t), "e1", []core.PortRequest{tcp(8080, 80), tcp(0, 91)})
	if err != nil || fmt.Sprint(got) != "[tcp 0.0.0.0:8080 -> 80 tcp 0.0.0.0:49155 -> 91]" {
		t.Errorf("any port with the first two in use: %v %v", got, err)
	}
}

func TestInternalNetworksPublishNothing(t *testing.T) {
	h := newHarness(t)
	spec := web()
	spec.Internal = true
	if _, err := h.c.CreateNetwork(ctx(t), spec); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.CreateEndpoint(ctx(t), ep("e1", "10.1.0.5")); err != nil {
		t.Fatal(err)
	}
	_, err := h.c.PublishPorts(ctx(t), "e1", []core.PortRequest{tcp(8080, 80)})
	if !errors.Is(err, core.ErrInvalid) || !strings.Contains(err.Error(), "no egress") {
		t.Errorf("publishing on an internal network: %v", err)
	}
	if got, err := h.c.PublishPorts(ctx(t), "e1", nil); err != nil || len(got) != 0 {
		t.Errorf("withdrawing nothing: %v %v", got, err)
	}
	if _, err := h.c.PublishPorts(ctx(t), "nosuch", nil); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("unknown endpoint: %v", err)
	}
	if diff := cmp.Diff("[]", portsOf(t, h, "e1")); diff != "" {
		t.Error(diff)
	}
}
