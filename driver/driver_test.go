package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/ipam"
	"github.com/tenet-net/tenet/ipam/ipamtest"
	"github.com/tenet-net/tenet/overlay/overlaytest"
)

// fakeCluster is an in-memory Cluster: one host's view with no peers
// unless a test adds their entries through events.
type fakeCluster struct {
	mu       sync.Mutex
	networks map[string]gossip.Network
	eps      map[string]gossip.Endpoint
	events   chan gossip.Event
}

func newFakeCluster() *fakeCluster {
	return &fakeCluster{networks: map[string]gossip.Network{}, eps: map[string]gossip.Endpoint{}, events: make(chan gossip.Event, 100)}
}

func (f *fakeCluster) PutNetwork(n gossip.Network) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n.Host = "h0"
	f.networks[n.ID] = n
	return nil
}
func (f *fakeCluster) DeleteNetwork(key string) { f.mu.Lock(); delete(f.networks, key); f.mu.Unlock() }
func (f *fakeCluster) Network(key string) (gossip.Network, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.networks[key]
	return n, ok
}
func (f *fakeCluster) Networks() []gossip.Network {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []gossip.Network
	for _, n := range f.networks {
		out = append(out, n)
	}
	return out
}
func (f *fakeCluster) PutEndpoint(e gossip.Endpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.eps[e.ID] = e
	return nil
}
func (f *fakeCluster) DeleteEndpoint(id string) { f.mu.Lock(); delete(f.eps, id); f.mu.Unlock() }
func (f *fakeCluster) Attach(string) error      { return nil }
func (f *fakeCluster) Detach(string)            {}
func (f *fakeCluster) Members() []gossip.Member {
	return []gossip.Member{{Name: "h0", VTEP: netip.MustParseAddr("198.51.100.10")}}
}
func (f *fakeCluster) Subscribe(int) (<-chan gossip.Event, func()) { return f.events, func() {} }

// serve starts a driver with a fake datapath and cluster on a unix socket
// and returns a client that posts raw bodies to it.
func serve(t *testing.T) (*Driver, *overlaytest.Recorder, *fakeCluster, func(path, body string) (int, string)) {
	t.Helper()
	rec, cl := &overlaytest.Recorder{}, newFakeCluster()
	cfg := DefaultConfig()
	cfg.Host, cfg.VTEP, cfg.StateDir = "h0", netip.MustParseAddr("198.51.100.10"), t.TempDir()
	icfg := ipam.DefaultConfig()
	icfg.Host, icfg.Seeds = "h0", []string{"h0"}
	m, err := ipam.New(icfg, ipamtest.NewCluster(0, 1).Node("h0"))
	if err != nil {
		t.Fatal(err)
	}
	ictx, icancel := context.WithCancel(context.Background())
	t.Cleanup(icancel)
	go func() { _ = m.Run(ictx) }()
	d, err := New(cfg, rec, cl, m)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "tenet.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, sock) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", sock)
	}}, Timeout: 10 * time.Second}
	post := func(path, body string) (int, string) {
		t.Helper()
		var resp *http.Response
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, err = client.Post("http://plugin"+path, "application/json", bytes.NewBufferString(body))
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond) // the socket is being created
		}
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	return d, rec, cl, post
}

const createWeb = `{"NetworkID":"n1","Options":{"com.docker.network.generic":{"tenant":"acme","network":"web"}},
	"IPv4Data":[{"AddressSpace":"tenet","Pool":"10.1.0.0/24","Gateway":"10.1.0.1/24"}]}`

func TestPluginAnswersEveryCallOrSaysWhatIsWrong(t *testing.T) {
	_, rec, _, post := serve(t)
	tests := []struct {
		name, path, body string
		wantStatus       int
		want             string
	}{
		{"activate", "/Plugin.Activate", "", 200, `"Implements":["NetworkDriver","IpamDriver"]`},
		{"capabilities", "/NetworkDriver.GetCapabilities", "", 200, `"Scope":"local","ConnectivityScope":"global"`},
		{"bad json", "/NetworkDriver.CreateNetwork", `{"NetworkID":`, 500, "CreateNetwork: malformed request"},
		{"wrong type", "/NetworkDriver.CreateNetwork", `{"NetworkID":7}`, 500, "malformed request"},
		{"missing options", "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1","IPv4Data":[{"Pool":"10.1.0.0/24"}]}`, 500,
			`options \"tenant\" and \"network\" are required`},
		{"bad tenant", "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1","Options":{"com.docker.network.generic":{"tenant":"Ac/me","network":"web"}},"IPv4Data":[{"Pool":"10.1.0.0/24"}]}`, 500,
			`option tenant \"Ac/me\"`},
		{"invalid cidr", "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1","Options":{"com.docker.network.generic":{"tenant":"acme","network":"web"}},"IPv4Data":[{"Pool":"10.1.0.300/24"}]}`, 500,
			`pool \"10.1.0.300/24\": must be an IPv4 network`},
		{"bad vni", "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1","Options":{"com.docker.network.generic":{"tenant":"acme","network":"web","vni":"0"}},"IPv4Data":[{"Pool":"10.1.0.0/24"}]}`, 500,
			`option vni \"0\"`},
		{"unknown network", "/NetworkDriver.CreateEndpoint", `{"NetworkID":"nope","EndpointID":"e1","Interface":{"Address":"10.1.0.5/24"}}`, 500,
			"network nope is not a tenet network on this host"},
		{"unknown endpoint join", "/NetworkDriver.Join", `{"NetworkID":"n1","EndpointID":"zz"}`, 500, "no such endpoint"},
		{"unknown call", "/NetworkDriver.Frobnicate", `{}`, 404, "unknown call"},
		{"pool without subnet", "/IpamDriver.RequestPool", `{"Options":{"tenant":"acme"}}`, 500, "no subnet given"},
		{"pool with bad cidr", "/IpamDriver.RequestPool", `{"Pool":"10.1.0.300/24","Options":{"tenant":"acme"}}`, 500, `subnet \"10.1.0.300/24\": not a CIDR`},
		{"ipam capabilities", "/IpamDriver.GetCapabilities", "", 200, `"RequiresRequestReplay":true`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := post(tt.path, tt.body)
			if status != tt.wantStatus || !strings.Contains(body, tt.want) {
				t.Errorf("%s %s = %d %s, want %d containing %s", tt.path, tt.body, status, body, tt.wantStatus, tt.want)
			}
		})
	}
	if _, ok := rec.Last(); ok {
		t.Error("bad requests reached the datapath")
	}
}

func TestNetworkAndEndpointLifecycleProgramsTheDatapath(t *testing.T) {
	d, rec, cl, post := serve(t)
	if status, body := post("/NetworkDriver.CreateNetwork", createWeb); status != 200 {
		t.Fatalf("create network: %d %s", status, body)
	}
	s, _ := rec.Last()
	if len(s.Networks) != 1 || s.Networks[0].Tenant != "acme" || s.Networks[0].VNI != deriveVNI("acme/web") {
		t.Fatalf("datapath state after CreateNetwork: %+v", s)
	}
	// The same tenant/name with another subnet is refused, naming both.
	_, body := post("/NetworkDriver.CreateNetwork", strings.ReplaceAll(strings.Replace(createWeb, "n1", "n2", 1), "10.1.0.", "10.2.0."))
	if !strings.Contains(body, "already created on this host") {
		t.Errorf("duplicate network: %s", body)
	}
	// Another host defined acme/db with another subnet: refused, naming it.
	cl.networks["acme/db"] = gossip.Network{ID: "acme/db", Tenant: "acme", Name: "db", VNI: deriveVNI("acme/db"),
		Subnet: netip.MustParsePrefix("10.5.0.0/24"), Host: "h1"}
	_, body = post("/NetworkDriver.CreateNetwork", strings.ReplaceAll(strings.ReplaceAll(strings.Replace(createWeb, "n1", "n3", 1), "10.1.0.", "10.6.0."), `"web"`, `"db"`))
	if !strings.Contains(body, "subnet 10.6.0.0/24 differs from the cluster's 10.5.0.0/24 (defined by host h1)") {
		t.Errorf("conflicting definition: %s", body)
	}
	status, body := post("/NetworkDriver.CreateEndpoint", `{"NetworkID":"n1","EndpointID":"e1","Interface":{"Address":"10.1.0.5/24"}}`)
	if status != 200 || !strings.Contains(body, `"MacAddress":"02:7e:0a:01:00:05"`) {
		t.Fatalf("create endpoint: %d %s", status, body)
	}
	if _, ok := cl.eps["e1"]; !ok {
		t.Error("endpoint not published to the cluster")
	}
	status, body = post("/NetworkDriver.Join", `{"NetworkID":"n1","EndpointID":"e1","SandboxKey":"/x"}`)
	if status != 200 || !strings.Contains(body, `"SrcName":"tc`) || !strings.Contains(body, `"DstPrefix":"eth"`) {
		t.Fatalf("join: %d %s", status, body)
	}
	// A remote endpoint arrives through gossip and is programmed.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(ctx) }()
	cl.events <- gossip.Event{Kind: gossip.EventPut, Table: gossip.TableEndpoints, Key: "r1", Host: "h1", Version: 3,
		Endpoint: &gossip.Endpoint{ID: "r1", Network: "acme/web", MAC: net.HardwareAddr{2, 0x7e, 10, 1, 0, 9},
			IP: netip.MustParseAddr("10.1.0.9"), VTEP: netip.MustParseAddr("198.51.100.11"), Host: "h1"}}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if s, _ := rec.Last(); len(s.Remotes) == 1 && s.Remotes[0].VTEP.String() == "198.51.100.11" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("remote endpoint never programmed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Its address cannot be taken here.
	_, body = post("/NetworkDriver.CreateEndpoint", `{"NetworkID":"n1","EndpointID":"e2","Interface":{"Address":"10.1.0.9/24"}}`)
	if !strings.Contains(body, "already used by endpoint r1 on host h1") {
		t.Errorf("duplicate address: %s", body)
	}
	// A datapath failure leaves no endpoint behind.
	rec.SetFail(errors.New("kernel says no"))
	_, body = post("/NetworkDriver.CreateEndpoint", `{"NetworkID":"n1","EndpointID":"e3","Interface":{"Address":"10.1.0.7/24"}}`)
	if !strings.Contains(body, "kernel says no") {
		t.Errorf("failing datapath: %s", body)
	}
	if status, _ := post("/NetworkDriver.DeleteEndpoint", `{"NetworkID":"n1","EndpointID":"e1"}`); status != 200 {
		t.Error("delete endpoint failed")
	}
	if s, _ := rec.Last(); len(s.Endpoints) != 0 {
		t.Errorf("endpoints left in the datapath: %+v", s.Endpoints)
	}
	if _, ok := cl.eps["e1"]; ok {
		t.Error("endpoint not withdrawn from the cluster")
	}
	if status, _ := post("/NetworkDriver.DeleteNetwork", `{"NetworkID":"n1"}`); status != 200 {
		t.Error("delete network failed")
	}
	if s, _ := rec.Last(); len(s.Networks) != 0 {
		t.Errorf("networks left in the datapath: %+v", s.Networks)
	}
	cancel()
	if err := <-runDone; err != nil {
		t.Error(err)
	}
}

func TestStateSurvivesARestart(t *testing.T) {
	d, rec, cl, post := serve(t)
	post("/NetworkDriver.CreateNetwork", createWeb)
	post("/NetworkDriver.CreateEndpoint", `{"NetworkID":"n1","EndpointID":"e1","Interface":{"Address":"10.1.0.5/24"}}`)
	// Another host's endpoint is known before the restart.
	ctx1, cancel1 := context.WithCancel(context.Background())
	done1 := make(chan error, 1)
	go func() { done1 <- d.Run(ctx1) }()
	cl.events <- gossip.Event{Kind: gossip.EventPut, Table: gossip.TableEndpoints, Key: "r1", Host: "h1", Version: 3,
		Endpoint: &gossip.Endpoint{ID: "r1", Network: "acme/web", MAC: net.HardwareAddr{2, 0x7e, 10, 1, 0, 9},
			IP: netip.MustParseAddr("10.1.0.9"), VTEP: netip.MustParseAddr("198.51.100.11"), Host: "h1"}}
	for deadline := time.Now().Add(5 * time.Second); ; {
		if s, _ := rec.Last(); len(s.Remotes) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("remote endpoint never programmed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel1()
	<-done1 // saves the view on its next tick or has saved it already
	rec2 := &overlaytest.Recorder{}
	d2, err := New(d.cfg, rec2, cl, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = d2.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if s, ok := rec2.Last(); ok {
			b, _ := json.Marshal(s)
			if len(s.Endpoints) != 1 || s.Endpoints[0].ID != "e1" || len(s.Networks) != 1 {
				t.Fatalf("restarted driver reconciled %s", b)
			}
			// Before gossip has said anything, the other host's endpoint
			// stays programmed.
			if len(s.Remotes) != 1 || s.Remotes[0].VTEP.String() != "198.51.100.11" {
				t.Fatalf("restarted driver dropped the remote endpoint: %s", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("restarted driver never reconciled")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEndpointsOfVanishedSandboxesAreCollected(t *testing.T) {
	d, rec, cl, post := serve(t)
	post("/NetworkDriver.CreateNetwork", createWeb)
	sandbox := filepath.Join(t.TempDir(), "netns-abc")
	if err := os.WriteFile(sandbox, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	post("/NetworkDriver.CreateEndpoint", `{"NetworkID":"n1","EndpointID":"e1","Interface":{"Address":"10.1.0.5/24"}}`)
	if status, body := post("/NetworkDriver.Join", `{"NetworkID":"n1","EndpointID":"e1","SandboxKey":"`+sandbox+`"}`); status != 200 {
		t.Fatalf("join: %s", body)
	}
	d.collectGarbage(t.Context())
	if s, _ := rec.Last(); len(s.Endpoints) != 1 {
		t.Fatal("an endpoint whose sandbox exists was collected")
	}
	if err := os.Remove(sandbox); err != nil {
		t.Fatal(err)
	}
	d.collectGarbage(t.Context())
	if s, _ := rec.Last(); len(s.Endpoints) != 0 {
		t.Errorf("endpoint of a vanished sandbox still programmed: %+v", s.Endpoints)
	}
	if _, ok := cl.eps["e1"]; ok {
		t.Error("endpoint of a vanished sandbox still published")
	}
}

func TestIPAMHandsOutAddressesAndTheGateway(t *testing.T) {
	_, _, _, post := serve(t)
	status, body := post("/IpamDriver.RequestPool", `{"AddressSpace":"tenet-global","Pool":"10.1.0.0/24","Options":{"tenant":"acme"}}`)
	if status != 200 || !strings.Contains(body, `"PoolID":"acme/10.1.0.0/24"`) {
		t.Fatalf("request pool: %d %s", status, body)
	}
	// The same subnet for another tenant is another pool; an overlapping
	// one for the same tenant is refused.
	if _, body := post("/IpamDriver.RequestPool", `{"Pool":"10.1.0.0/24","Options":{"tenant":"globex"}}`); !strings.Contains(body, `"PoolID":"globex/10.1.0.0/24"`) {
		t.Errorf("same subnet, other tenant: %s", body)
	}
	if status, body := post("/IpamDriver.RequestPool", `{"Pool":"10.1.0.0/16","Options":{"tenant":"acme"}}`); status == 200 {
		t.Errorf("overlapping subnet in one tenant accepted: %s", body)
	}
	_, body = post("/IpamDriver.RequestAddress", `{"PoolID":"acme/10.1.0.0/24","Options":{"RequestAddressType":"com.docker.network.gateway"}}`)
	if !strings.Contains(body, `"Address":"10.1.0.1/24"`) {
		t.Errorf("gateway: %s", body)
	}
	seen := map[string]bool{}
	for range 5 {
		status, body := post("/IpamDriver.RequestAddress", `{"PoolID":"acme/10.1.0.0/24","Options":{"com.docker.network.endpoint.macaddress":"02:00:00:00:00:01"}}`)
		if status != 200 || seen[body] || strings.Contains(body, "10.1.0.1/") {
			t.Fatalf("address %d: %d %s (seen %v)", len(seen), status, body, seen)
		}
		seen[body] = true
	}
	if status, body := post("/IpamDriver.RequestAddress", `{"PoolID":"acme/10.1.0.0/24","Address":"10.2.0.5","Options":{"com.docker.network.endpoint.macaddress":"02:00:00:00:00:01"}}`); status == 200 {
		t.Errorf("address outside the pool accepted: %s", body)
	}
}

// fakeKV is an in-memory gossip key-value table of several hosts.
type fakeKV struct {
	mu      sync.Mutex
	entries map[string]gossip.KVEntry // key|host
	host    string
}

func (f *fakeKV) Put(key string, value []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.entries[key+"|"+f.host]
	f.entries[key+"|"+f.host] = gossip.KVEntry{Key: key, Host: f.host, Value: value, Version: old.Version + 1}
	return nil
}

func (f *fakeKV) List(prefix string) []gossip.KVEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []gossip.KVEntry
	for _, e := range f.entries {
		if strings.HasPrefix(e.Key, prefix) {
			out = append(out, e)
		}
	}
	return out
}

func TestRegistryValidatesAndIgnoresBadPeerEntries(t *testing.T) {
	d, _, _, _ := serve(t)
	kv := &fakeKV{entries: map[string]gossip.KVEntry{}, host: "h0"}
	d.kv = kv
	if err := d.CreateTenant("Acme!"); err == nil || !strings.Contains(err.Error(), `create tenant "Acme!"`) {
		t.Errorf("bad tenant name: %v", err)
	}
	if err := d.CreateDefinedNetwork(Definition{Tenant: "acme", Name: "web", Subnet: "10.1.0.0/24"}); err == nil || !strings.Contains(err.Error(), "no tenant") {
		t.Errorf("network of an unknown tenant: %v", err)
	}
	if err := d.CreateTenant("acme"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Definition{
		{Tenant: "acme", Name: "web", Subnet: "10.1.0.300/24"},
		{Tenant: "acme", Name: "Web!", Subnet: "10.1.0.0/24"},
		{Tenant: "acme", Name: "web", Subnet: "10.1.0.0/24", MTU: 100},
	} {
		if err := d.CreateDefinedNetwork(bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
	if err := d.CreateDefinedNetwork(Definition{Tenant: "acme", Name: "web", Subnet: "10.1.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	// A peer's invalid entry is ignored, not acted on.
	kv.host = "h9"
	_ = kv.Put("network/acme/evil", []byte(`{"tenant":"acme","name":"evil","subnet":"not-a-cidr","vni":5,"gen":99,"origin":"h9"}`))
	got := d.DefinedNetworks()
	if len(got) != 1 || got[0].Name != "web" {
		t.Errorf("defined networks = %+v, want only acme/web", got)
	}
	if err := d.RemoveTenant("acme"); err == nil || !strings.Contains(err.Error(), "still has network acme/web") {
		t.Errorf("removing a tenant with a network: %v", err)
	}
}
