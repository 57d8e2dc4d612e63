package core_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/core/coretest"
	"github.com/tenet-net/tenet/internal/rules"
)

var (
	vtep0 = netip.MustParseAddr("198.51.100.10")
	vtep1 = netip.MustParseAddr("198.51.100.11")
)

type harness struct {
	c    *core.Core
	dp   *coretest.Datapath
	cl   *coretest.Cluster
	cfg  core.Config
	stop func()
}

func config(t *testing.T, dir string) core.Config {
	cfg := core.DefaultConfig()
	cfg.Host, cfg.VTEP, cfg.StateDir = "h0", vtep0, dir
	cfg.Forbidden = []rules.Forbidden{{Prefix: netip.MustParsePrefix("198.51.100.0/24"), What: "the underlay"}}
	cfg.RetryInterval = 50 * time.Millisecond
	return cfg
}

// start runs a core over fakes; cfgFn may change the config first.
func start(t *testing.T, dp *coretest.Datapath, cl *coretest.Cluster, cfg core.Config) *harness {
	t.Helper()
	c, err := core.New(cfg, dp, cl)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	h := &harness{c: c, dp: dp, cl: cl, cfg: cfg}
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(h.stop)
	// Run has subscribed to the cluster once it made its first pass.
	eventually(t, "the core runs", func() bool { return len(dp.Calls()) > 0 })
	return h
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return start(t, &coretest.Datapath{MTU: 1450}, coretest.NewCluster("h0"), config(t, t.TempDir()))
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func web() core.NetworkSpec {
	return core.NetworkSpec{Tenant: "acme", Name: "web", Subnet: netip.MustParsePrefix("10.1.0.0/24"),
		Gateway: netip.MustParseAddr("10.1.0.1"), Ref: "docker-n1"}
}

func ep(id, ip string) core.EndpointSpec {
	return core.EndpointSpec{ID: id, Network: "acme/web", IP: netip.MustParsePrefix(ip + "/24")}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestNetworkAndEndpointLifecycle(t *testing.T) {
	h := newHarness(t)
	n, err := h.c.CreateNetwork(ctx(t), web())
	if err != nil {
		t.Fatal(err)
	}
	if n.VNI != rules.DeriveVNI("acme/web") {
		t.Fatalf("vni %d, want the derived one", n.VNI)
	}
	s, _ := h.dp.Last()
	if len(s.Networks) != 1 || s.Networks[0].Tenant != "acme" || !s.Networks[0].Egress ||
		s.Networks[0].Gateway != netip.MustParsePrefix("10.1.0.1/24") {
		t.Fatalf("datapath after CreateNetwork: %+v", s.Networks)
	}
	if _, published, attached := h.cl.OwnNetwork("acme/web"); !published || !attached {
		t.Fatal("network not published and attached")
	}
	if got, ok := h.c.NetworkByRef("docker-n1"); !ok || got.Key() != "acme/web" {
		t.Fatal("NetworkByRef does not find it")
	}
	e, err := h.c.CreateEndpoint(ctx(t), ep("e1", "10.1.0.5"))
	if err != nil {
		t.Fatal(err)
	}
	// The MAC is derived from the address, so a container restarted with
	// the same address has the same MAC.
	if e.MAC.String() != "02:7e:0a:01:00:05" {
		t.Fatalf("mac %s, want one derived from 10.1.0.5", e.MAC)
	}
	s, _ = h.dp.Last()
	if len(s.Endpoints) != 1 || s.Endpoints[0].MAC.String() != e.MAC.String() {
		t.Fatalf("datapath endpoints: %+v", s.Endpoints)
	}
	if _, ok := h.cl.Own("e1"); !ok {
		t.Fatal("endpoint not published")
	}
	if _, _, err := h.c.AttachEndpoint(ctx(t), "e1", "/run/docker/netns/abc"); err != nil {
		t.Fatal(err)
	}
	if err := h.c.DeleteEndpoint(ctx(t), "e1"); err != nil {
		t.Fatal(err)
	}
	if s, _ := h.dp.Last(); len(s.Endpoints) != 0 {
		t.Fatal("endpoint left in the datapath")
	}
	if _, ok := h.cl.Own("e1"); ok {
		t.Fatal("endpoint not withdrawn")
	}
	if err := h.c.DeleteEndpoint(ctx(t), "e1"); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
	if err := h.c.DeleteNetwork(ctx(t), "acme/web"); err != nil {
		t.Fatal(err)
	}
	if s, _ := h.dp.Last(); len(s.Networks) != 0 {
		t.Fatal("network left in the datapath")
	}
	if _, published, attached := h.cl.OwnNetwork("acme/web"); published || attached {
		t.Fatal("network not withdrawn")
	}
}

// TestAnEndpointsRemovalReadsOnlyTheEndpoint: DeleteEndpoint's pass
// names the endpoint alone, not its tenant, whose scope would read every
// port of the tenant: a removal's cost would grow with the endpoints of
// the host (5x at 1,000, BenchmarkPluginCalls). The overlay finds what is
// left of the endpoint by its port (overlay's
// TestAnEndpointWhoseVethWentIsRemovedByItsScope).
func TestAnEndpointsRemovalReadsOnlyTheEndpoint(t *testing.T) {
	h := newHarness(t)
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"e1", "e2"} {
		if _, err := h.c.CreateEndpoint(ctx(t), ep(id, "10.1.0.1"+id[1:])); err != nil {
			t.Fatal(err)
		}
	}
	n := len(h.dp.Calls())
	if err := h.c.DeleteEndpoint(ctx(t), "e1"); err != nil {
		t.Fatal(err)
	}
	calls := h.dp.Calls()[n:]
	if len(calls) == 0 {
		t.Fatal("no pass for the removal")
	}
	for _, c := range calls {
		if sc := c.Scope; sc.All || len(sc.Tenants)+len(sc.Networks)+len(sc.RemoteNets)+len(sc.Remotes) > 0 || !slices.Equal(sc.Endpoints, []string{"e1"}) {
			t.Errorf("the removal's pass has scope %+v, want the endpoint e1 alone", sc)
		}
	}
}

// stateFile returns the saved state (state.json and its journal), for
// checking that refused requests leave it as it was.
func stateFile(t *testing.T, h *harness) string {
	b, _ := os.ReadFile(filepath.Join(h.cfg.StateDir, "state.json"))
	j, _ := os.ReadFile(filepath.Join(h.cfg.StateDir, "state.journal"))
	return string(b) + "\n--- journal:\n" + string(j)
}

func TestBadNetworksAreRefusedNamingTheRuleAndChangeNothing(t *testing.T) {
	h := newHarness(t)
	h.cl.AddHost("h1", vtep1)
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	before, calls := stateFile(t, h), len(h.dp.Calls())
	mod := func(f func(*core.NetworkSpec)) core.NetworkSpec {
		s := web()
		s.Name, s.Ref, s.Subnet, s.Gateway = "db", "docker-n2", netip.MustParsePrefix("10.2.0.0/24"), netip.MustParseAddr("10.2.0.1")
		f(&s)
		return s
	}
	for _, tt := range []struct {
		name string
		spec core.NetworkSpec
		kind error
		want string
	}{
		{"whole internet", mod(func(s *core.NetworkSpec) { s.Subnet, s.Gateway = netip.MustParsePrefix("0.0.0.0/0"), netip.Addr{} }), core.ErrInvalid, "0.0.0.0/0"},
		{"loopback", mod(func(s *core.NetworkSpec) { s.Subnet, s.Gateway = netip.MustParsePrefix("127.0.0.0/24"), netip.Addr{} }), core.ErrInvalid, "loopback"},
		{"link-local", mod(func(s *core.NetworkSpec) { s.Subnet, s.Gateway = netip.MustParsePrefix("169.254.0.0/24"), netip.Addr{} }), core.ErrInvalid, "169.254"},
		{"multicast", mod(func(s *core.NetworkSpec) { s.Subnet, s.Gateway = netip.MustParsePrefix("239.1.0.0/24"), netip.Addr{} }), core.ErrInvalid, "multicast"},
		{"underlay", mod(func(s *core.NetworkSpec) { s.Subnet, s.Gateway = netip.MustParsePrefix("198.51.0.0/16"), netip.Addr{} }), core.ErrInvalid, "underlay"},
		{"bad tenant", mod(func(s *core.NetworkSpec) { s.Tenant = "Acme" }), core.ErrInvalid, `tenant "Acme"`},
		{"bad name", mod(func(s *core.NetworkSpec) { s.Name = "d/b" }), core.ErrInvalid, `network "d/b"`},
		{"gateway is broadcast", mod(func(s *core.NetworkSpec) { s.Gateway = netip.MustParseAddr("10.2.0.255") }), core.ErrInvalid, "broadcast"},
		{"gateway outside", mod(func(s *core.NetworkSpec) { s.Gateway = netip.MustParseAddr("10.3.0.1") }), core.ErrInvalid, "not in subnet"},
		{"mtu over the underlay", mod(func(s *core.NetworkSpec) { s.MTU = 9000 }), core.ErrInvalid, "mtu 9000: must be at most 1450"},
		{"mtu too small", mod(func(s *core.NetworkSpec) { s.MTU = 600 }), core.ErrInvalid, "mtu 600"},
		{"vni too large", mod(func(s *core.NetworkSpec) { s.VNI = 1 << 24 }), core.ErrInvalid, "vni 16777216"},
		{"same ref", mod(func(s *core.NetworkSpec) { s.Ref = "docker-n1" }), core.ErrConflict, "is already network acme/web"},
		{"same key", mod(func(s *core.NetworkSpec) { s.Name = "web" }), core.ErrConflict, "already created on this host"},
		{"overlap", mod(func(s *core.NetworkSpec) {
			s.Subnet, s.Gateway = netip.MustParsePrefix("10.1.0.128/25"), netip.MustParseAddr("10.1.0.129")
		}), core.ErrConflict, "overlaps network acme/web"},
		{"vni taken", mod(func(s *core.NetworkSpec) { s.VNI = rules.DeriveVNI("acme/web") }), core.ErrConflict, "is already used by network acme/web"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.c.CreateNetwork(ctx(t), tt.spec)
			if err == nil || !errors.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CreateNetwork = %v; want %v naming %q", err, tt.kind, tt.want)
			}
		})
	}
	if got := stateFile(t, h); got != before {
		t.Errorf("refused requests changed the state file:\n%s\nwas\n%s", got, before)
	}
	if len(h.dp.Calls()) != calls {
		t.Errorf("refused requests reached the datapath")
	}
	// Another host's definition of the same key with another subnet.
	h.cl.AddNetwork(gossip.Network{ID: "globex/web", Tenant: "globex", Name: "web", VNI: rules.DeriveVNI("globex/web"),
		Subnet: netip.MustParsePrefix("10.9.0.0/24"), Host: "h1"})
	s := web()
	s.Tenant, s.Ref = "globex", "docker-n3"
	if _, err := h.c.CreateNetwork(ctx(t), s); err == nil || !strings.Contains(err.Error(), "subnet 10.1.0.0/24 differs from the cluster's 10.9.0.0/24 (defined by host h1)") {
		t.Fatalf("conflicting definition: %v", err)
	}
	// The same subnet in another tenant is fine.
	s.Tenant = "initech"
	if _, err := h.c.CreateNetwork(ctx(t), s); err != nil {
		t.Fatal(err)
	}
}

func TestBadEndpointsAreRefused(t *testing.T) {
	h := newHarness(t)
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.CreateEndpoint(ctx(t), ep("e1", "10.1.0.5")); err != nil {
		t.Fatal(err)
	}
	h.cl.AddRemote(core.Remote{ID: "r1", Network: "acme/web", Host: "h1", VTEP: vtep1, IP: netip.MustParseAddr("10.1.0.9"),
		MAC: net.HardwareAddr{2, 0x7e, 10, 1, 0, 9}})
	calls := len(h.dp.Calls())
	bad := func(f func(*core.EndpointSpec)) core.EndpointSpec { s := ep("e2", "10.1.0.6"); f(&s); return s }
	for _, tt := range []struct {
		name string
		spec core.EndpointSpec
		want string
	}{
		{"gateway", bad(func(s *core.EndpointSpec) { s.IP = netip.MustParsePrefix("10.1.0.1/24") }), "is the gateway"},
		{"broadcast", bad(func(s *core.EndpointSpec) { s.IP = netip.MustParsePrefix("10.1.0.255/24") }), "broadcast"},
		{"network address", bad(func(s *core.EndpointSpec) { s.IP = netip.MustParsePrefix("10.1.0.0/24") }), "network address"},
		{"outside", bad(func(s *core.EndpointSpec) { s.IP = netip.MustParsePrefix("10.2.0.5/24") }), "not in subnet"},
		{"duplicate id", bad(func(s *core.EndpointSpec) { s.ID = "e1" }), "already exists"},
		{"address taken here", bad(func(s *core.EndpointSpec) { s.IP = netip.MustParsePrefix("10.1.0.5/24") }), "already used by endpoint e1 on this host"},
		{"address taken on h1", bad(func(s *core.EndpointSpec) { s.IP = netip.MustParsePrefix("10.1.0.9/24") }), "already used by endpoint r1 on host h1"},
		{"mac taken on h1", bad(func(s *core.EndpointSpec) { s.MAC = net.HardwareAddr{2, 0x7e, 10, 1, 0, 9} }), "mac 02:7e:0a:01:00:09 is already used by endpoint r1 on host h1"},
		{"multicast mac", bad(func(s *core.EndpointSpec) { s.MAC = net.HardwareAddr{1, 0, 0, 0, 0, 1} }), "unicast"},
		{"no network", bad(func(s *core.EndpointSpec) { s.Network = "acme/none" }), "no such network"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := h.c.CreateEndpoint(ctx(t), tt.spec); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CreateEndpoint = %v; want an error naming %q", err, tt.want)
			}
		})
	}
	// The MAC of one of this host's endpoints.
	e1, _ := h.c.Endpoint("e1")
	if _, err := h.c.CreateEndpoint(ctx(t), bad(func(s *core.EndpointSpec) { s.MAC = e1.MAC })); err == nil ||
		!strings.Contains(err.Error(), "is already used by endpoint e1 on this host") {
		t.Errorf("e1's MAC: %v", err)
	}
	// The remote event may cost one datapath pass; refusals cost none.
	eventually(t, "the remote's pass", func() bool { return len(h.dp.Calls()) >= calls })
	calls = len(h.dp.Calls())
	if _, err := h.c.CreateEndpoint(ctx(t), bad(func(s *core.EndpointSpec) { s.IP = netip.MustParsePrefix("10.1.0.1/24") })); err == nil {
		t.Fatal("gateway accepted")
	}
	if len(h.dp.Calls()) != calls {
		t.Fatal("a refused endpoint reached the datapath")
	}
}

func TestAFailedOrLateCallLeavesNothingBehind(t *testing.T) {
	h := newHarness(t)
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	before := stateFile(t, h)
	h.dp.FailWhen(func(s core.Scope) bool { return slices.Contains(s.Endpoints, "e1") }, errors.New("kernel says no"))
	if _, err := h.c.CreateEndpoint(ctx(t), ep("e1", "10.1.0.5")); err == nil || !strings.Contains(err.Error(), "kernel says no") {
		t.Fatalf("failing datapath: %v", err)
	}
	if _, ok := h.c.Endpoint("e1"); ok {
		t.Fatal("failed endpoint kept")
	}
	if _, ok := h.cl.Own("e1"); ok {
		t.Fatal("failed endpoint published")
	}
	eventually(t, "the undo pass removes it", func() bool {
		s, _ := h.dp.Last()
		return len(s.Endpoints) == 0
	})
	eventually(t, "the state file is as it was", func() bool { return stateFile(t, h) == before })

	// A datapath that answers after the caller's deadline: the caller gets
	// an error, and the endpoint is gone again once the datapath moves.
	release := h.dp.Block()
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := h.c.CreateEndpoint(short, ep("e2", "10.1.0.6"))
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("late call: %v", err)
	}
	// Reads do not wait for the datapath: no lock is held across it.
	readDone := make(chan struct{})
	go func() { h.c.Networks(); h.c.Endpoints(); close(readDone) }()
	select {
	case <-readDone:
	case <-time.After(2 * time.Second):
		t.Fatal("reads blocked while the datapath was busy")
	}
	release()
	eventually(t, "the late endpoint is undone", func() bool {
		s, _ := h.dp.Last()
		for _, e := range s.Endpoints {
			if e.ID == "e2" {
				return false
			}
		}
		_, ok := h.c.Endpoint("e2")
		return !ok
	})
	if _, ok := h.cl.Own("e2"); ok {
		t.Fatal("late endpoint published")
	}
	if _, err := h.c.CreateEndpoint(ctx(t), ep("e3", "10.1.0.6")); err != nil {
		t.Fatalf("its address is free again: %v", err)
	}
}

func TestStateSurvivesARestartAndOldStateIsRead(t *testing.T) {
	dir := t.TempDir()
	cl := coretest.NewCluster("h0")
	h := start(t, &coretest.Datapath{}, cl, config(t, dir))
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.CreateEndpoint(ctx(t), ep("e1", "10.1.0.5")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.c.AttachEndpoint(ctx(t), "e1", "/x/netns"); err != nil {
		t.Fatal(err)
	}
	h.stop()
	dp2 := &coretest.Datapath{}
	h2 := start(t, dp2, coretest.NewCluster("h0"), config(t, dir))
	eventually(t, "the restarted core reconciles", func() bool {
		s, ok := dp2.Last()
		return ok && len(s.Networks) == 1 && len(s.Endpoints) == 1
	})
	e, ok := h2.c.Endpoint("e1")
	if !ok || e.Netns != "/x/netns" || e.MAC.String() != "02:7e:0a:01:00:05" {
		t.Fatalf("restored endpoint %+v", e)
	}
	if _, ok := h2.cl.Own("e1"); !ok {
		t.Fatal("restored endpoint not published again")
	}
	h2.stop()

	// The format of tenetd before the core (version 1).
	old := `{"networks":[{"docker_id":"d1","tenant":"acme","name":"web","vni":4242,"subnet":"10.1.0.0/24","gateway":"10.1.0.1"}],
	"endpoints":[{"id":"e9","network":"d1","ip":"10.1.0.9/24","mac":"An4KAQAJ","sandbox":"/y"}],
	"remotes":[{"id":"r1","network":"acme/web","mac":"An4KAQAH","ip":"10.1.0.7","vtep":"198.51.100.11","host":"h1","version":3}],
	"vteps":{"h1":"198.51.100.11"}}`
	dir2 := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir2, "state.json"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	c3, err := core.New(config(t, dir2), &coretest.Datapath{}, coretest.NewCluster("h0"))
	if err != nil {
		t.Fatal(err)
	}
	n, ok := c3.NetworkByRef("d1")
	if !ok || n.VNI != 4242 {
		t.Fatalf("version 1 network: %+v %v", n, ok)
	}
	if e, ok := c3.Endpoint("e9"); !ok || e.Network != "acme/web" || e.Netns != "/y" {
		t.Fatalf("version 1 endpoint: %+v %v", e, ok)
	}
	// A corrupt file is an error naming it, not an empty start.
	if err := os.WriteFile(filepath.Join(dir2, "state.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := core.New(config(t, dir2), &coretest.Datapath{}, coretest.NewCluster("h0")); err == nil || !strings.Contains(err.Error(), "state.json") {
		t.Fatalf("corrupt state: %v", err)
	}
}
