package core

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/internal/rules"
	"github.com/tenet-net/tenet/overlay"
)

func TestConfigValidateNamesTheField(t *testing.T) {
	good := DefaultConfig()
	good.Host, good.VTEP, good.StateDir = "h0", hostVTEP, "/tmp/x"
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for field, edit := range map[string]func(*Config){
		"Host":           func(c *Config) { c.Host = "" },
		"VTEP":           func(c *Config) { c.VTEP = netip.Addr{} },
		"StateDir":       func(c *Config) { c.StateDir = "" },
		"HiddenGrace":    func(c *Config) { c.HiddenGrace = -1 },
		"SyncWait":       func(c *Config) { c.SyncWait = -1 },
		"RepairInterval": func(c *Config) { c.RepairInterval = 0 },
		"RetryInterval":  func(c *Config) { c.RetryInterval = 0 },
		"GCInterval":     func(c *Config) { c.GCInterval = 0 },
		"UnjoinedGrace":  func(c *Config) { c.UnjoinedGrace = 0 },
		"AbandonedKeep":  func(c *Config) { c.AbandonedKeep = -time.Second },
		"Logger":         func(c *Config) { c.Logger = nil },
		"PSKRotation":    func(c *Config) { c.PSKRotation = -time.Second },
		"DynamicPorts":   func(c *Config) { c.DynamicPorts = PortRange{First: 0, Last: 10} },
		"DynamicPorts ":  func(c *Config) { c.DynamicPorts = PortRange{First: 9000, Last: 8999} },
	} {
		field := strings.TrimSpace(field)
		c := good
		edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v", field, err)
		}
	}
}

func TestNetworkSpecNormalize(t *testing.T) {
	s := NetworkSpec{Tenant: "acme", Name: "web", Subnet: netip.MustParsePrefix("10.1.0.0/24"), Gateway: netip.MustParseAddr("10.1.0.1")}
	if err := s.normalize(nil, 1450); err != nil {
		t.Fatal(err)
	}
	if s.VNI != rules.DeriveVNI("acme/web") || !s.Egress() || s.Key() != "acme/web" {
		t.Fatalf("normalized: %+v", s)
	}
	s.Internal = true
	if s.Egress() {
		t.Fatal("an internal network has egress")
	}
	for _, tt := range []struct {
		edit func(*NetworkSpec)
		want string
	}{
		{func(s *NetworkSpec) { s.Gateway = netip.MustParseAddr("10.1.0.0") }, "network address"},
		{func(s *NetworkSpec) { s.MTU = 1451 }, "at most 1450"},
		{func(s *NetworkSpec) { s.MTU = 1000 }, "at least 1280"},
		{func(s *NetworkSpec) { s.Subnet = netip.MustParsePrefix("10.1.0.0/31") }, "/30"},
		{func(s *NetworkSpec) { s.Name = "" }, `network ""`},
	} {
		x := NetworkSpec{Tenant: "acme", Name: "web", Subnet: netip.MustParsePrefix("10.1.0.0/24")}
		tt.edit(&x)
		if err := x.normalize(nil, 1450); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v; want %q", x, err, tt.want)
		}
	}
	// An unknown underlay MTU (0) checks only the absolute bounds.
	x := NetworkSpec{Tenant: "acme", Name: "web", Subnet: netip.MustParsePrefix("10.1.0.0/24"), MTU: 9000}
	if err := x.normalize(nil, 0); err != nil {
		t.Errorf("mtu 9000 with an unknown underlay: %v", err)
	}
	x.MTU = 9001
	if err := x.normalize(nil, 0); err == nil {
		t.Error("mtu 9001 accepted")
	}
}

func TestEndpointSpecNormalize(t *testing.T) {
	n := webNet().NetworkSpec
	e := EndpointSpec{ID: "e1", Network: "acme/web", IP: netip.MustParsePrefix("10.1.0.5/32")}
	if err := e.normalize(n); err != nil {
		t.Fatal(err)
	}
	if e.IP.Bits() != 24 || e.MAC.String() != "02:7e:0a:01:00:05" {
		t.Fatalf("normalized: %+v", e)
	}
	given := EndpointSpec{ID: "e2", Network: "acme/web", IP: netip.MustParsePrefix("10.1.0.6/24"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 6}}
	if err := given.normalize(n); err != nil || given.MAC.String() != "02:00:00:00:00:06" {
		t.Fatalf("a given MAC: %+v %v", given, err)
	}
	for _, tt := range []struct {
		e    EndpointSpec
		want string
	}{
		{EndpointSpec{Network: "acme/web", IP: netip.MustParsePrefix("10.1.0.5/24")}, "id"},
		{EndpointSpec{ID: "x", Network: "acme/web"}, "no IPv4 address"},
		{EndpointSpec{ID: "x", IP: netip.MustParsePrefix("10.1.0.5/24"), MAC: net.HardwareAddr{2, 0, 0, 0, 0}}, "6 bytes"},
		{EndpointSpec{ID: "x", IP: netip.MustParsePrefix("10.1.0.5/24"), MAC: net.HardwareAddr{0, 0, 0, 0, 0, 0}}, "all zero"},
	} {
		if err := tt.e.normalize(n); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v; want %q", tt.e, err, tt.want)
		}
	}
}

func TestScopeMergeAndEmpty(t *testing.T) {
	if !(Scope{}).Empty() {
		t.Fatal("the zero scope is not empty")
	}
	for _, s := range []Scope{{All: true}, {Infra: true}, {Tenants: []string{"a"}}, {RemoteNets: []uint32{1}}} {
		if s.Empty() {
			t.Errorf("%+v is empty", s)
		}
	}
	a := Scope{Tenants: []string{"b", "a"}, Networks: []uint32{2}, Remotes: []RemoteKey{{2, "02:00:00:00:00:02"}, {1, "02:00:00:00:00:09"}}}
	b := Scope{Tenants: []string{"a"}, Networks: []uint32{1, 2}, Endpoints: []string{"e"}, Remotes: []RemoteKey{{1, "02:00:00:00:00:09"}}, Infra: true}
	m := a.merge(b)
	if !slices.Equal(m.Tenants, []string{"a", "b"}) || !slices.Equal(m.Networks, []uint32{1, 2}) || !slices.Equal(m.Endpoints, []string{"e"}) ||
		len(m.Remotes) != 2 || m.Remotes[0].VNI != 1 || !m.Infra || m.All {
		t.Errorf("merged: %+v", m)
	}
	if all := a.merge(Scope{All: true}); !all.All || len(all.Tenants) != 0 {
		t.Errorf("merged with All: %+v", all)
	}
}

func TestStateRoundTripsAndRefusesANewerFormat(t *testing.T) {
	dir := t.TempDir()
	nets := []Network{webNet()}
	nets[0].Ref, nets[0].MTU, nets[0].Internal = "d1", 1400, true
	eps := []Endpoint{{EndpointSpec: EndpointSpec{ID: "e5", Network: "acme/web", IP: netip.PrefixFrom(ip(5), 24), MAC: mac(5)},
		Netns: "/run/docker/netns/x", NetnsSeen: true, Created: t0}}
	b, err := encodeState(nets, eps)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(statePath(dir), b, 0o600); err != nil {
		t.Fatal(err)
	}
	gotNets, gotEps, _, err := loadState(dir, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	if n := gotNets["acme/web"]; n == nil || n.NetworkSpec != nets[0].NetworkSpec {
		t.Errorf("network: %+v", n)
	}
	if e := gotEps["e5"]; e == nil || e.Netns != eps[0].Netns || !e.NetnsSeen || !e.Created.Equal(t0) || e.MAC.String() != mac(5).String() {
		t.Errorf("endpoint: %+v", e)
	}
	if err := os.WriteFile(statePath(dir), []byte(`{"version": 99}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := loadState(dir, func(string, ...any) {}); err == nil || !strings.Contains(err.Error(), "version 99") {
		t.Errorf("a newer format: %v", err)
	}
	// Entries that no longer pass the rules are dropped, with a warning.
	if err := os.WriteFile(statePath(dir), []byte(`{"version":2,"networks":[{"tenant":"Bad!","name":"x"}],
		"endpoints":[{"id":"e","network":"Bad!/x"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var warned []string
	gotNets, gotEps, _, err = loadState(dir, func(msg string, _ ...any) { warned = append(warned, msg) })
	if err != nil || len(gotNets) != 0 || len(gotEps) != 0 || len(warned) != 2 {
		t.Errorf("invalid saved entries: %v %v %v %v", gotNets, gotEps, err, warned)
	}
}

// TestSavedPortsRoundTripAndClashingOnesAreDropped: published ports are
// saved; ports that break the rules or clash with an earlier endpoint's
// are dropped with a warning (the endpoint stays), so that an edited file
// cannot fail every reconcile.
func TestSavedPortsRoundTripAndClashingOnesAreDropped(t *testing.T) {
	dir := t.TempDir()
	web := PortBinding{Proto: overlay.TCP, HostPort: 8080, Port: 80}
	dns := PortBinding{Proto: overlay.UDP, HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 5353, Port: 53}
	mk := func(n byte, ports ...PortBinding) Endpoint {
		return Endpoint{EndpointSpec: EndpointSpec{ID: fmt.Sprintf("e%d", n), Network: "acme/web", IP: netip.PrefixFrom(ip(n), 24), MAC: mac(n)},
			Ports: ports}
	}
	eps := []Endpoint{mk(1, web, dns), mk(2, web), mk(3, PortBinding{Proto: overlay.TCP, HostPort: 9, Port: 9}, PortBinding{Proto: overlay.TCP,
		HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 9, Port: 9}), mk(4, PortBinding{Proto: overlay.UDP, HostPort: 8080, Port: 80})}
	b, err := encodeState([]Network{webNet()}, eps)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(statePath(dir), b, 0o600); err != nil {
		t.Fatal(err)
	}
	var warned []string
	_, got, _, err := loadState(dir, func(msg string, args ...any) { warned = append(warned, fmt.Sprint(msg, args)) })
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"e1": "[tcp 0.0.0.0:8080 -> 80 udp 127.0.0.1:5353 -> 53]", "e2": "[]", "e3": "[]",
		"e4": "[udp 0.0.0.0:8080 -> 80]"} {
		if e := got[id]; e == nil || fmt.Sprint(e.Ports) != want {
			t.Errorf("%s: %+v, want ports %s", id, e, want)
		}
	}
	if len(warned) != 2 || !strings.Contains(warned[0], "e2") || !strings.Contains(warned[1], "e3") {
		t.Errorf("warnings: %q", warned)
	}
}

// failDatapath fails every pass whose scope names a bad endpoint.
type failDatapath struct {
	mu     sync.Mutex
	passes []Scope
	gate   chan struct{}
}

func (f *failDatapath) Apply(ctx context.Context, s overlay.State, sc Scope) error {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.passes = append(f.passes, sc)
	for _, e := range sc.Endpoints {
		if strings.HasPrefix(e, "bad") {
			return errors.New("the kernel refuses " + e)
		}
	}
	return nil
}

func (f *failDatapath) MaxMTU() (int, error) { return 0, nil }

func TestAFailureReachesOnlyTheCallerWhoseChangeCausedIt(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Host, cfg.VTEP, cfg.StateDir = "h0", hostVTEP, t.TempDir()
	dp := &failDatapath{}
	c, err := New(cfg, dp, &memCluster{eps: map[string]bool{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// Three requests in one pass: the merged pass fails, each is retried
	// alone, and only the bad one's caller hears of it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		dp.mu.Lock()
		started := len(dp.passes) > 0
		dp.mu.Unlock()
		if started {
			break // the start-up pass is done
		}
		if time.Now().After(deadline) {
			t.Fatal("no start-up pass")
		}
	}
	gate := make(chan struct{})
	dp.mu.Lock()
	dp.gate = gate
	dp.mu.Unlock()
	results := map[string]<-chan error{}
	for _, id := range []string{"good1", "bad", "good2"} {
		results[id] = c.w.submit(Scope{Endpoints: []string{id}})
	}
	close(gate)
	for id, ch := range results {
		err := <-ch
		if strings.HasPrefix(id, "bad") != (err != nil) {
			t.Errorf("%s: %v", id, err)
		}
	}
}

func TestSaveFailsLoudlyAndLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Host, cfg.VTEP, cfg.StateDir = "h0", hostVTEP, filepath.Join(dir, "state")
	c, err := New(cfg, nopDatapath{}, &memCluster{eps: map[string]bool{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// The state directory becomes a file: no save can succeed.
	if err := os.WriteFile(cfg.StateDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateNetwork(t.Context(), NetworkSpec{Tenant: "acme", Name: "web", Subnet: netip.MustParsePrefix("10.1.0.0/24")})
	if err == nil || !strings.Contains(err.Error(), "save state") {
		t.Fatalf("create with an unwritable state: %v", err)
	}
	if len(c.Networks()) != 0 {
		t.Fatal("a network that could not be saved was kept")
	}
	// A caller that gives up waiting for the save hears so.
	short, stop := context.WithTimeout(context.Background(), time.Nanosecond)
	defer stop()
	<-short.Done()
	if err := c.saver.save(short); err == nil {
		t.Error("save with an expired context succeeded")
	}
}

// TestStateEncoderWritesWhatEncodeStateWrites: the saver's encoder, which
// encodes again only the endpoints that changed, writes state.json byte
// for byte as encoding everything would, through additions, every kind of
// change to an endpoint, removals and network changes; and it keeps the
// encoding of an endpoint that did not change.
func TestStateEncoderWritesWhatEncodeStateWrites(t *testing.T) {
	var se stateEncoder
	nets := []Network{webNet()}
	var eps []Endpoint
	for i := range 20 {
		eps = append(eps, Endpoint{EndpointSpec: EndpointSpec{ID: fmt.Sprintf("e%02d", i), Network: "acme/web",
			IP: netip.PrefixFrom(ip(byte(10+i)), 24), MAC: mac(byte(10 + i))}, Created: t0})
	}
	check := func(step string) {
		t.Helper()
		want, err := encodeState(nets, eps)
		if err != nil {
			t.Fatal(err)
		}
		got, err := se.encode(nets, eps)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s:\n got %s\nwant %s", step, got, want)
		}
	}
	check("first")
	kept := &se.eps["e05"].json[0]
	change := []func(e *Endpoint){
		func(e *Endpoint) { e.Names = []string{"db", "a<b>&"} },
		func(e *Endpoint) { e.Names = []string{"db"} },
		func(e *Endpoint) { e.Names[0] = "cache" }, // in place
		func(e *Endpoint) { e.Netns, e.NetnsSeen = "/run/docker/netns/x", true },
		func(e *Endpoint) { e.Ports = []PortBinding{{Proto: overlay.TCP, HostPort: 8080, Port: 80}} },
		func(e *Endpoint) { e.Ports[0].HostPort = 8081 }, // in place, as a careless caller might
		func(e *Endpoint) { e.MAC = mac(200) },
		func(e *Endpoint) { e.IP = netip.PrefixFrom(ip(200), 24) },
		func(e *Endpoint) { e.Created = t0.Add(time.Second) },
	}
	for i, fn := range change {
		for _, e := range []*Endpoint{&eps[1], &eps[12]} {
			fn(e)
			check(fmt.Sprintf("change %d of %s", i, e.ID))
		}
	}
	eps = slices.Delete(eps, 7, 9)
	check("removed two")
	eps = append(eps, Endpoint{EndpointSpec: EndpointSpec{ID: "e00a", Network: "acme/web", IP: netip.PrefixFrom(ip(99), 24), MAC: mac(99)}})
	slices.SortFunc(eps, func(a, b Endpoint) int { return cmp.Compare(a.ID, b.ID) })
	check("added one between")
	nets = append(nets, Network{NetworkSpec: NetworkSpec{Tenant: "acme", Name: "db", VNI: 9, Subnet: netip.MustParsePrefix("10.9.0.0/24")}})
	check("added a network")
	if &se.eps["e05"].json[0] != kept {
		t.Error("an endpoint that never changed was encoded again")
	}
	nets, eps = nil, nil
	check("empty")
}

// BenchmarkStateEncode: what a save costs to encode at 1 and 1,000
// endpoints with one changed per save (as on a plugin call), everything
// encoded against the saver's encoder, side by side.
func BenchmarkStateEncode(b *testing.B) {
	for _, n := range []int{1, 1000} {
		nets := []Network{webNet()}
		var eps []Endpoint
		for i := range n {
			eps = append(eps, Endpoint{EndpointSpec: EndpointSpec{ID: fmt.Sprintf("%064d", i), Network: "acme/web",
				IP: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 20), MAC: mac(byte(i))},
				Netns: "/var/run/docker/netns/0123456789ab", NetnsSeen: true, Created: t0})
		}
		b.Run(fmt.Sprintf("all/%d", n), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				eps[i%n].Created = t0.Add(time.Duration(i))
				if _, err := encodeState(nets, eps); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("changed/%d", n), func(b *testing.B) {
			var se stateEncoder
			for i := 0; b.Loop(); i++ {
				eps[i%n].Created = t0.Add(time.Duration(i))
				if _, err := se.encode(nets, eps); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestStateEncoderAppliesChangesAsAWholeUpdateWould: the incremental path
// (what changed, as Core.takeChanges hands it) leaves the encoder as a
// whole update with the resulting state would, byte for byte, and its
// records say exactly what changed. It refuses changes before it has the
// whole state.
func TestStateEncoderAppliesChangesAsAWholeUpdateWould(t *testing.T) {
	var inc stateEncoder
	if _, err := inc.apply(changes{set: []Endpoint{jep(1)}}, 1); err == nil {
		t.Fatal("changes accepted before the whole state")
	}
	nets := []Network{webNet()}
	byID := map[string]Endpoint{}
	for i := range 10 {
		byID[jep(byte(i)).ID] = jep(byte(i))
	}
	all := func() []Endpoint {
		eps := slices.Collect(maps.Values(byID))
		slices.SortFunc(eps, byEndpointID)
		return eps
	}
	if _, err := inc.apply(changes{all: true, nets: nets, netsDirty: true, set: all()}, 1); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		ch   func() changes
		want string // in the record
	}{
		{"a name", func() changes {
			e := byID["e003"]
			e.Names = []string{"db"}
			byID[e.ID] = e
			return changes{set: []Endpoint{e}}
		}, `"names":["db"]`},
		{"unchanged, but noted", func() changes { return changes{set: []Endpoint{byID["e004"]}} }, ""},
		{"a delete", func() changes { delete(byID, "e005"); return changes{del: []string{"e005"}} }, `"del":["e005"]`},
		{"a delete of what was never saved", func() changes { return changes{del: []string{"e099"}} }, ""},
		{"an addition", func() changes { byID["e050"] = jep(50); return changes{set: []Endpoint{jep(50)}} }, `"id":"e050"`},
		{"a network", func() changes {
			nets = append(nets, Network{NetworkSpec: NetworkSpec{Tenant: "acme", Name: "db", VNI: 9, Subnet: netip.MustParsePrefix("10.9.0.0/24")}})
			return changes{nets: nets, netsDirty: true}
		}, `"nets_set":true`},
	}
	for i, st := range steps {
		rec, err := inc.apply(st.ch(), uint64(i+2))
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.want == "" && rec != nil || st.want != "" && !strings.Contains(string(rec), st.want) {
			t.Errorf("%s: record %s, want one with %q", st.name, rec, st.want)
		}
		var whole stateEncoder
		if _, err := whole.update(nets, all(), 0); err != nil {
			t.Fatal(err)
		}
		if got, want := inc.snapshot(7), whole.snapshot(7); !bytes.Equal(got, want) {
			t.Fatalf("%s: incremental\n%s\nwhole\n%s", st.name, got, want)
		}
	}
}

// TestVXLANDeviceNamesGiveTheirVNI: the kernel's remote entries are found
// by device name; only "vx" and a decimal VNI is one.
func TestVXLANDeviceNamesGiveTheirVNI(t *testing.T) {
	for name, want := range map[string]int64{"vx4242": 4242, "vx0": 0, "vx16777215": 16777215,
		"br4242": -1, "vx": -1, "vx-1": -1, "vx12a": -1, "vx99999999999": -1, "tv0123": -1} {
		got, ok := vxlanVNI(name)
		if want < 0 && ok || want >= 0 && (!ok || int64(got) != want) {
			t.Errorf("%q: %d %v, want %d", name, got, ok, want)
		}
	}
}

// TestContestedNetworksWidenPassesOverTheirEntries: a pass over some
// remote entries of a contested network covers all of them; other
// networks' passes, and passes already covering the network, are left as
// they are. A pass that finds a network contested without covering it asks
// for one that does; one that covers it and finds no conflict clears it.
func TestContestedNetworksWidenPassesOverTheirEntries(t *testing.T) {
	c := &Core{contested: map[uint32]bool{7: true}}
	one := Scope{Remotes: []RemoteKey{{VNI: 7, MAC: "02:00:00:00:00:01"}, {VNI: 8, MAC: "02:00:00:00:00:02"}}}
	if got := c.widenContested(one); !slices.Equal(got.RemoteNets, []uint32{7}) || len(got.Remotes) != 2 {
		t.Errorf("widened: %+v", got)
	}
	for _, s := range []Scope{{All: true}, {Remotes: []RemoteKey{{VNI: 8, MAC: "02:00:00:00:00:02"}}}, {Endpoints: []string{"e1"}}} {
		if got := c.widenContested(s); !reflect.DeepEqual(got, s) {
			t.Errorf("%+v widened to %+v", s, got)
		}
	}
	web, db := webNet(), Network{NetworkSpec: NetworkSpec{Tenant: "acme", Name: "db", VNI: 8, Subnet: netip.MustParsePrefix("10.2.0.0/24")}}
	web.VNI = 7
	v := view{nets: []Network{web, db}}
	clash := []conflict{{remote: Remote{ID: "r2", Network: "acme/db"}}}
	if again := c.noteContested(Scope{Remotes: one.Remotes[1:]}, v, clash, 0); !slices.Equal(again, []uint32{8}) || !c.contested[8] {
		t.Errorf("newly contested, not covered: again %v, contested %v", again, c.contested)
	}
	if again := c.noteContested(Scope{RemoteNets: []uint32{7, 8}}, v, clash, 0); len(again) != 0 || c.contested[7] || !c.contested[8] {
		t.Errorf("covered: again %v, contested %v", again, c.contested)
	}
	// A covering pass that finds a network newly contested after a local
	// endpoint went since its read asks for another: the removal's own
	// pass, which saw the network not contested, covered only the
	// endpoint, and an entry this pass left out for claiming what that
	// endpoint held belongs in the kernel now. Once contested, a removal's
	// pass covers the network itself (claimsOnLocked).
	delete(c.contested, 8)
	c.eps = map[string]*Endpoint{"gone": {EndpointSpec: EndpointSpec{ID: "gone", Network: "acme/db"}}}
	read := c.removed
	c.delEpLocked("gone")
	if again := c.noteContested(Scope{Networks: []uint32{8}}, v, clash, read); !slices.Equal(again, []uint32{8}) || !c.contested[8] {
		t.Errorf("newly contested, covered, a local endpoint gone since the read: again %v, contested %v", again, c.contested)
	}
	if again := c.noteContested(Scope{Networks: []uint32{8}}, v, clash, read); len(again) != 0 {
		t.Errorf("already contested: again %v", again)
	}
	c.nets = map[string]*Network{"acme/db": &db}
	if got := c.claimsOnLocked("acme/db"); !slices.Equal(got, []uint32{8}) {
		t.Errorf("a removal in a contested network covers %v", got)
	}
	if got := c.claimsOnLocked("acme/web"); got != nil {
		t.Errorf("a removal in an unknown network covers %v", got)
	}
}

// TestCopiesFollowEveryChangeOfTheEndpoints: the kept order of endpoints
// (sortedEpsLocked) never serves a copy that differs from the endpoints
// themselves sorted by ID, whatever was added, removed or replaced, through
// putEpLocked and delEpLocked or behind their back.
func TestCopiesFollowEveryChangeOfTheEndpoints(t *testing.T) {
	c := &Core{eps: map[string]*Endpoint{}}
	rng := rand.New(rand.NewPCG(11, 12))
	for step := range 2000 {
		id := fmt.Sprintf("%02d", rng.IntN(40))
		e := &Endpoint{EndpointSpec: EndpointSpec{ID: id, Network: fmt.Sprint("n", step)}}
		switch rng.IntN(6) {
		case 0:
			c.delEpLocked(id)
		case 1: // behind the kept order's back
			delete(c.eps, id)
		case 2: // add, or replace with a new pointer
			c.putEpLocked(e)
		case 3:
			c.eps[id] = e
		case 4: // changed in place
			if e := c.eps[id]; e != nil {
				e.Netns = fmt.Sprint("ns", step)
			}
		}
		var want []Endpoint
		for _, e := range c.eps {
			want = append(want, *e)
		}
		slices.SortFunc(want, byEndpointID)
		got := c.copyEpsLocked(func(string) bool { return true })
		if len(want) == 0 && len(got) == 0 {
			continue
		}
		if !reflect.DeepEqual(want, got) {
			t.Fatalf("step %d: copy %+v, want the endpoints sorted: %+v", step, got, want)
		}
	}
}
