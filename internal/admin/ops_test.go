package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tenet-net/tenet/internal/adminapi"
	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/metrics"
)

// opsLocal is a core that also reports its writer and diagnoses.
type opsLocal struct {
	fakeLocal
	w        core.WriterState
	findings []core.Finding
	err      error
}

func (o opsLocal) Writer() core.WriterState { return o.w }
func (o opsLocal) Diagnose(ctx context.Context) ([]core.Finding, error) {
	return o.findings, o.err
}

// twoTenants: this host has acme/web (two endpoints, one not attached
// yet) and globex/web; h1 has endpoints on both, h2 on acme/web.
func twoTenants(t *testing.T) (*Server, opsLocal) {
	s, cl, _, _ := newServer(t)
	web := core.Network{NetworkSpec: core.NetworkSpec{Tenant: "acme", Name: "web", VNI: 5, Subnet: netip.MustParsePrefix("10.1.0.0/24"),
		Gateway: netip.MustParseAddr("10.1.0.1"), Ref: "d1"}}
	gweb := core.Network{NetworkSpec: core.NetworkSpec{Tenant: "globex", Name: "web", VNI: 6, Subnet: netip.MustParsePrefix("10.1.0.0/24"), MTU: 1400}}
	ep := func(id, network string, last byte, names ...string) core.Endpoint {
		return core.Endpoint{EndpointSpec: core.EndpointSpec{ID: id, Network: network, IP: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, 0, last}), 24),
			MAC: net.HardwareAddr{2, 0, 0, 0, 0, last}, Names: names}, Netns: "/var/run/docker/netns/x"}
	}
	unjoined := ep("e2", "acme/web", 3)
	unjoined.Netns = ""
	local := opsLocal{fakeLocal: fakeLocal{nets: []core.Network{web, gweb},
		eps: []core.Endpoint{ep("e1", "acme/web", 2, "web1", "www"), unjoined, ep("g1", "globex/web", 2, "vault")}}}
	s.Core = local
	s.MaxMTU = func(encrypted bool) (int, error) {
		if encrypted {
			return 1390, nil
		}
		return 1450, nil
	}
	cl.AddHost("h1", netip.MustParseAddr("198.51.100.11"))
	cl.AddHost("h2", netip.MustParseAddr("198.51.100.12"))
	for i, r := range []struct{ id, network, host string }{{"r1", "acme/web", "h1"}, {"r2", "acme/web", "h1"}, {"r3", "acme/web", "h2"}, {"r4", "globex/web", "h1"}} {
		rem := core.Remote{ID: r.id, Network: r.network, Host: r.host, VTEP: netip.MustParseAddr("198.51.100.11"),
			IP: netip.AddrFrom4([4]byte{10, 1, 0, byte(64 + i)}), MAC: net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}}
		if r.id == "r1" {
			rem.Names = []string{"api", "api-v2"}
		}
		cl.AddRemote(rem)
		cl.AddPeer(r.network, core.Peer{Host: r.host, VTEP: rem.VTEP})
	}
	return s, local
}

func TestEndpointsAreFilteredAndNamed(t *testing.T) {
	s, _ := twoTenants(t)
	h := s.Handler()
	list := func(query string) []adminapi.Endpoint {
		t.Helper()
		status, body := call(t, h, "GET", "/v1/endpoints"+query, "")
		if status != 200 {
			t.Fatalf("%s: %d %s", query, status, body)
		}
		var eps []adminapi.Endpoint
		if err := json.Unmarshal([]byte(body), &eps); err != nil {
			t.Fatal(err)
		}
		return eps
	}
	ids := func(eps []adminapi.Endpoint) []string {
		var out []string
		for _, e := range eps {
			out = append(out, e.ID)
		}
		slices.Sort(out)
		return out
	}
	all := list("")
	if got := ids(all); !slices.Equal(got, []string{"e1", "e2", "g1", "r1", "r2", "r3", "r4"}) {
		t.Errorf("all endpoints: %v", got)
	}
	for _, e := range all {
		switch e.ID {
		case "e1":
			if e.Name != "web1" || !slices.Equal(e.Aliases, []string{"www"}) || e.State != "up" || e.Host != "h0" || e.Tenant != "acme" {
				t.Errorf("e1: %+v", e)
			}
		case "e2":
			if e.State != "created" || e.Name != "" {
				t.Errorf("e2 (not attached): %+v", e)
			}
		case "r1":
			if e.Name != "api" || !slices.Equal(e.Aliases, []string{"api-v2"}) {
				t.Errorf("r1 (names from gossip): %+v", e)
			}
		}
	}
	for query, want := range map[string][]string{
		"?tenant=globex":                  {"g1", "r4"},
		"?network=acme/web":               {"e1", "e2", "r1", "r2", "r3"},
		"?network=web&host=h1":            {"r1", "r2", "r4"},
		"?tenant=acme&host=h2":            {"r3"},
		"?tenant=acme&network=globex/web": nil,
		"?host=h9":                        nil,
	} {
		if got := ids(list(query)); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", query, got, want)
		}
	}
	for query, want := range map[string]string{
		"?tenant=Acme":   `tenant \"Acme\"`,
		"?network=a/b/c": "network",
		"?network=Bad!":  "network",
		"?color=red":     `unknown filter \"color\"`,
	} {
		if status, body := call(t, h, "GET", "/v1/endpoints"+query, ""); status != 400 || !strings.Contains(body, want) {
			t.Errorf("%s: %d %s, want 400 with %q", query, status, body, want)
		}
	}
	if p := (adminapi.EndpointFilter{Tenant: "acme", Network: "acme/web"}).Path(); p != "/v1/endpoints?network=acme%2Fweb&tenant=acme" {
		t.Errorf("filter path %s", p)
	}
}

func TestNetworkInspectShowsHostsAndTheirEndpoints(t *testing.T) {
	s, _ := twoTenants(t)
	h := s.Handler()
	var d adminapi.NetworkDetail
	status, body := call(t, h, "GET", "/v1/networks/acme/web", "")
	if status != 200 || json.Unmarshal([]byte(body), &d) != nil {
		t.Fatalf("%d %s", status, body)
	}
	want := []adminapi.NetworkHost{{Host: "h0", State: "up", Self: true, Endpoints: 2}, {Host: "h1", State: "up", Endpoints: 2}, {Host: "h2", State: "up", Endpoints: 1}}
	if !slices.Equal(d.HostEndpoints, want) || !d.EndpointsKnown || d.Gateway != "10.1.0.1" || d.VNI != 5 || d.EffectiveMTU != 1450 {
		t.Errorf("acme/web: %s", body)
	}
	call(t, h, "GET", "/v1/networks/globex/web", "")
	if _, body := call(t, h, "GET", "/v1/networks/globex/web", ""); !strings.Contains(body, `"effective_mtu":1400`) {
		t.Errorf("globex/web keeps its own MTU: %s", body)
	}
	// An encrypted network's default MTU leaves room for WireGuard.
	local := s.Core.(opsLocal)
	local.nets = append(slices.Clone(local.nets), core.Network{NetworkSpec: core.NetworkSpec{Tenant: "acme", Name: "vault", VNI: 7,
		Subnet: netip.MustParsePrefix("10.7.0.0/24"), Encrypted: true}})
	s.Core = local
	if _, body := call(t, h, "GET", "/v1/networks/acme/vault", ""); !strings.Contains(body, `"effective_mtu":1390`) {
		t.Errorf("acme/vault, encrypted: %s", body)
	}
	if status, body := call(t, h, "GET", "/v1/networks/acme/nope", ""); status != 404 || !strings.Contains(body, "no such network") {
		t.Errorf("unknown network: %d %s", status, body)
	}
}

func TestStatusShowsRingConvergenceAndWriter(t *testing.T) {
	s, local := twoTenants(t)
	s.Gossip = func() metrics.GossipStats {
		return metrics.GossipStats{Members: map[string]int{"alive": 3, "down": 0}, Sent: 10, Received: 12, Dropped: map[string]uint64{"ownership": 1}}
	}
	s.Convergence = func() metrics.Summary {
		return metrics.Summary{Count: 40, Span: time.Minute, P50: 2 * time.Millisecond, P99: 1500 * time.Microsecond * 10, Max: 20 * time.Millisecond}
	}
	local.w = core.WriterState{Queued: 1, LastErr: errors.New("netlink: boom"), RetryAt: time.Now().Add(time.Second)}
	s.Core = local
	st := s.Status()
	if st.Ring.Health != "ok" || st.Ring.Sent != 10 || st.Ring.Dropped["ownership"] != 1 || st.Ring.Members["alive"] != 3 {
		t.Errorf("ring: %+v", st.Ring)
	}
	if st.Convergence.Samples != 40 || st.Convergence.P99Ms != 15 || st.Convergence.Window != "1m0s" {
		t.Errorf("convergence: %+v", st.Convergence)
	}
	if st.Datapath.LastError != "netlink: boom" || st.Datapath.RetryAt == "" || st.Datapath.Queued != 1 {
		t.Errorf("datapath: %+v", st.Datapath)
	}
	if !slices.ContainsFunc(st.Warnings, func(w string) bool { return strings.Contains(w, "writer is failing") }) {
		t.Errorf("no warning about the writer: %v", st.Warnings)
	}
	cl := s.Cluster.(interface{ HostDown(string, time.Time) })
	cl.HostDown("h1", time.Now())
	if st := s.Status(); st.Ring.Health != "degraded" {
		t.Errorf("one host down: %+v", st.Ring)
	}
	cl.HostDown("h2", time.Now())
	if st := s.Status(); st.Ring.Health != "isolated" {
		t.Errorf("all other hosts down: %+v", st.Ring)
	}
}

func TestDiagnoseAnswersTheCoresFindings(t *testing.T) {
	s, local := twoTenants(t)
	h := s.Handler()
	var d adminapi.Diagnosis
	if status, body := call(t, h, "GET", "/v1/diagnose", ""); status != 200 || json.Unmarshal([]byte(body), &d) != nil || d.Host != "h0" || len(d.Findings) != 0 {
		t.Errorf("healthy: %d %s", status, body)
	}
	local.findings = []core.Finding{{Area: core.AreaKernel, Problem: "missing", Object: "fdb 02:...", Network: "acme/web", Endpoint: "r1", Host: "h1", Fix: "fdb append"}}
	s.Core = local
	_, body := call(t, h, "GET", "/v1/diagnose", "")
	d = adminapi.Diagnosis{}
	if json.Unmarshal([]byte(body), &d) != nil || len(d.Findings) != 1 || d.Findings[0] != (adminapi.Finding{Area: "kernel", Problem: "missing",
		Object: "fdb 02:...", Network: "acme/web", Endpoint: "r1", Host: "h1", Fix: "fdb append"}) {
		t.Errorf("findings: %s", body)
	}
	local.err = errors.New("diagnose the datapath: netlink: boom")
	s.Core = local
	if status, body := call(t, h, "GET", "/v1/diagnose", ""); status != 500 || !strings.Contains(body, "boom") {
		t.Errorf("a failed diagnosis: %d %s", status, body)
	}
	s.Core = fakeLocal{}
	if status, body := call(t, h, "GET", "/v1/diagnose", ""); status != 500 || !strings.Contains(body, "cannot diagnose") {
		t.Errorf("no diagnoser: %d %s", status, body)
	}
}
