package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/adminapi"
	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/core/coretest"
	"github.com/tenet-net/tenet/internal/registry"
	"github.com/tenet-net/tenet/overlay"
)

type fakeLocal struct {
	nets []core.Network
	eps  []core.Endpoint
}

func (f fakeLocal) Networks() []core.Network   { return f.nets }
func (f fakeLocal) Endpoints() []core.Endpoint { return f.eps }

type fakeIPAM struct {
	mu      sync.Mutex
	known   []string
	removed []string
	err     error
}

func (f *fakeIPAM) RemoveHost(_ context.Context, names ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.removed = append(f.removed, names...)
	return nil
}

func (f *fakeIPAM) Hosts() ([]string, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.known, f.removed
}

type memKV struct {
	mu sync.Mutex
	m  map[string]gossip.KVEntry
}

func (k *memKV) Put(key string, v []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[key] = gossip.KVEntry{Key: key, Host: "h0", Value: v, Version: k.m[key].Version + 1}
	return nil
}

func (k *memKV) List(prefix string) []gossip.KVEntry {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []gossip.KVEntry
	for _, e := range k.m {
		if strings.HasPrefix(e.Key, prefix) {
			out = append(out, e)
		}
	}
	return out
}

type regCluster struct{ cl *coretest.Cluster }

func (r regCluster) Networks() []gossip.Network { return r.cl.Networks() }
func (r regCluster) Endpoints(network string) []gossip.Endpoint {
	var out []gossip.Endpoint
	for _, x := range r.cl.Remotes(network) {
		out = append(out, gossip.Endpoint{ID: x.ID, Network: x.Network, Host: x.Host})
	}
	return out
}

func newServer(t *testing.T) (*Server, *coretest.Cluster, *fakeIPAM, *strings.Builder) {
	cl := coretest.NewCluster("h0")
	ipam := &fakeIPAM{known: []string{"h0", "h1", "h2"}}
	var log strings.Builder
	s := &Server{Host: "h0", VTEP: "198.51.100.10", HiddenGrace: time.Minute, Core: fakeLocal{}, Cluster: cl,
		Registry: registry.New("h0", &memKV{m: map[string]gossip.KVEntry{}}, regCluster{cl}), IPAM: ipam,
		KeyInUse: func() string { return "abcd1234" }, Logger: slog.New(slog.NewTextHandler(&log, nil))}
	return s, cl, ipam, &log
}

func call(t *testing.T, h http.Handler, method, path, body string) (int, string) {
	t.Helper()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

func TestChangesAnswerWithTheRightStatus(t *testing.T) {
	s, cl, _, _ := newServer(t)
	h := s.Handler()
	for _, tt := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"POST", "/v1/tenants/Acme", "", 400, `tenant \"Acme\"`},
		{"POST", "/v1/tenants/acme", "", 200, `"created":"acme"`},
		{"POST", "/v1/tenants/acme", "", 409, "already exists"},
		{"POST", "/v1/definitions", `{"tenant":"acme","name":"web","subnet":"10.1.0.0/24"}`, 200, `"created":"acme/web"`},
		{"POST", "/v1/definitions", `{"tenant":"acme","name":"web","subnet":"10.1.0.0/24"}`, 409, "already exists"},
		{"POST", "/v1/definitions", `{"tenant":"acme","name":"db","subnet":"0.0.0.0/0"}`, 400, "0.0.0.0/0"},
		{"POST", "/v1/definitions", `{"tenant":"acme","name":"db","subnet":`, 400, "malformed request"},
		{"POST", "/v1/definitions", `{"tenant":"acme","name":"db","subnet":"10.2.0.0/24","color":"red"}`, 400, "unknown field"},
		{"POST", "/v1/definitions", `{"tenant":"nobody","name":"db","subnet":"10.2.0.0/24"}`, 404, "no tenant"},
		{"DELETE", "/v1/definitions/acme/nope", "", 404, "no such network"},
		{"DELETE", "/v1/tenants/acme", "", 409, "still has network acme/web"},
		{"GET", "/metrics", "", 404, "unknown admin call"},
	} {
		status, body := call(t, h, tt.method, tt.path, tt.body)
		if status != tt.status || !strings.Contains(body, tt.want) {
			t.Errorf("%s %s %s = %d %s; want %d with %q", tt.method, tt.path, tt.body, status, body, tt.status, tt.want)
		}
	}
	cl.AddNetwork(gossip.Network{ID: "globex/vault", Tenant: "globex", Name: "vault", VNI: 9, Subnet: netip.MustParsePrefix("10.3.0.0/24"), Host: "h2"})
	call(t, h, "POST", "/v1/tenants/globex", "")
	if status, body := call(t, h, "DELETE", "/v1/tenants/globex", ""); status != 409 || !strings.Contains(body, "host h2 still has network globex/vault") {
		t.Errorf("tenant rm with a hand-made network: %d %s", status, body)
	}
	var defs []adminapi.Definition
	_, body := call(t, h, "GET", "/v1/definitions", "")
	if err := json.Unmarshal([]byte(body), &defs); err != nil || len(defs) != 1 || defs[0].DockerName == "" {
		t.Errorf("definitions: %s", body)
	}
}

func TestRemovedAndUnknownHosts(t *testing.T) {
	s, cl, ipam, _ := newServer(t)
	h := s.Handler()
	cl.AddHost("h1", netip.MustParseAddr("198.51.100.11"))
	cl.AddHost("h2", netip.MustParseAddr("198.51.100.12"))
	cl.HostDown("h2", time.Now())
	if status, body := call(t, h, "POST", "/v1/hosts/h9/remove", ""); status != 404 || !strings.Contains(body, "no such host") {
		t.Errorf("removing a host never known: %d %s", status, body)
	}
	if status, body := call(t, h, "POST", "/v1/hosts/h0/remove", ""); status != 409 || !strings.Contains(body, "this host") {
		t.Errorf("removing this host: %d %s", status, body)
	}
	ipam.err = errors.New("host h1 is alive")
	if status, body := call(t, h, "POST", "/v1/hosts/h1/remove", ""); status != 409 || !strings.Contains(body, "alive") {
		t.Errorf("removing a live host: %d %s", status, body)
	}
	ipam.err = nil
	var st adminapi.Status
	_, body := call(t, h, "GET", "/v1/status", "")
	json.Unmarshal([]byte(body), &st)
	if st.HostsDown != 1 || len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "host h2 is down") {
		t.Fatalf("status before removal: %s", body)
	}
	if status, body := call(t, h, "POST", "/v1/hosts/h2/remove", ""); status != 200 {
		t.Fatalf("remove h2: %d %s", status, body)
	}
	_, body = call(t, h, "GET", "/v1/hosts", "")
	if strings.Contains(body, `"h2"`) || !strings.Contains(body, `"h1"`) {
		t.Errorf("host ls after removal: %s", body)
	}
	_, body = call(t, h, "GET", "/v1/status", "")
	st = adminapi.Status{}
	json.Unmarshal([]byte(body), &st)
	if st.HostsDown != 0 || len(st.Warnings) != 0 || st.HostsUp != 2 {
		t.Errorf("status after removal: %s", body)
	}
	if status, _ := call(t, h, "POST", "/v1/hosts/h2/remove", ""); status != 200 {
		t.Error("removing again is not safe to repeat")
	}
}

func TestEndpointsOfDownHostsShowUntilTheirGraceEnds(t *testing.T) {
	s, cl, _, _ := newServer(t)
	web := core.Network{NetworkSpec: core.NetworkSpec{Tenant: "acme", Name: "web", VNI: 5, Subnet: netip.MustParsePrefix("10.1.0.0/24")}}
	s.Core = fakeLocal{nets: []core.Network{web}, eps: []core.Endpoint{{EndpointSpec: core.EndpointSpec{ID: "e0", Network: "acme/web",
		IP: netip.MustParsePrefix("10.1.0.2/24"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}, Netns: "/var/run/docker/netns/x",
		Ports: []core.PortBinding{{Proto: overlay.TCP, HostPort: 8080, Port: 80}, {Proto: overlay.UDP, HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 53, Port: 53}}}}}
	for i, host := range []string{"h1", "h2"} {
		cl.AddRemote(core.Remote{ID: "r" + host, Network: "acme/web", Host: host, VTEP: netip.AddrFrom4([4]byte{198, 51, 100, byte(11 + i)}),
			IP: netip.AddrFrom4([4]byte{10, 1, 0, byte(64 + i)}), MAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(64 + i)}})
	}
	cl.HostDown("h1", time.Now())
	cl.HostDown("h2", time.Now().Add(-time.Hour))
	var eps []adminapi.Endpoint
	_, body := call(t, s.Handler(), "GET", "/v1/endpoints", "")
	if err := json.Unmarshal([]byte(body), &eps); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range eps {
		got[e.ID] = e.State
	}
	if got["e0"] != "up" || got["rh1"] != "host-down" || len(got) != 2 {
		t.Errorf("endpoints: %v", got)
	}
	// Published ports as docker ps would show them (Docker shows none).
	for _, e := range eps {
		if want := map[string]string{"e0": "[0.0.0.0:8080->80/tcp 127.0.0.1:53->53/udp]", "rh1": "[]"}[e.ID]; fmt.Sprint(e.Ports) != want {
			t.Errorf("endpoint %s: ports %v, want %s", e.ID, e.Ports, want)
		}
	}
}

func TestBadRequestsDoNotFloodTheLog(t *testing.T) {
	s, _, _, log := newServer(t)
	h := s.Handler()
	for range 2000 {
		call(t, h, "GET", "/nope", "")
		call(t, h, "POST", "/v1/tenants/Bad!", "")
	}
	if n := strings.Count(log.String(), "\n"); n > 40 {
		t.Errorf("%d log lines for 4,000 bad requests", n)
	}
}

func TestServeOnASocket(t *testing.T) {
	s, _, _, _ := newServer(t)
	sock := t.TempDir() + "/admin.sock"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, sock) }()
	defer func() { cancel(); <-done }()
	c := adminapi.Client{Socket: sock}
	var st adminapi.Status
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if st, err = c.Status(context.Background()); err == nil {
			break
		}
	}
	if err != nil || st.Host != "h0" || st.KeyInUse != "abcd1234" {
		t.Fatalf("status over the socket: %+v %v", st, err)
	}
	_, err = c.CreateTenant(context.Background(), "Bad!")
	var ae *adminapi.Error
	if !errors.As(err, &ae) || ae.Status != 400 {
		t.Fatalf("refusal over the socket: %v", err)
	}
}
