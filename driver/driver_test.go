package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/core/coretest"
	"github.com/tenet-net/tenet/internal/registry"
	"github.com/tenet-net/tenet/ipam"
	"github.com/tenet-net/tenet/ipam/ipamtest"
	"github.com/tenet-net/tenet/overlay"
)

// fakeTenants says which tenants are defined.
type fakeTenants map[string]bool

func (f fakeTenants) TenantDefined(t string) (bool, bool) { return f[t], len(f) > 0 }

type harness struct {
	dp   *coretest.Datapath
	cl   *coretest.Cluster
	c    *core.Core
	d    *Driver
	post func(path, body string) (int, string)
}

// serve starts the front end over a real core (fake datapath and cluster)
// and a real IPAM (fake replica) on a unix socket, and returns a client
// that posts raw bodies to it.
func serve(t *testing.T, tenants Tenants) *harness {
	t.Helper()
	return serveOpts(t, tenants, nil)
}

func serveWithLog(t *testing.T, w io.Writer) *harness {
	t.Helper()
	return serveOpts(t, nil, w)
}

func serveOpts(t *testing.T, tenants Tenants, logTo io.Writer) *harness {
	t.Helper()
	dp, cl := &coretest.Datapath{MTU: 1450}, coretest.NewCluster("h0")
	ccfg := core.DefaultConfig()
	ccfg.Host, ccfg.VTEP, ccfg.StateDir = "h0", netip.MustParseAddr("198.51.100.10"), t.TempDir()
	c, err := core.New(ccfg, dp, cl)
	if err != nil {
		t.Fatal(err)
	}
	icfg := ipam.DefaultConfig()
	icfg.Host, icfg.Seeds = "h0", []string{"h0"}
	m, err := ipam.New(icfg, ipamtest.NewCluster(0, 1).Node("h0"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Host = "h0"
	if logTo != nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logTo, nil))
	}
	d, err := New(cfg, c, m, tenants)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "tenet.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 3)
	go func() { done <- m.Run(ctx) }()
	go func() { done <- c.Run(ctx) }()
	go func() { done <- d.Serve(ctx, sock) }()
	t.Cleanup(func() {
		cancel()
		for range 3 {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	})
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", sock)
	}}, Timeout: 10 * time.Second}
	post := func(path, body string) (int, string) {
		t.Helper()
		var resp *http.Response
		var err error // its own: calls run concurrently
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
	return &harness{dp: dp, cl: cl, c: c, d: d, post: post}
}

// The calls Docker makes for docker network create -d tenet --ipam-driver
// tenet --ipam-opt tenant=acme -o tenant=acme -o network=web --subnet
// 10.1.0.0/24.
const (
	poolWeb   = `{"AddressSpace":"tenet-local","Pool":"10.1.0.0/24","Options":{"tenant":"acme"}}`
	gwWeb     = `{"PoolID":"acme/10.1.0.0/24","Options":{"RequestAddressType":"com.docker.network.gateway"}}`
	createWeb = `{"NetworkID":"n1","Options":{"com.docker.network.generic":{"tenant":"acme","network":"web"}},
	"IPv4Data":[{"AddressSpace":"tenet-local","Pool":"10.1.0.0/24","Gateway":"10.1.0.1/24"}]}`
)

func (h *harness) createWeb(t *testing.T) {
	t.Helper()
	for _, c := range [][2]string{{"/IpamDriver.RequestPool", poolWeb}, {"/IpamDriver.RequestAddress", gwWeb},
		{"/NetworkDriver.CreateNetwork", createWeb}} {
		if status, body := h.post(c[0], c[1]); status != 200 {
			t.Fatalf("%s: %d %s", c[0], status, body)
		}
	}
}

func TestPluginAnswersEveryCallOrSaysWhatIsWrong(t *testing.T) {
	h := serve(t, nil)
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
		{"docker's own ipam", "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1","Options":{"com.docker.network.generic":{"tenant":"acme","network":"web"}},"IPv4Data":[{"AddressSpace":"LocalDefault","Pool":"10.1.0.0/24"}]}`, 500,
			`--ipam-driver tenet`},
		{"tenant differs from the pool's", "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1","Options":{"com.docker.network.generic":{"tenant":"globex","network":"web"}},"IPv4Data":[{"AddressSpace":"tenet-local","Pool":"10.7.0.0/24"}]}`, 500,
			`does not match the IPAM pool`},
		{"invalid cidr", "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1","Options":{"com.docker.network.generic":{"tenant":"acme","network":"web"}},"IPv4Data":[{"AddressSpace":"tenet-local","Pool":"10.1.0.300/24"}]}`, 500,
			`pool \"10.1.0.300/24\"`},
		{"bad vni", "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1","Options":{"com.docker.network.generic":{"tenant":"acme","network":"web","vni":"0"}},"IPv4Data":[{"AddressSpace":"tenet-local","Pool":"10.1.0.0/24"}]}`, 500,
			`vni 0`},
		{"bad encrypted", "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1","Options":{"com.docker.network.generic":{"tenant":"acme","network":"web","encrypted":"maybe"}},"IPv4Data":[{"AddressSpace":"tenet-local","Pool":"10.1.0.0/24"}]}`, 500,
			`option encrypted \"maybe\": want true or false`},
		{"unknown network", "/NetworkDriver.CreateEndpoint", `{"NetworkID":"nope","EndpointID":"e1","Interface":{"Address":"10.1.0.5/24"}}`, 500,
			"network nope is not a tenet network on this host"},
		{"unknown endpoint join", "/NetworkDriver.Join", `{"NetworkID":"n1","EndpointID":"zz"}`, 500, "not a tenet network"},
		{"unknown call", "/NetworkDriver.Frobnicate", `{}`, 404, "unknown call"},
		{"pool without subnet", "/IpamDriver.RequestPool", `{"Options":{"tenant":"acme"}}`, 500, "no subnet given"},
		{"pool with bad cidr", "/IpamDriver.RequestPool", `{"Pool":"10.1.0.300/24","Options":{"tenant":"acme"}}`, 500, `subnet \"10.1.0.300/24\": not a CIDR`},
		{"pool on the underlay", "/IpamDriver.RequestPool", `{"Pool":"198.51.100.0/25","Options":{"tenant":"acme"}}`, 500, `underlay address 198.51.100.10 of host h0`},
		{"pool of everything", "/IpamDriver.RequestPool", `{"Pool":"0.0.0.0/0","Options":{"tenant":"acme"}}`, 500, `0.0.0.0/0`},
		{"pool of loopback", "/IpamDriver.RequestPool", `{"Pool":"127.0.0.0/8","Options":{"tenant":"acme"}}`, 500, `loopback`},
		{"ipam capabilities", "/IpamDriver.GetCapabilities", "", 200, `{"RequiresMACAddress":false,"RequiresRequestReplay":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := h.post(tt.path, tt.body)
			if status != tt.wantStatus || !strings.Contains(body, tt.want) {
				t.Errorf("%s %s = %d %s, want %d containing %s", tt.path, tt.body, status, body, tt.wantStatus, tt.want)
			}
		})
	}
	if s, _ := h.dp.Last(); len(s.Networks)+len(s.Endpoints) > 0 {
		t.Errorf("bad requests reached the datapath: %+v", s)
	}
}

func TestNetworkAndEndpointLifecycleThroughThePlugin(t *testing.T) {
	h := serve(t, nil)
	h.createWeb(t)
	if s, _ := h.dp.Last(); len(s.Networks) != 1 || s.Networks[0].Tenant != "acme" {
		t.Fatalf("datapath after CreateNetwork: %+v", s)
	}
	status, body := h.post("/NetworkDriver.CreateEndpoint", `{"NetworkID":"n1","EndpointID":"e1","Interface":{"Address":"10.1.0.5/24"}}`)
	if status != 200 || !strings.Contains(body, `"MacAddress":"02:7e:0a:01:00:05"`) {
		t.Fatalf("create endpoint: %d %s", status, body)
	}
	// A MAC the user gave (--mac-address) is kept, and not answered back.
	status, body = h.post("/NetworkDriver.CreateEndpoint", `{"NetworkID":"n1","EndpointID":"e2","Interface":{"Address":"10.1.0.6/24","MacAddress":"02:00:00:00:00:66"}}`)
	if status != 200 || strings.Contains(body, "MacAddress") {
		t.Fatalf("create endpoint with a MAC: %d %s", status, body)
	}
	status, body = h.post("/NetworkDriver.Join", `{"NetworkID":"n1","EndpointID":"e1","SandboxKey":"/x"}`)
	if status != 200 || !strings.Contains(body, `"SrcName":"tc`) || !strings.Contains(body, `"Gateway":"10.1.0.1"`) {
		t.Fatalf("join: %d %s", status, body)
	}
	status, body = h.post("/NetworkDriver.EndpointOperInfo", `{"NetworkID":"n1","EndpointID":"e1"}`)
	if status != 200 || !strings.Contains(body, `"ip":"10.1.0.5/24"`) {
		t.Fatalf("endpoint info: %d %s", status, body)
	}
	for _, id := range []string{"e1", "e2"} {
		if status, _ := h.post("/NetworkDriver.DeleteEndpoint", `{"NetworkID":"n1","EndpointID":"`+id+`"}`); status != 200 {
			t.Fatal("delete endpoint failed")
		}
	}
	if status, _ := h.post("/NetworkDriver.DeleteEndpoint", `{"NetworkID":"n1","EndpointID":"e1"}`); status != 200 {
		t.Fatal("deleting an endpoint twice failed")
	}
	if s, _ := h.dp.Last(); len(s.Endpoints) != 0 {
		t.Errorf("endpoints left in the datapath: %+v", s.Endpoints)
	}
	if status, _ := h.post("/NetworkDriver.DeleteNetwork", `{"NetworkID":"n1"}`); status != 200 {
		t.Error("delete network failed")
	}
	if s, _ := h.dp.Last(); len(s.Networks) != 0 {
		t.Errorf("networks left in the datapath: %+v", s.Networks)
	}
}

func TestUndefinedTenantsAreRefusedWhereTenantsAreDefined(t *testing.T) {
	h := serve(t, fakeTenants{"globex": true})
	status, body := h.post("/IpamDriver.RequestPool", poolWeb)
	if status == 200 || !strings.Contains(body, `tenant \"acme\" is not defined`) {
		t.Fatalf("pool of an undefined tenant: %d %s", status, body)
	}
	status, body = h.post("/NetworkDriver.CreateNetwork", createWeb)
	if status == 200 || !strings.Contains(body, `tenant \"acme\" is not defined`) {
		t.Fatalf("network of an undefined tenant: %d %s", status, body)
	}
}

// A network made while no tenant was defined keeps its pool when Docker
// asks for it again (as it does for every network when the engine
// restarts) after tenants are defined; a new pool of that tenant is
// refused. Found by the fuzzer: the refusal left Docker a network without
// a pool, and docker run --ip on it crashed Docker's API handler.
func TestAnEngineRestartKeepsAPoolMadeBeforeTenantsWereDefined(t *testing.T) {
	tenants := fakeTenants{}
	h := serve(t, tenants)
	if status, body := h.post("/IpamDriver.RequestPool", poolWeb); status != 200 {
		t.Fatalf("pool while no tenant is defined: %d %s", status, body)
	}
	if status, body := h.post("/NetworkDriver.CreateNetwork", createWeb); status != 200 {
		t.Fatalf("network while no tenant is defined: %d %s", status, body)
	}
	tenants["globex"] = true
	status, body := h.post("/IpamDriver.RequestPool", poolWeb)
	if status != 200 || !strings.Contains(body, `"PoolID":"acme/10.1.0.0/24"`) {
		t.Fatalf("the engine's request again for the pool of a network it has: %d %s", status, body)
	}
	status, body = h.post("/IpamDriver.RequestPool", `{"AddressSpace":"tenet-local","Pool":"10.9.0.0/24","Options":{"tenant":"acme"}}`)
	if status == 200 || !strings.Contains(body, `tenant \"acme\" is not defined`) {
		t.Fatalf("a new pool of the undefined tenant: %d %s", status, body)
	}
}

func TestIPAMHandsOutAddressesAndTheGateway(t *testing.T) {
	h := serve(t, nil)
	status, body := h.post("/IpamDriver.RequestPool", `{"AddressSpace":"tenet-global","Pool":"10.1.0.0/24","Options":{"tenant":"acme"}}`)
	if status != 200 || !strings.Contains(body, `"PoolID":"acme/10.1.0.0/24"`) {
		t.Fatalf("request pool: %d %s", status, body)
	}
	// The same subnet for another tenant is another pool; an overlapping
	// one for the same tenant is refused.
	if _, body := h.post("/IpamDriver.RequestPool", `{"Pool":"10.1.0.0/24","Options":{"tenant":"globex"}}`); !strings.Contains(body, `"PoolID":"globex/10.1.0.0/24"`) {
		t.Errorf("same subnet, other tenant: %s", body)
	}
	if status, body := h.post("/IpamDriver.RequestPool", `{"Pool":"10.1.0.0/16","Options":{"tenant":"acme"}}`); status == 200 {
		t.Errorf("overlapping subnet in one tenant accepted: %s", body)
	}
	_, body = h.post("/IpamDriver.RequestAddress", gwWeb)
	if !strings.Contains(body, `"Address":"10.1.0.1/24"`) {
		t.Errorf("gateway: %s", body)
	}
	seen := map[string]bool{}
	for range 5 {
		status, body := h.post("/IpamDriver.RequestAddress", `{"PoolID":"acme/10.1.0.0/24","Options":{"com.docker.network.endpoint.macaddress":"02:00:00:00:00:01"}}`)
		if status != 200 || seen[body] || strings.Contains(body, "10.1.0.1/") {
			t.Fatalf("address %d: %d %s (seen %v)", len(seen), status, body, seen)
		}
		seen[body] = true
	}
	if status, body := h.post("/IpamDriver.RequestAddress", `{"PoolID":"acme/10.1.0.0/24","Address":"10.2.0.5","Options":{"com.docker.network.endpoint.macaddress":"02:00:00:00:00:01"}}`); status == 200 {
		t.Errorf("address outside the pool accepted: %s", body)
	}
}

func TestBadCallsDoNotFloodTheLog(t *testing.T) {
	var log strings.Builder
	var mu sync.Mutex
	h := serveWithLog(t, &lockedWriter{w: &log, mu: &mu})
	for range 1000 {
		h.post("/NetworkDriver.CreateNetwork", `{"NetworkID":`)
		h.post("/NetworkDriver.Nope", `{}`)
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(log.String(), "plugin call failed") + strings.Count(log.String(), "unknown plugin call"); n == 0 || n > 60 {
		t.Errorf("%d log lines for 2,000 bad calls", n)
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// dockerPortMap is the sandbox labels Docker 20.10 sent (captured on the
// testbed) for docker run -p 8080:80 -p 127.0.0.1:9090:90/udp
// -p 7000-7005:70 -p 81 --expose 99 -P.
const dockerPortMap = `"Options":{"com.docker.network.endpoint.exposedports":[{"Proto":6,"Port":99},{"Proto":17,"Port":90},{"Proto":6,"Port":81},{"Proto":6,"Port":80},{"Proto":6,"Port":70}],
"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":99,"HostIP":"","HostPort":0,"HostPortEnd":0},{"Proto":17,"IP":"","Port":90,"HostIP":"127.0.0.1","HostPort":9090,"HostPortEnd":9090},
{"Proto":6,"IP":"","Port":81,"HostIP":"","HostPort":0,"HostPortEnd":0},{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080},
{"Proto":6,"IP":"","Port":70,"HostIP":"","HostPort":7000,"HostPortEnd":7005}]}`

func TestPortsArePublishedAtProgramExternalConnectivityAndRevoked(t *testing.T) {
	h := serve(t, nil)
	h.createWeb(t)
	for _, id := range []string{"e1", "e2"} {
		ip := map[string]string{"e1": "10.1.0.5", "e2": "10.1.0.6"}[id]
		if status, body := h.post("/NetworkDriver.CreateEndpoint", `{"NetworkID":"n1","EndpointID":"`+id+`","Interface":{"Address":"`+ip+`/24"},`+dockerPortMap+`}`); status != 200 {
			t.Fatalf("create endpoint: %d %s", status, body)
		}
	}
	// CreateEndpoint and Join carry the port map too, but only the
	// container's gateway endpoint publishes it.
	if s, _ := h.dp.Last(); len(s.Endpoints[0].Ports)+len(s.Endpoints[1].Ports) != 0 {
		t.Fatalf("ports published at CreateEndpoint: %+v", s.Endpoints)
	}
	status, body := h.post("/NetworkDriver.ProgramExternalConnectivity", `{"NetworkID":"n1","EndpointID":"e1",`+dockerPortMap+`}`)
	if status != 200 {
		t.Fatalf("program: %d %s", status, body)
	}
	want := "[tcp 0.0.0.0:49153 -> 99 udp 127.0.0.1:9090 -> 90 tcp 0.0.0.0:49154 -> 81 tcp 0.0.0.0:8080 -> 80 tcp 0.0.0.0:7000 -> 70]"
	if s, _ := h.dp.Last(); fmt.Sprint(s.Endpoints[0].Ports) != want {
		t.Fatalf("datapath ports %v, want %s", s.Endpoints[0].Ports, want)
	}
	_, body = h.post("/NetworkDriver.EndpointOperInfo", `{"NetworkID":"n1","EndpointID":"e1"}`)
	if !strings.Contains(body, `"com.docker.network.portmap":[{"Proto":6,"IP":"10.1.0.5","Port":99,"HostIP":"","HostPort":49153,"HostPortEnd":49153}`) {
		t.Errorf("endpoint info: %s", body)
	}
	// Another container asking for the same fixed port is refused, naming
	// it and its owner; its ranges and any-ports move on.
	status, body = h.post("/NetworkDriver.ProgramExternalConnectivity", `{"NetworkID":"n1","EndpointID":"e2",`+dockerPortMap+`}`)
	if status != 500 || !strings.Contains(body, "host port 9090/udp is already published by endpoint e1 (network acme/web) on this host") {
		t.Errorf("a taken port: %d %s", status, body)
	}
	for _, bad := range []struct{ body, want string }{
		{`{"NetworkID":"n1","EndpointID":"e2","Options":{"com.docker.network.portmap":[{"Proto":132,"Port":1,"HostPort":1}]}}`, "protocol 132"},
		{`{"NetworkID":"n1","EndpointID":"e2","Options":{"com.docker.network.portmap":[{"Proto":6,"Port":1,"HostIP":"::1","HostPort":1}]}}`, "only IPv4"},
		{`{"NetworkID":"n1","EndpointID":"e2","Options":{"com.docker.network.portmap":{"Proto":6}}}`, "not a list of port bindings"},
		{`{"NetworkID":"nope","EndpointID":"e2","Options":{}}`, "not a tenet network"},
	} {
		if status, body := h.post("/NetworkDriver.ProgramExternalConnectivity", bad.body); status != 500 || !strings.Contains(body, bad.want) {
			t.Errorf("%s: %d %s, want %q", bad.body, status, body, bad.want)
		}
	}
	if status, body := h.post("/NetworkDriver.RevokeExternalConnectivity", `{"NetworkID":"n1","EndpointID":"e1"}`); status != 200 {
		t.Fatalf("revoke: %d %s", status, body)
	}
	if s, _ := h.dp.Last(); len(s.Endpoints[0].Ports) != 0 {
		t.Errorf("ports after revoke: %v", s.Endpoints[0].Ports)
	}
	if status, body := h.post("/NetworkDriver.RevokeExternalConnectivity", `{"NetworkID":"n1","EndpointID":"gone"}`); status != 200 {
		t.Errorf("revoking an endpoint that is gone: %d %s", status, body)
	}
}

// TestJoinRoutesInternalNetworksToTheResolver (issue 14): a container on a
// network without egress gets an on-link route to the name resolver,
// through its first such interface only (Docker fails a second identical
// route); one with egress reaches it through its gateway.
func TestJoinRoutesInternalNetworksToTheResolver(t *testing.T) {
	h := serve(t, nil)
	h.createWeb(t)
	for _, c := range [][2]string{
		{"/IpamDriver.RequestPool", `{"AddressSpace":"tenet-local","Pool":"10.2.0.0/24","Options":{"tenant":"acme"}}`},
		{"/NetworkDriver.CreateNetwork", `{"NetworkID":"n2","Options":{"com.docker.network.internal":true,"com.docker.network.generic":{"tenant":"acme","network":"db"}},
	"IPv4Data":[{"AddressSpace":"tenet-local","Pool":"10.2.0.0/24"}]}`},
		{"/IpamDriver.RequestPool", `{"AddressSpace":"tenet-local","Pool":"10.3.0.0/24","Options":{"tenant":"acme"}}`},
		{"/NetworkDriver.CreateNetwork", `{"NetworkID":"n3","Options":{"com.docker.network.internal":true,"com.docker.network.generic":{"tenant":"acme","network":"cache"}},
	"IPv4Data":[{"AddressSpace":"tenet-local","Pool":"10.3.0.0/24"}]}`},
		{"/NetworkDriver.CreateEndpoint", `{"NetworkID":"n1","EndpointID":"e1","Interface":{"Address":"10.1.0.5/24"}}`},
		{"/NetworkDriver.CreateEndpoint", `{"NetworkID":"n2","EndpointID":"e2","Interface":{"Address":"10.2.0.5/24"}}`},
		{"/NetworkDriver.CreateEndpoint", `{"NetworkID":"n3","EndpointID":"e3","Interface":{"Address":"10.3.0.5/24"}}`},
	} {
		if status, body := h.post(c[0], c[1]); status != 200 {
			t.Fatalf("%s: %d %s", c[0], status, body)
		}
	}
	const route = `"StaticRoutes":[{"Destination":"169.254.53.53/32","RouteType":1}]`
	for _, j := range []struct {
		network, endpoint string
		route             bool
	}{{"n1", "e1", false}, {"n2", "e2", true}, {"n3", "e3", false}} {
		status, body := h.post("/NetworkDriver.Join", `{"NetworkID":"`+j.network+`","EndpointID":"`+j.endpoint+`","SandboxKey":"/x"}`)
		if status != 200 || strings.Contains(body, route) != j.route || strings.Contains(body, "StaticRoutes") != j.route {
			t.Errorf("join %s: %d %s; want a route to the resolver: %v", j.endpoint, status, body, j.route)
		}
	}
}

// TestEncryptedOption: -o encrypted (alone, as Docker's overlay takes it, or
// true/false) reaches the core; where the kernel cannot encrypt, creating
// the network fails with the reason and leaves nothing.
func TestEncryptedOption(t *testing.T) {
	for _, tt := range []struct {
		value string
		want  bool
	}{{"", true}, {"true", true}, {"1", true}, {"false", false}} {
		got, err := ParseEncrypted(tt.value)
		if err != nil || got != tt.want {
			t.Errorf("ParseEncrypted(%q) = %t, %v", tt.value, got, err)
		}
	}
	h := serve(t, nil)
	h.dp.SetNoCrypt(fmt.Errorf("wireguard: %w", overlay.ErrNotSupported))
	create := func(id, opt string) (int, string) {
		h.post("/IpamDriver.RequestPool", poolWeb)
		body := fmt.Sprintf(`{"NetworkID":%q,"Options":{"com.docker.network.generic":{"tenant":"acme","network":"web"%s}},
	"IPv4Data":[{"AddressSpace":"tenet-local","Pool":"10.1.0.0/24","Gateway":"10.1.0.1/24"}]}`, id, opt)
		return h.post("/NetworkDriver.CreateNetwork", body)
	}
	status, body := create("n1", `,"encrypted":""`)
	if status != 500 || !strings.Contains(body, "create network acme/web: encrypted networks need WireGuard") ||
		!strings.Contains(body, "wireguard: not supported by this kernel") {
		t.Errorf("encrypted where the kernel cannot: %d %s", status, body)
	}
	if s, ok := h.dp.Last(); ok && len(s.Networks) > 0 {
		t.Errorf("the refused network reached the datapath: %+v", s.Networks)
	}
	if _, ok := h.c.Network("acme/web"); ok {
		t.Error("the refused network exists")
	}
	// Where it can, the network is encrypted.
	h.dp.SetNoCrypt(nil)
	if status, body := create("n2", `,"encrypted":"true"`); status != 200 {
		t.Fatalf("encrypted network: %d %s", status, body)
	}
	n, ok := h.c.Network("acme/web")
	if !ok || !n.Encrypted {
		t.Errorf("network %+v, %t: want encrypted", n, ok)
	}
}

// TestSyncerRealisesEncryption: a defined encrypted network is created with
// -o encrypted=true, and an engine network whose encryption differs from
// its definition is not current (so it is replaced once empty).
func TestSyncerRealisesEncryption(t *testing.T) {
	d := registry.Definition{Tenant: "acme", Name: "secret", Subnet: "10.3.0.0/24", VNI: 4200, Encrypted: true}
	req := createRequest(d)
	opts, _ := req["Options"].(map[string]string)
	if opts[OptEncrypted] != "true" {
		t.Errorf("create request options %v: want encrypted=true", opts)
	}
	var n EngineNetwork
	if err := json.Unmarshal([]byte(`{"Options":{"tenant":"acme","network":"secret","vni":"4200","encrypted":"true"},
		"IPAM":{"Config":[{"Subnet":"10.3.0.0/24"}]}}`), &n); err != nil {
		t.Fatal(err)
	}
	if !current(n, d) {
		t.Error("an encrypted engine network does not realise its encrypted definition")
	}
	n.Options[OptEncrypted] = "false"
	if current(n, d) {
		t.Error("a clear engine network realises an encrypted definition")
	}
	delete(n.Options, OptEncrypted)
	d.Encrypted = false
	if !current(n, d) {
		t.Error("a clear engine network does not realise its clear definition")
	}
	if _, ok := createRequest(d)["Options"].(map[string]string)[OptEncrypted]; ok {
		t.Error("a clear definition's request names encrypted")
	}
}

// TestAnAddressAGoneContainerLeftIsReclaimed: after a reboot, Docker may
// restart a container with its --ip while the address is still allocated
// here to its earlier endpoint, whose release never came. Such an address
// (allocated before this tenetd started, held by no endpoint) is given
// again; one a container holds, or one this process handed out and
// Docker has yet to release, never is.
func TestAnAddressAGoneContainerLeftIsReclaimed(t *testing.T) {
	h := serve(t, nil)
	h.createWeb(t)
	request := func(ip string) (int, string) {
		return h.post("/IpamDriver.RequestAddress", `{"PoolID":"acme/10.1.0.0/24","Address":"`+ip+`"}`)
	}
	restart := func() { // a new tenetd: what it handed out is forgotten
		h.d.mu.Lock()
		clear(h.d.issued)
		h.d.mu.Unlock()
	}
	for _, ip := range []string{"10.1.0.50", "10.1.0.60"} {
		if status, body := request(ip); status != 200 {
			t.Fatalf("request %s: %d %s", ip, status, body)
		}
	}
	for id, ip := range map[string]string{"e50": "10.1.0.50", "e60": "10.1.0.60"} {
		if status, body := h.post("/NetworkDriver.CreateEndpoint", `{"NetworkID":"n1","EndpointID":"`+id+`","Interface":{"Address":"`+ip+`/24"}}`); status != 200 {
			t.Fatalf("create endpoint %s: %d %s", id, status, body)
		}
	}
	// e50 goes without its release (Docker's release is still to come).
	if status, body := h.post("/NetworkDriver.DeleteEndpoint", `{"NetworkID":"n1","EndpointID":"e50"}`); status != 200 {
		t.Fatalf("delete endpoint: %d %s", status, body)
	}
	if status, body := request("10.1.0.50"); status == 200 || !strings.Contains(body, "already allocated to a container on this host") {
		t.Errorf("an address handed out by this tenetd, not yet released: %d %s", status, body)
	}
	restart()
	if status, body := request("10.1.0.60"); status == 200 || !strings.Contains(body, "already allocated to a container on this host") {
		t.Errorf("an address a container holds, after a restart: %d %s", status, body)
	}
	if status, body := request("10.1.0.50"); status != 200 || !strings.Contains(body, `"Address":"10.1.0.50/24"`) {
		t.Errorf("an address left by a gone container, after a restart: %d %s", status, body)
	}
	// Reclaimed, it is this process's again: not reclaimed twice.
	if status, _ := request("10.1.0.50"); status == 200 {
		t.Error("a reclaimed address was handed out twice")
	}
}

// TestAStrayAddressIsReclaimedOnceUnderConcurrentRequests: two containers
// asking at once for the same stray address: one gets it, the other is
// refused, and the address stays allocated (no second release frees it).
func TestAStrayAddressIsReclaimedOnceUnderConcurrentRequests(t *testing.T) {
	h := serve(t, nil)
	h.createWeb(t)
	for round := range 20 {
		ip := fmt.Sprintf("10.1.0.%d", 100+round)
		body := `{"PoolID":"acme/10.1.0.0/24","Address":"` + ip + `"}`
		if status, out := h.post("/IpamDriver.RequestAddress", body); status != 200 {
			t.Fatalf("request %s: %d %s", ip, status, out)
		}
		h.d.mu.Lock()
		clear(h.d.issued) // a restart: the allocation is now a stray
		h.d.mu.Unlock()
		if round == 0 {
			// The claim itself: the first caller has it, the second not.
			a := netip.MustParseAddr(ip)
			if h.d.claimStray("acme/10.1.0.0/24", a) == 0 || h.d.claimStray("acme/10.1.0.0/24", a) != 0 {
				t.Fatal("a stray address was not claimed exactly once")
			}
			h.d.mu.Lock()
			clear(h.d.issued)
			h.d.mu.Unlock()
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		granted := 0
		for range 2 {
			wg.Go(func() {
				if status, _ := h.post("/IpamDriver.RequestAddress", body); status == 200 {
					mu.Lock()
					granted++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if granted != 1 {
			t.Fatalf("%s: %d of 2 concurrent requests granted, want 1", ip, granted)
		}
		if status, _ := h.post("/IpamDriver.RequestAddress", body); status == 200 {
			t.Fatalf("%s: free again after the reclaim (a second release freed it)", ip)
		}
	}
}

// stealingAddresses is IPAM whose next release, once armed, lets another
// request take the released address before the releaser asks again: the
// window between a stray's release and its reclaiming request.
type stealingAddresses struct {
	Addresses
	steal func()
}

func (s *stealingAddresses) ReleaseAddress(ctx context.Context, poolID string, a netip.Addr) error {
	err := s.Addresses.ReleaseAddress(ctx, poolID, a)
	if f := s.steal; f != nil && err == nil {
		s.steal = nil
		f()
	}
	return err
}

// TestALostReclaimKeepsTheWinnersMark: a request that takes a stray address
// between the reclaimer's release and its request keeps it, and the
// reclaimer, refused, leaves the winner's mark: the address is not a stray
// for a third request (found by CI: the loser unmarked it, so a third
// request released the winner's address and took it).
func TestALostReclaimKeepsTheWinnersMark(t *testing.T) {
	h := serve(t, nil)
	h.createWeb(t)
	const pool, ip = "acme/10.1.0.0/24", "10.1.0.77"
	req := requestAddressRequest{PoolID: pool, Address: ip}
	if _, err := h.d.RequestAddress(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	h.d.mu.Lock()
	clear(h.d.issued) // a restart: the allocation is now a stray
	h.d.mu.Unlock()
	s := &stealingAddresses{Addresses: h.d.ipam}
	var stolen error
	s.steal = func() { _, stolen = h.d.RequestAddress(context.Background(), req) }
	h.d.ipam = s
	if _, err := h.d.RequestAddress(context.Background(), req); !errors.Is(err, ipam.ErrInUse) {
		t.Fatalf("the reclaimer: %v, want refused as in use", err)
	}
	if stolen != nil {
		t.Fatalf("the request in the window: %v, want granted", stolen)
	}
	if _, err := h.d.RequestAddress(context.Background(), req); !errors.Is(err, ipam.ErrInUse) {
		t.Fatalf("a third request: %v, want refused as in use (the winner's address reclaimed)", err)
	}
}
